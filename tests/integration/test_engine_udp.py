"""Two Tandem engines over `--udp` on loopback: the failover engine without root or namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.vrrp_nodes import TANDEM, NodeSpec, NotifyLog, render_conf

ADVERT_INT = 0.1
TAKEOVER_BOUND = 1.0
MASTER_ADDR, BACKUP_ADDR = "127.0.0.2", "127.0.0.3"


def _free_udp_port() -> int:
    """A port free on both loopback addresses (the engine binds the same port on each)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((MASTER_ADDR, 0))
            port = int(first.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind((BACKUP_ADDR, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no UDP port free on both loopback addresses")


def _spec(name: str, src: str, peer: str, priority: int) -> NodeSpec:
    return NodeSpec(
        name=name,
        interface="lo",
        src=src,
        peers=(peer,),
        priority=priority,
        state="MASTER" if priority == 100 else "BACKUP",
        nopreempt=priority != 100,
        version=3,
        advert_int=ADVERT_INT,
        auth_pass=None,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every engine started by a test; killed with its process group afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _start(
    spec: NodeSpec,
    notify: NotifyLog,
    port: int,
    workdir: Path,
    started: list[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    workdir.mkdir()
    conf = workdir / "keepalived.conf"
    conf.write_text(render_conf(spec, notify.command(spec.name)))
    argv = [
        str(TANDEM), "keepalived", "-f", str(conf), "--udp", "--udp-port", str(port),
        "--no-vips", "--stats-file", str(workdir / "stats.json"),
    ]  # fmt: skip
    with (workdir / "tandem.log").open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    started.append(process)
    return process


def test_engine_udp_loopback_master_killed_backup_takes_over_within_bound(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    notify = NotifyLog(tmp_path)
    port = _free_udp_port()
    master = _start(
        _spec("master", MASTER_ADDR, BACKUP_ADDR, 100), notify, port, tmp_path / "m", processes
    )
    notify.wait_for("master", "MASTER", timeout=15)
    _start(_spec("backup", BACKUP_ADDR, MASTER_ADDR, 90), notify, port, tmp_path / "b", processes)
    notify.wait_for("backup", "BACKUP", timeout=15)
    quiet_since = time.time()
    time.sleep(1.5)
    assert notify.of("backup", quiet_since) == []

    killed = time.time()
    os.killpg(master.pid, signal.SIGKILL)
    took = notify.wait_for("backup", "MASTER", since=killed, timeout=10)

    assert took.time - killed < TAKEOVER_BOUND
    assert took.priority == 90
