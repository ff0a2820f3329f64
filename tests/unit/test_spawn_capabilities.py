"""Hooks and checks start without CAP_NET_ADMIN / CAP_NET_RAW, while Tandem itself keeps them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tandem.health.process import run_command
from tandem.health.script import ScriptCheck
from tandem.hooks import NotifyConfig, NotifyRunner

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13  # linux/capability.h
NETWORK_BITS = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="capabilities to drop need root")


def capability_sets(status: str) -> dict[str, int]:
    """The five capability masks of a /proc/<pid>/status text."""
    found = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in CAP_SETS:
            found[key] = int(value.strip(), 16)
    assert set(found) == set(CAP_SETS), status
    return found


def network_bits(status: str) -> dict[str, bool]:
    return {name: bool(mask & NETWORK_BITS) for name, mask in capability_sets(status).items()}


def thread_status() -> str:
    return Path("/proc/thread-self/status").read_text()


@needs_root
async def test_run_command_child_lacks_network_capabilities_in_every_set() -> None:
    assert capability_sets(thread_status())["CapEff"] & NETWORK_BITS  # there is something to drop
    result = await run_command(["cat", "/proc/self/status"], timeout=5)
    assert result.ok, result.describe()
    assert network_bits(result.output) == dict.fromkeys(CAP_SETS, False)
    # Only the child lost them: the event loop's thread still sends VRRP and adds VIPs.
    assert capability_sets(thread_status())["CapEff"] & NETWORK_BITS == NETWORK_BITS


@needs_root
async def test_notify_hook_prints_capabilities_without_network_bits(tmp_path: Path) -> None:
    out = tmp_path / "caps.txt"
    hook = f"grep ^Cap /proc/self/status > {out}"
    async with NotifyRunner(NotifyConfig(instance="VI_1", notify_master=hook)) as runner:
        runner.submit("MASTER", 100)
        await runner.drain()
    assert [run.exit_code for run in runner.history] == [0]
    assert network_bits(out.read_text()) == dict.fromkeys(CAP_SETS, False)
    # Root keeps everything else: the hook can still do what root scripts do.
    assert capability_sets(out.read_text())["CapEff"] & (1 << 0)  # CAP_CHOWN


@needs_root
async def test_track_script_runs_without_network_capabilities(tmp_path: Path) -> None:
    out = tmp_path / "caps.txt"
    check = ScriptCheck("caps", f"grep ^Cap /proc/self/status > {out}", interval=10)
    await check._run_once()
    assert check.last_exit == 0
    assert network_bits(out.read_text()) == dict.fromkeys(CAP_SETS, False)


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_hook_under_unprivileged_service_with_ambient_capabilities_gets_none() -> None:
    # The deployment in deploy/tandem.service: User=tandem with AmbientCapabilities. Without
    # the drop, every hook would inherit the ambient set.
    program = textwrap.dedent(
        """
        import asyncio, pathlib
        from tandem.health.process import run_command
        own = pathlib.Path("/proc/thread-self/status").read_text()
        result = asyncio.run(run_command(["cat", "/proc/self/status"], timeout=5))
        print(own + "--child--" + result.output)
        """
    )
    nobody = 65534
    done = subprocess.run(
        [
            "setpriv",
            f"--reuid={nobody}",
            f"--regid={nobody}",
            "--clear-groups",
            "--inh-caps=+net_admin,+net_raw",
            "--ambient-caps=+net_admin,+net_raw",
            sys.executable,
            "-c",
            program,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    own, child = done.stdout.split("--child--")
    assert capability_sets(own)["CapAmb"] & NETWORK_BITS == NETWORK_BITS  # the service has them
    assert network_bits(child) == {
        "CapInh": False,
        "CapPrm": False,
        "CapEff": False,
        "CapAmb": False,
        "CapBnd": True,  # no CAP_SETPCAP to narrow it; NoNewPrivileges covers that in the unit
    }
