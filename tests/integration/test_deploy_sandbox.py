"""The node under the restrictions deploy/tandem.service puts on it, without systemd.

systemd is not PID 1 on the test hosts, so the parts of the sandbox that decide whether the
node can work at all are reproduced with the kernel's own mechanisms: an unprivileged user
with CAP_NET_RAW and CAP_NET_ADMIN only (bounding, inheritable, ambient), no_new_privs,
umask 0077, RLIMIT_RTPRIO 1, and memory that may never be writable and executable
(PR_SET_MDWE, what MemoryDenyWriteExecute= enforces). Then `tandem run` must poll, publish
and answer health as usual, and a hook must start without the two capabilities (the unit keeps
capset allowed for exactly that).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.broker import Broker, RecordingSubscriber
from tests.integration.plc import PlcProcess, start_plc
from tests.integration.test_hub_e2e import LISTENING, counter_device, wait_until

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("prlimit") is None,
    reason="needs root, setpriv and prlimit",
)

# nobody/nogroup: an unprivileged account every Debian host has.
SERVICE_UID = SERVICE_GID = 65534
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

# Inside the sandbox, before Tandem loads: what systemd's UMask= and MemoryDenyWriteExecute=
# would have set up. A kernel without PR_SET_MDWE (before 6.3) says so and the test skips.
_PRELUDE = """
import ctypes, os, sys
os.umask(0o077)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({mdwe}, {refuse}, 0, 0, 0) != 0:
    print("NO-MDWE", ctypes.get_errno(), flush=True)
    sys.exit(77)
"""
RUN_NODE = (
    _PRELUDE
    + "from tandem.cli import main\nsys.argv = ['tandem', 'run', '-c', sys.argv[1]]\nmain()\n"
)
TRY_REALTIME = (
    _PRELUDE
    + """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx-allowed")
except OSError:
    print("wx-refused")
os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
print("rr1", os.sched_getscheduler(0) == os.SCHED_RR)
try:
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(2))
    print("rr2-allowed")
except PermissionError:
    print("rr2-refused")
"""
)


def can_raise_rtprio() -> bool:
    """Raising RLIMIT_RTPRIO needs CAP_SYS_RESOURCE, which some container roots lack."""
    probe = subprocess.run(["prlimit", "--rtprio=1:1", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


# A hook started the way Tandem starts every hook and check, reporting its own capabilities.
SPAWN_HOOK = (
    _PRELUDE
    + """
import asyncio, tempfile
from tandem.health.spawn import spawn, spawner_capabilities, wait_exit

async def main():
    with tempfile.TemporaryFile() as out:
        child = await spawn(["grep", "^Cap", "/proc/self/status"], out)
        await wait_exit(child)
        out.seek(0)
        print(out.read().decode(), end="")
    print("remaining", sorted(c.name for c in spawner_capabilities().remaining))
    print("own", open("/proc/self/status").read().split("CapEff:")[1].split()[0])

asyncio.run(main())
"""
)


def sandboxed(code: str, *args: str, rtprio: bool = True) -> list[str]:
    """argv running Python code as the service user, with the unit's privileges and limits."""
    prelude = code.format(mdwe=PR_SET_MDWE, refuse=PR_MDWE_REFUSE_EXEC_GAIN)
    caps = "-all,+net_raw,+net_admin"
    limits = ["prlimit", "--rtprio=1:1", "--"] if rtprio else []
    return [
        *limits,
        "setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_GID}", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}",
        "--no-new-privs", "--",
        sys.executable, "-c", prelude, *args,
    ]  # fmt: skip


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    """A directory the service user can reach (pytest's own tmp dir is root-only)."""
    with tempfile.TemporaryDirectory(prefix="tandem-sandbox-") as name:
        where = Path(name)
        where.chmod(0o755)
        yield where


@pytest.fixture
def plc() -> Iterator[PlcProcess]:
    process = start_plc()
    try:
        yield process
    finally:
        process.stop()


def cap_mask(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"{field} missing from /proc status")


def test_deploy_sandbox_mdwe_and_rtprio_allow_round_robin_one_only(sandbox_dir: Path) -> None:
    if not can_raise_rtprio():
        pytest.skip("this root cannot raise RLIMIT_RTPRIO (no CAP_SYS_RESOURCE)")
    result = subprocess.run(
        sandboxed(TRY_REALTIME), capture_output=True, text=True, timeout=60, cwd=sandbox_dir
    )
    if result.returncode == 77:
        pytest.skip(f"kernel without PR_SET_MDWE: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wx-refused", "rr1", "True", "rr2-refused"]


def test_deploy_sandbox_hooks_start_without_the_two_capabilities(sandbox_dir: Path) -> None:
    result = subprocess.run(
        sandboxed(SPAWN_HOOK, rtprio=False),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=sandbox_dir,
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
    for field in ("CapEff:", "CapPrm:", "CapInh:", "CapAmb:"):
        assert int(fields[field], 16) == 0, (field, result.stdout)
    assert fields["remaining"] == "[]"
    # the node itself keeps them: only the spawning thread let go
    assert int(fields["own"], 16) == 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW


async def test_deploy_sandbox_node_runs_polls_and_publishes_with_only_two_capabilities(
    tmp_path: Path, sandbox_dir: Path, plc: PlcProcess
) -> None:
    data_dir = sandbox_dir / "data"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, SERVICE_UID, SERVICE_GID)
    config = sandbox_dir / "tandem.yaml"
    log_path = sandbox_dir / "node.log"
    with Broker(tmp_path) as broker:
        config.write_text(
            json.dumps(
                {
                    "node": "sandboxed",
                    "data_dir": str(data_dir),
                    "api": {"host": "127.0.0.1", "port": 0},
                    "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
                    "devices": [counter_device(plc.port)],
                }
            )
        )
        config.chmod(0o644)
        async with RecordingSubscriber(broker.host, broker.port, "/neuron/#") as subscriber:
            with log_path.open("wb") as log:
                node = subprocess.Popen(
                    sandboxed(RUN_NODE, str(config), rtprio=can_raise_rtprio()),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=sandbox_dir,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            try:
                port = await wait_for_port(node, log_path)
                await subscriber.wait_for_count(10, timeout=20)
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                status_text = Path(f"/proc/{node.pid}/status").read_text()
                uid = Path(f"/proc/{node.pid}").stat().st_uid
            finally:
                node.terminate()
                returncode = node.wait(20)
    log_text = log_path.read_text(errors="replace")
    if returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert returncode == 0, log_text
    assert health.status_code == 200, health.text
    two = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert cap_mask(status_text, field) == two, field
    assert "NoNewPrivs:\t1" in status_text
    assert uid == SERVICE_UID
    outbox = data_dir / "outbox.sqlite3"
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o600
    body = subscriber.messages[0].json()
    assert (body["source_node"], body["term"]) == ("sandboxed", 0)


async def wait_for_port(node: subprocess.Popen[bytes], log_path: Path) -> int:
    port: list[int] = []

    def listening() -> bool:
        if node.poll() is not None:
            pytest.fail(f"node exited with {node.returncode}: {log_path.read_text()[-3000:]}")
        found = LISTENING.findall(log_path.read_text(errors="replace"))
        if found:
            port.append(int(found[-1]))
        return bool(found)

    await wait_until(listening, 30, "the sandboxed node to listen")
    await asyncio.sleep(0)
    return port[-1]
