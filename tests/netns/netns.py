"""Real network namespaces for tests and benchmarks: nodes, veth links, a shared bridge, cleanup.

Every name starts with "tdm-" plus a random suffix, so several engineers (and parallel test
runs) can build topologies on one host at once. Teardown always runs and only touches what
this module created: its own namespaces and the processes started through them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from types import TracebackType
from typing import Any, Self

import pytest

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000  # linux/sched.h
NAME_PREFIX = "tdm-"
IFNAME_MAX = 15  # IFNAMSIZ - 1
_STOP_GRACE = 3.0
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def netns_available() -> tuple[bool, str]:
    """Whether this process can build namespaces; the reason when it cannot (for a skip)."""
    if os.geteuid() != 0:
        return False, "needs root for ip netns"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' not installed"
    probe = f"{NAME_PREFIX}probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return False, f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


# For netns tests outside tests/netns (whose conftest skips `netns`-marked tests by itself):
# cheap enough to evaluate at import, unlike a probe namespace.
requires_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def _ip(*args: str) -> None:
    """Run one `ip` command in the root namespace; raise with its stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Netns:
    """One network namespace with loopback up; processes started through it die with it."""

    def __init__(self, label: str = "ns") -> None:
        self.name = f"{NAME_PREFIX}{secrets.token_hex(3)}-{label}"
        self._processes: list[subprocess.Popen[Any]] = []
        self._deleted = False
        _ip("netns", "add", self.name)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            _ip("netns", "del", self.name)
            raise

    def __repr__(self) -> str:
        return f"Netns({self.name})"

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the namespace; output captured as text unless overridden."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        done: subprocess.CompletedProcess[str] = subprocess.run(self._argv(argv), **kw)
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} failed: {done.stderr}")
        return done

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside the namespace; `delete()` stops it."""
        # Own session: stopping the process group also reaches children it forked.
        kw.setdefault("start_new_session", True)
        process: subprocess.Popen[Any] = subprocess.Popen(self._argv(argv), **kw)
        self._processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], grace: float = _STOP_GRACE) -> int:
        """SIGTERM the process group, SIGKILL after `grace` seconds; returns the exit code."""
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(grace)
        # Children the leader forked may still be running in its group.
        self._signal_group(process, signal.SIGKILL)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return int(process.returncode)

    @staticmethod
    def _signal_group(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread inside this namespace for the duration of the block.

        Sockets (and threads) created inside the block keep this namespace after it ends, which
        is how an in-process transport gets opened on a node while the event loop stays here.
        Do not await across the block: other tasks on the loop would run in the namespace too.
        """
        with (
            open("/proc/thread-self/ns/net", "rb") as home,
            open(f"/run/netns/{self.name}", "rb") as target,
        ):
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def delete(self) -> None:
        """Stop every process started here, then remove the namespace; safe to call twice."""
        if self._deleted:
            return
        for process in self._processes:
            try:
                self.stop(process)
            except Exception:  # keep tearing down; one stuck process must not leak the rest
                log.exception("could not stop %s in %s", process.args, self.name)
        self._processes.clear()
        _ip("netns", "del", self.name)
        self._deleted = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.delete()


def veth_pair(
    ns_a: Netns,
    ns_b: Netns,
    addr_a: str | None,
    addr_b: str | None,
    names: tuple[str, str] | None = None,
) -> tuple[str, str]:
    """Link two namespaces with a veth pair, both ends up; returns the interface names.

    Addresses are "a.b.c.d/len"; None leaves an end unnumbered (a bridge port, for instance).
    """
    suffix = secrets.token_hex(3)
    if_a, if_b = names or (f"va{suffix}", f"vb{suffix}")
    for name in (if_a, if_b):
        if len(name) > IFNAME_MAX:
            raise ValueError(f"interface name {name!r} is longer than {IFNAME_MAX}")
    _ip(
        "link", "add", if_a, "netns", ns_a.name, "type", "veth",
        "peer", "name", if_b, "netns", ns_b.name,
    )  # fmt: skip
    for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
        if addr is not None:
            ns.run(["ip", "addr", "add", addr, "dev", ifname])
        ns.run(["ip", "link", "set", ifname, "up"])
    return if_a, if_b


def link_down(ns: Netns, ifname: str) -> None:
    ns.run(["ip", "link", "set", ifname, "down"])


def link_up(ns: Netns, ifname: str) -> None:
    ns.run(["ip", "link", "set", ifname, "up"])


@dataclass(frozen=True, slots=True)
class Node:
    """One host on the topology's bridge."""

    ns: Netns
    ifname: str  # the node's interface, inside ns
    address: IPv4Interface
    bridge_port: str  # the other end, inside the bridge namespace


class Topology:
    """N namespaces on one Ethernet segment, like hosts on a switch.

    The bridge lives in its own namespace, so any node's link can be cut alone: `cut(i)`
    takes the switch port down (the node sees carrier loss, like a pulled cable), while
    `isolate(i)` stops forwarding on the port with carrier kept up (a partition the node
    cannot see, like a failed switch path). Node i gets 10.77.0.(i+1)/24 by default.
    """

    def __init__(self, nodes: int = 3, subnet: str = "10.77.0.0/24") -> None:
        if nodes < 1:
            raise ValueError("a topology needs at least one node")
        self.count = nodes
        self.network = IPv4Network(subnet)
        self.bridge_ns: Netns | None = None
        self.nodes: list[Node] = []
        self._namespaces: list[Netns] = []
        self.bridge = "br0"

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        bridge_ns = Netns("br")
        self._namespaces.append(bridge_ns)
        self.bridge_ns = bridge_ns
        # No multicast snooping: 224.0.0.18 must flood to every port, as on a plain switch.
        bridge_ns.run(["ip", "link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0"])
        bridge_ns.run(["ip", "link", "set", self.bridge, "up"])
        hosts = self.network.hosts()
        for index in range(self.count):
            ns = Netns(f"n{index + 1}")
            self._namespaces.append(ns)
            address = IPv4Interface(f"{next(hosts)}/{self.network.prefixlen}")
            suffix = secrets.token_hex(3)
            ifname, port = veth_pair(
                ns, bridge_ns, str(address), None, names=(f"tn{suffix}", f"tp{suffix}")
            )
            bridge_ns.run(["ip", "link", "set", port, "master", self.bridge])
            self.nodes.append(Node(ns=ns, ifname=ifname, address=address, bridge_port=port))

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def cut(self, index: int) -> None:
        """Pull node `index`'s cable: its switch port goes down, and its carrier with it."""
        assert self.bridge_ns is not None
        link_down(self.bridge_ns, self.nodes[index].bridge_port)

    def restore(self, index: int) -> None:
        """Undo `cut` or `isolate` for node `index`."""
        assert self.bridge_ns is not None
        port = self.nodes[index].bridge_port
        link_up(self.bridge_ns, port)
        self._port_state(port, forwarding=True)

    def isolate(self, index: int) -> None:
        """Stop forwarding to and from node `index` while its carrier stays up."""
        assert self.bridge_ns is not None
        self._port_state(self.nodes[index].bridge_port, forwarding=False)

    def _port_state(self, port: str, forwarding: bool) -> None:
        assert self.bridge_ns is not None
        # Bridge port states: 0 disabled, 3 forwarding (linux/if_bridge.h).
        state = "3" if forwarding else "0"
        self.bridge_ns.run(["bridge", "link", "set", "dev", port, "state", state])

    def close(self) -> None:
        """Delete every namespace made here (their processes first); errors do not stop it."""
        for ns in reversed(self._namespaces):
            try:
                ns.delete()
            except Exception:
                log.exception("could not delete %s", ns)
        self._namespaces.clear()
