"""VRRP nodes for interop tests and benchmarks: Tandem or keepalived in a namespace, one notify log.

Both implementations are driven from the same keepalived.conf template and report their
transitions through the same generic `notify` script, which appends
`<wall time> NODE STATE PRIO` to one shared file. Takeover times are then measured the same
way for both: the time the new master's line was written minus the time the test signalled
the old master.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tests.netns.netns import Netns, Node

Implementation = Literal["tandem", "keepalived"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("tandem", "keepalived")

REPO = Path(__file__).resolve().parents[2]
TANDEM = Path(sys.executable).with_name("tandem")
VIP = "10.77.0.100/24"
VRRP_PROTOCOL = 112  # IANA protocol number, RFC 5798 §5.1.1.3
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # asm-generic/socket.h
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux

_TRANSITION = re.compile(r"(\S+): (\w+) -> (\w+) \((\S+?)(?::[^)]*)?\) priority (\d+)")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One VRRP instance as the seed guide writes it; rendered to keepalived.conf for both."""

    name: str
    interface: str
    src: str
    peers: tuple[str, ...]
    priority: int = 100
    state: Literal["MASTER", "BACKUP"] = "MASTER"
    nopreempt: bool = False
    version: int = 2
    advert_int: float = 1.0
    vrid: int = 51
    auth_pass: str | None = "abcdefgh"
    vips: tuple[str, ...] = (VIP,)
    # A weight-0 track script that fails while this file exists (seed scenario a).
    fail_flag: Path | None = None
    track_interval: int = 1
    track_fall: int = 2
    # More vrrp_instance lines, verbatim (track_interface, check_unicast_src, ...).
    extra: tuple[str, ...] = ()

    @property
    def master_down(self) -> float:
        """3 x advert + skew: how long a backup at this priority waits for a silent master."""
        if self.version == 2:
            skew = (256 - self.priority) / 256  # RFC 3768 §6.1
        else:
            skew = (256 - self.priority) * self.advert_int / 256  # RFC 5798 §6.1
        return 3 * self.advert_int + skew

    @property
    def skew(self) -> float:
        return self.master_down - 3 * self.advert_int


def seed_pair(
    a: Node, b: Node, version: int = 2, advert_int: float = 1.0, **master_overrides: Any
) -> tuple[NodeSpec, NodeSpec]:
    """The seed guide's pair on nodes a and b: priority-100 master, priority-90 nopreempt backup."""
    common: dict[str, Any] = {
        "version": version,
        "advert_int": advert_int,
        "auth_pass": "abcdefgh" if version == 2 else None,
    }
    master = NodeSpec(
        name="master",
        interface=a.ifname,
        src=str(a.address.ip),
        peers=(str(b.address.ip),),
        priority=100,
        state="MASTER",
        **common,
    )
    backup = NodeSpec(
        name="backup",
        interface=b.ifname,
        src=str(b.address.ip),
        peers=(str(a.address.ip),),
        priority=90,
        state="BACKUP",
        nopreempt=True,
        **common,
    )
    return replace(master, **master_overrides), backup


def render_conf(spec: NodeSpec, notify: str, check_script: Path | None = None) -> str:
    """keepalived.conf for one node; the same text is fed to Tandem and to keepalived."""
    interval = f"{spec.advert_int:g}"
    lines = [
        "global_defs {",
        "  vrrp_skip_check_adv_addr",
        "  vrrp_garp_interval 0",
        "  vrrp_gna_interval 0",
        "}",
    ]
    if spec.fail_flag is not None:
        assert check_script is not None
        lines += [
            "vrrp_script check_alive {",
            f'  script "{check_script}"',
            f"  interval {spec.track_interval}",
            f"  fall {spec.track_fall}",
            "  weight 0",
            "}",
        ]
    lines += [
        "vrrp_instance VI_1 {",
        f"  state {spec.state}",
        *(["  nopreempt"] if spec.nopreempt else []),
        f"  interface {spec.interface}",
        f"  virtual_router_id {spec.vrid}",
        f"  priority {spec.priority}",
        f"  version {spec.version}",
        f"  advert_int {interval}",
    ]
    if spec.auth_pass is not None:
        lines += ["  authentication {", "    auth_type PASS", f"    auth_pass {spec.auth_pass}"]
        lines += ["  }"]
    lines += ["  virtual_ipaddress {", *(f"    {v}" for v in spec.vips), "  }"]
    lines += [f"  unicast_src_ip {spec.src}", "  unicast_peer {"]
    lines += [f"    {p}" for p in spec.peers]
    lines += ["  }"]
    if spec.fail_flag is not None:
        lines += ["  track_script {", "    check_alive", "  }"]
    lines += [f"  {line}" for line in spec.extra]
    lines += [f'  notify "{notify}"', "}", ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """One line of the shared notify log."""

    time: float
    node: str
    state: str
    priority: int


class NotifyLog:
    """The shared transition record: a notify script appends, the test reads and waits."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "transitions.log"
        self.script = directory / "record.sh"
        self.path.touch()
        # Generic notify appends `INSTANCE name STATE prio` after our NODE argument.
        self.script.write_text(
            f'#!/bin/sh\nprintf \'%s %s %s %s\\n\' "$(date +%s.%N)" "$1" "$4" "$5" >> {self.path}\n'
        )
        self.script.chmod(0o755)

    def command(self, node: str) -> str:
        return f"{self.script} {node}"

    def events(self) -> list[NotifyEvent]:
        found: list[NotifyEvent] = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append(NotifyEvent(float(parts[0]), parts[1], parts[2], int(parts[3])))
        # Scripts run concurrently; order by the time each one wrote.
        return sorted(found, key=lambda e: e.time)

    def of(self, node: str, since: float = 0.0) -> list[NotifyEvent]:
        return [e for e in self.events() if e.node == node and e.time >= since]

    def wait_for(
        self, node: str, state: str, since: float = 0.0, timeout: float = 15.0
    ) -> NotifyEvent:
        """The first `state` line of `node` written at or after `since`; AssertionError if none."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.of(node, since):
                if event.state == state:
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{node} did not report {state} within {timeout} s; log:\n"
                    + self.path.read_text()
                )
            time.sleep(0.02)


@dataclass
class VrrpNode:
    """One VRRP speaker (Tandem or keepalived) running a NodeSpec inside a namespace."""

    impl: Implementation
    ns: Netns
    spec: NodeSpec
    workdir: Path
    notify: NotifyLog
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "keepalived.conf"
        self.stats_file = self.workdir / "stats.json"
        check = None
        if self.spec.fail_flag is not None:
            check = self.workdir / "check_alive.sh"
            check.write_text(f"#!/bin/sh\ntest ! -e {self.spec.fail_flag}\n")
            check.chmod(0o755)
        self.conf.write_text(render_conf(self.spec, self.notify.command(self.spec.name), check))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.impl}-{self.starts}.log"

    def argv(self) -> list[str]:
        if self.impl == "tandem":
            return [
                str(TANDEM), "keepalived", "-f", str(self.conf),
                "--stats-file", str(self.stats_file),
            ]  # fmt: skip
        argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(self.conf)]
        for flag, pid in (("-p", "main"), ("-r", "vrrp"), ("-c", "check")):
            argv += [flag, str(self.workdir / f"{pid}.pid")]
        return argv

    def start(self) -> float:
        """Start the daemon; returns the wall time just before, for `NotifyLog.wait_for`."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        started = time.time()
        with self.log_path.open("wb") as log_file:
            self.process = self.ns.popen(self.argv(), stdout=log_file, stderr=subprocess.STDOUT)
        return started

    def start_and_wait(self, state: str = "BACKUP", timeout: float = 15.0) -> NotifyEvent:
        """Start and wait until the node reports `state` (every start reports BACKUP first)."""
        started = self.start()
        try:
            return self.notify.wait_for(self.name, state, since=started, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.impl} log:\n{self.log_text()}") from None

    def kill(self) -> float:
        """Crash the node (SIGKILL to its process group); returns the wall time of the kill."""
        assert self.process is not None
        when = time.time()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._wait_group_gone(self.process.pid)
        return when

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
        """Wait for the children as well: keepalived refuses to start while its old VRRP
        child's pid is still alive ("daemon is already running")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)

    def terminate(self, wait: float = 10.0) -> float:
        """Orderly stop (SIGTERM to the daemon); returns the wall time of the signal."""
        assert self.process is not None
        when = time.time()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(wait)
        return when

    def stop(self) -> None:
        """Stop whatever still runs; used in teardown, so it never raises."""
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.ns.stop(self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """Tandem's SIGUSR1 snapshot of instance VI_1."""
        assert self.impl == "tandem" and self.process is not None
        with contextlib.suppress(FileNotFoundError):
            self.stats_file.unlink()
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.stats_file.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"no stats file after SIGUSR1; log:\n{self.log_text()}")
            time.sleep(0.02)
        data: dict[str, Any] = json.loads(self.stats_file.read_text())
        return data["VI_1"]  # type: ignore[no-any-return]

    def addresses(self) -> set[str]:
        """IPv4 addresses (with prefix) on the node's VRRP interface right now."""
        out = self.ns.run(["ip", "-4", "-o", "addr", "show", "dev", self.spec.interface]).stdout
        return {line.split()[3] for line in out.splitlines()}

    def has_vips(self) -> bool:
        return set(self.spec.vips) <= self.addresses()

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(self.workdir.glob(f"{self.impl}-*.log"))
        )

    def logged_transitions(self) -> list[tuple[str, str, str, int]]:
        """(old, new, reason, priority) from Tandem's INFO lines, across restarts."""
        assert self.impl == "tandem"
        return [
            (m.group(2), m.group(3), m.group(4), int(m.group(5)))
            for m in _TRANSITION.finditer(self.log_text())
        ]


@contextlib.contextmanager
def running_nodes(nodes: Sequence[VrrpNode]) -> Iterator[Sequence[VrrpNode]]:
    """Stop every node on the way out, even when the body fails."""
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@dataclass(frozen=True, slots=True)
class SniffedAdvert:
    time: float
    src: str
    version: int
    vrid: int
    priority: int


class AdvertSniffer:
    """Records every VRRP packet reaching a namespace (a raw socket sees all of protocol 112)."""

    def __init__(self, ns: Netns) -> None:
        with ns.entered():
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
        # Kernel receive stamps: the reading thread may lag on a loaded host, the packet not.
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.1)
        self.adverts: list[SniffedAdvert] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vrrp-sniffer", daemon=True)

    def __enter__(self) -> AdvertSniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(2048, _TIMESPEC.size * 2)
            except TimeoutError:
                continue
            except OSError:
                return
            stamp = time.time()
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, _SO_TIMESTAMPNS):
                    seconds, nanos = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    stamp = seconds + nanos / 1e9
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 4:
                continue
            vrrp = data[ihl:]
            self.adverts.append(
                SniffedAdvert(
                    time=stamp,
                    src=socket.inet_ntoa(data[12:16]),
                    version=vrrp[0] >> 4,
                    vrid=vrrp[1],
                    priority=vrrp[2],
                )
            )

    def from_(self, src: str, since: float = 0.0) -> list[SniffedAdvert]:
        return [a for a in list(self.adverts) if a.src == src and a.time >= since]
