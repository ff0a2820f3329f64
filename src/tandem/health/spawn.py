"""Starting hooks and checks without Tandem's network privileges, as a given user.

Tandem needs CAP_NET_RAW and CAP_NET_ADMIN for VRRP, ARP and the virtual IPs; a notify hook or
a track script must never get them. Capability sets are per thread on Linux and a forked child
copies the thread that forked it, so every child is forked from one dedicated thread whose
network capabilities are gone from all five sets (bounding, inheritable, ambient, permitted,
effective). The child therefore starts without them, before exec, and exec cannot give them
back: not to a root script (its permitted set is bounding | inheritable), not through file
capabilities or a setuid binary (the bounding set caps those). The rest of the process keeps
its privileges, which `preexec_fn` could not guarantee (it runs after the uid switch, too late
to narrow the bounding set, and is unsafe with threads).

The spawning thread is created on first use and keeps the network namespace of the thread
that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import pyprctl

log = logging.getLogger(__name__)

NETWORK_CAPABILITIES = frozenset({pyprctl.Cap.NET_ADMIN, pyprctl.Cap.NET_RAW})


@dataclass(frozen=True, slots=True)
class RunAs:
    """The uid and gid a child runs as; its only supplementary group is `gid`, as keepalived."""

    uid: int
    gid: int
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name or self.uid} ({self.uid}:{self.gid})"


@dataclass(frozen=True, slots=True)
class CapabilityDrop:
    """What the spawning thread could drop; `bounding` is False without CAP_SETPCAP."""

    bounding: bool
    remaining: frozenset[pyprctl.Cap]


def drop_network_capabilities() -> CapabilityDrop:
    """Remove CAP_NET_ADMIN and CAP_NET_RAW from every capability set of the calling thread.

    Lowering inheritable, ambient, permitted and effective is always allowed; the bounding set
    needs CAP_SETPCAP, which an unprivileged service with only ambient network capabilities
    lacks. Its children then start without the capabilities all the same, but a program with
    file capabilities could still get them (systemd's NoNewPrivileges= closes that).
    """
    bounding = True
    for cap in NETWORK_CAPABILITIES:
        if not pyprctl.capbset_read(cap):
            continue
        try:
            pyprctl.capbset_drop(cap)
        except PermissionError:
            bounding = False
    for cap in NETWORK_CAPABILITIES:
        with contextlib.suppress(OSError):  # kernels without ambient capabilities
            pyprctl.cap_ambient_lower(cap)
    state = pyprctl.CapState.get_current()
    state.effective -= NETWORK_CAPABILITIES
    state.permitted -= NETWORK_CAPABILITIES
    state.inheritable -= NETWORK_CAPABILITIES
    state.set_current()
    after = pyprctl.CapState.get_current()
    remaining = frozenset(
        (after.effective | after.permitted | after.inheritable) & NETWORK_CAPABILITIES
    )
    return CapabilityDrop(bounding=bounding, remaining=remaining)


class _Spawner:
    """The one thread that forks every hook and check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.dropped: CapabilityDrop | None = None

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="spawn", initializer=self._prepare
                )
            return self._executor

    def _prepare(self) -> None:
        self.dropped = drop_network_capabilities()
        if not self.dropped.bounding:
            log.info(
                "hooks and checks start without CAP_NET_ADMIN/CAP_NET_RAW; without "
                "CAP_SETPCAP the bounding set keeps them, so a program with file "
                "capabilities could regain them"
            )


_SPAWNER = _Spawner()


def spawner_capabilities() -> CapabilityDrop | None:
    """What the spawning thread dropped (None before the first child); for status and tests."""
    return _SPAWNER.dropped


def _switches_identity(run_as: RunAs | None) -> bool:
    if run_as is None:
        return False
    # Already that user: an unprivileged process could not call setgroups anyway.
    return os.geteuid() == 0 or (run_as.uid, run_as.gid) != (os.geteuid(), os.getegid())


def _popen(argv: Sequence[str], output: IO[bytes], run_as: RunAs | None) -> subprocess.Popen[bytes]:
    # Runs on the spawning thread: the fork copies its reduced capability sets.
    if run_as is None or not _switches_identity(run_as):
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # its own process group: a timeout kills the pipeline
        )
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        start_new_session=True,
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[run_as.gid],
    )


async def spawn(
    argv: Sequence[str], output: IO[bytes], run_as: RunAs | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` from the spawning thread; cancelling after the fork kills its group."""
    loop = asyncio.get_running_loop()
    started = loop.run_in_executor(
        _SPAWNER.executor(), functools.partial(_popen, argv, output, run_as)
    )
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            process = await started
            kill_group(process.pid)
            await wait_exit(process)
        raise


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a child's whole process group; gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def wait_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for a child without a thread or a SIGCHLD handler: its pidfd becomes readable."""
    if process.returncode is not None:
        return process.returncode
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(process.pid)
    exited: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()
