"""Virtual IP addresses on an interface, and the gratuitous ARPs that move them to this host."""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from types import TracebackType
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tandem.net.transport import TransportError

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806  # IEEE 802 ethertype for ARP
ETH_P_IP = 0x0800
ARP_HTYPE_ETHERNET = 1  # RFC 826
ARP_OP_REQUEST = 1  # RFC 5227 §3: an ARP Announcement is a request with sender IP = target IP
BROADCAST_MAC = b"\xff" * 6
_ETH_MIN_FRAME = 60  # without FCS; veth does not pad short frames for us


def arp_announcement(mac: bytes, address: IPv4Address) -> bytes:
    """One broadcast Ethernet frame announcing that `address` now lives at `mac`."""
    ethernet = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4, ARP_OP_REQUEST)
    arp += mac + address.packed + bytes(6) + address.packed
    frame = ethernet + arp
    return frame + bytes(max(0, _ETH_MIN_FRAME - len(frame)))


class ArpAnnouncer:
    """An open AF_PACKET socket on one interface that sends ARP announcements.

    Opened once and kept: closing a packet socket makes the kernel wait for an RCU grace
    period (15-30 ms), which would stall the event loop in the middle of a takeover.
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        except PermissionError as exc:
            raise TransportError("gratuitous ARP needs root or CAP_NET_RAW") from exc
        try:
            sock.bind((interface, ETH_P_ARP))
            self.mac: bytes = sock.getsockname()[4]
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot send ARP on {interface!r}: {exc}") from exc
        self._sock = sock

    def announce(self, addresses: Iterable[IPv4Address | IPv4Interface], count: int = 1) -> int:
        """Send `count` announcements per address back to back; returns frames sent.

        Switches and peers update their tables at once instead of waiting for ARP entries to
        expire, which is what makes a failover visible in milliseconds. Repeats spaced in
        time (keepalived's second burst after 5 s) are the caller's schedule.
        """
        ips = [a.ip if isinstance(a, IPv4Interface) else a for a in addresses]
        sent = 0
        for _ in range(max(count, 0)):
            for ip in ips:
                try:
                    self._sock.send(arp_announcement(self.mac, ip))
                    sent += 1
                except OSError as exc:
                    log.warning("gratuitous ARP for %s on %s failed: %s", ip, self.interface, exc)
        log.debug("sent %s gratuitous ARP frames on %s for %s", sent, self.interface, ips)
        return sent

    def close(self) -> None:
        self._sock.close()


def send_gratuitous_arp(
    interface: str,
    addresses: Iterable[IPv4Address | IPv4Interface],
    count: int = 1,
) -> int:
    """One-off announcements (opens and closes a socket: slow; a VipManager keeps one open)."""
    ips = list(addresses)
    if not ips or count < 1:
        return 0
    announcer = ArpAnnouncer(interface)
    try:
        return announcer.announce(ips, count)
    finally:
        announcer.close()


@dataclass(frozen=True, slots=True)
class VipPlacement:
    """Where and how one VIP is added: keepalived's `dev`, `label`, `brd` and `scope`."""

    interface: str
    label: str | None = None
    broadcast: IPv4Address | None = None
    scope: int | None = None


class VipManager:
    """Adds and removes virtual IPs; idempotent, like keepalived's netlink calls.

    VIPs go on `interface` unless `placements` puts one elsewhere (keepalived's
    `virtual_ipaddress { ADDR dev IF label L brd B scope S }`); its gratuitous ARPs go out on
    the interface that carries it. Calls are synchronous and take well under a millisecond, so
    the VRRP driver can keep its action order (VIPs, then ARP, then hooks) without awaiting.
    pyroute2's sync IPRoute cannot run inside a running asyncio loop, so it lives on one
    private worker thread. That thread is started by `open()`, so it inherits the network
    namespace the caller is in at that moment. With `remove_on_close`, addresses this manager
    added are removed again on close, so a crashed test or a stopped node does not leave a
    VIP behind.
    """

    def __init__(
        self,
        interface: str,
        label: str | None = None,
        remove_on_close: bool = True,
        placements: Mapping[IPv4Interface, VipPlacement] | None = None,
    ):
        self.interface = interface
        self.label = label
        self.remove_on_close = remove_on_close
        self._default = VipPlacement(interface, label)
        self._placements = dict(placements or {})
        self._executor: ThreadPoolExecutor | None = None
        self._ipr: IPRoute | None = None
        self._ifindex: dict[str, int] = {}
        self._added: set[IPv4Interface] = set()
        self._announcers: dict[str, ArpAnnouncer] = {}
        self._lock = threading.Lock()

    @property
    def added(self) -> frozenset[IPv4Interface]:
        """Addresses this manager added and has not removed since."""
        return frozenset(self._added)

    @property
    def interfaces(self) -> frozenset[str]:
        """Every interface a VIP of this manager may go on."""
        return frozenset({self.interface, *(p.interface for p in self._placements.values())})

    def placement(self, vip: IPv4Interface) -> VipPlacement:
        return self._placements.get(vip, self._default)

    def open(self) -> Self:
        if self._executor is not None:
            return self
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vip-{self.interface}")
        try:
            self._ipr, self._ifindex = executor.submit(self._open_netlink).result()
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor
        for name in sorted(self.interfaces):
            try:
                self._announcers[name] = ArpAnnouncer(name)
            except TransportError as exc:
                log.warning("no gratuitous ARP on %s: %s", name, exc)
        return self

    def _open_netlink(self) -> tuple[IPRoute, dict[str, int]]:
        ipr = IPRoute()
        indexes: dict[str, int] = {}
        try:
            for name in sorted(self.interfaces):
                found = ipr.link_lookup(ifname=name)
                if not found:
                    raise TransportError(f"no interface {name!r} for virtual IPs")
                indexes[name] = int(found[0])
        except BaseException:
            ipr.close()
            raise
        return ipr, indexes

    def close(self) -> None:
        if self._executor is None:
            return
        try:
            if self.remove_on_close and self._added:
                self.remove(sorted(self._added))
        finally:
            ipr = self._ipr
            if ipr is not None:
                self._executor.submit(ipr.close).result()
            self._executor.shutdown(wait=True)
            self._executor = None
            self._ipr = None
            for announcer in self._announcers.values():
                announcer.close()
            self._announcers.clear()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, vips: Sequence[IPv4Interface]) -> None:
        for vip in vips:
            if self._change("add", vip, already=errno.EEXIST):
                log.debug("VIP %s already on %s", vip, self.placement(vip).interface)
            self._added.add(vip)

    def remove(self, vips: Sequence[IPv4Interface]) -> None:
        for vip in vips:
            if self._change("del", vip, already=errno.EADDRNOTAVAIL):
                log.debug("VIP %s already absent from %s", vip, self.placement(vip).interface)
            self._added.discard(vip)

    def gratuitous_arp(self, vips: Sequence[IPv4Interface], count: int = 1) -> None:
        """Announce each VIP on its own interface; a failure is logged, never raised, as a
        missed ARP must not stop a failover."""
        by_interface: dict[str, list[IPv4Interface]] = {}
        for vip in vips:
            by_interface.setdefault(self.placement(vip).interface, []).append(vip)
        for name, group in by_interface.items():
            announcer = self._announcers.get(name)
            if announcer is not None:
                announcer.announce(group, count)

    def _request(self, vip: IPv4Interface) -> dict[str, Any]:
        placement = self.placement(vip)
        request: dict[str, Any] = {
            "index": self._ifindex[placement.interface],
            "address": str(vip.ip),
            "prefixlen": vip.network.prefixlen,
        }
        if placement.label is not None:
            request["label"] = placement.label
        if placement.broadcast is not None:
            request["broadcast"] = str(placement.broadcast)
        if placement.scope is not None:
            request["scope"] = placement.scope
        return request

    def _change(self, command: str, vip: IPv4Interface, already: int) -> bool:
        """Apply one change; True if it was already in effect (not an error: idempotent)."""
        if self._executor is None:
            self.open()
        assert self._executor is not None
        request = self._request(vip)
        with self._lock:
            try:
                self._executor.submit(self._netlink_addr, command, request).result()
            except NetlinkError as exc:
                if exc.code == already:
                    return True
                where = self.placement(vip).interface
                raise TransportError(f"cannot {command} VIP {vip} on {where}: {exc}") from exc
        return False

    def _netlink_addr(self, command: str, request: dict[str, Any]) -> None:
        assert self._ipr is not None
        self._ipr.addr(command, **request)
