"""Test helpers: run the PLC simulator in a real subprocess on an ephemeral port."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tandem.sim.plc import LOAD_START

READY_TIMEOUT_S = 15.0


@dataclass(slots=True)
class PlcProcess:
    """A running simulator subprocess and the port it listens on."""

    host: str
    port: int
    load_registers: int
    process: subprocess.Popen[str]

    def stop(self) -> None:
        """Terminate (then kill) the simulator; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The simulator's first stdout line, or an error if it does not come in time."""
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        raise RuntimeError(f"PLC simulator did not report ready within {timeout}s")
    return lines[0].strip()


def wait_accepting(host: str, port: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until a TCP connect to host:port succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_plc(port: int = 0, *, load_registers: int = 1000, host: str = "127.0.0.1") -> PlcProcess:
    """Start ``tandem.sim.plc.main`` in a subprocess; port 0 lets the kernel choose a free one."""
    code = f"from tandem.sim.plc import main; main({host!r}, {port}, {load_registers})"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = _read_ready_line(process, READY_TIMEOUT_S)
        bound = int(line.rsplit(":", 1)[1])
        wait_accepting(host, bound)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    return PlcProcess(host, bound, load_registers, process)


@contextlib.contextmanager
def running_plc(port: int = 0, *, load_registers: int = 1000) -> Iterator[PlcProcess]:
    """A simulator for the ``with`` body, stopped afterwards even if the body fails."""
    plc = start_plc(port, load_registers=load_registers)
    try:
        yield plc
    finally:
        plc.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for 'device unreachable' tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class SimProcess:
    """`tandem simulate-plc ARGS` in a subprocess and what it announced (ports or a device)."""

    announced: list[str]
    process: subprocess.Popen[str]

    @property
    def ports(self) -> list[int]:
        return [int(line.rsplit(":", 1)[1]) for line in self.announced if "listening on" in line]

    def stop(self) -> None:
        PlcProcess("", 0, 0, self.process).stop()


def start_sim(args: list[str], *, lines: int = 1) -> SimProcess:
    """Start the simulator CLI with ``args``; returns once it announced ``lines`` endpoints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem", "simulate-plc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        announced = [_read_ready_line(process, READY_TIMEOUT_S) for _ in range(lines)]
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    return SimProcess(announced, process)


@dataclass(slots=True)
class PtyPair:
    """Two PTYs joined by socat, like the two ends of a serial cable (or an RS-485 bus)."""

    device: str  # the simulator's end
    hub: str  # the poller's end
    process: subprocess.Popen[str]

    def stop(self) -> None:
        PlcProcess("", 0, 0, self.process).stop()


def start_pty_pair(timeout: float = READY_TIMEOUT_S) -> PtyPair:
    """``socat -d -d pty,raw,echo=0 pty,raw,echo=0``; socat names both PTYs in its log."""
    with tempfile.TemporaryFile("w+") as log:  # socat keeps its own descriptor of the file
        process = subprocess.Popen(
            ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                log.seek(0)
                names = re.findall(r"PTY is (\S+)", log.read())
                if len(names) >= 2:
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("socat did not report two PTYs")
                time.sleep(0.02)
        except BaseException:
            process.kill()
            process.wait(timeout=5)
            raise
    return PtyPair(names[0], names[1], process)


def load_device(
    name: str, plc_port: int, tags: int, *, interval: float = 0.1, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """A device config of `tags` uint16 tags r0..r<tags-1> on the simulator's load registers.

    Every one of them changes with every 100 ms tick of the simulator: the worst case for a
    live view, since nothing stays still.
    """
    return {
        "name": name,
        "host": host,
        "port": plc_port,
        "timeout": 1.0,
        "reconnect_max": 0.5,
        "groups": [
            {
                "name": "fast",
                "interval": interval,
                "tags": [{"name": f"r{i}", "address": LOAD_START + i} for i in range(tags)],
            }
        ],
    }
