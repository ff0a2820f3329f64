"""VRRP over IP protocol 112 on a raw socket, sent and filtered the way keepalived does it."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
from ipaddress import IPv4Address
from types import TracebackType
from typing import Self

from tandem.net.transport import Received, TransportError
from tandem.vrrp.packet import split_ip
from tandem.vrrp.types import VRRP_MULTICAST, VRRP_PROTOCOL, VRRP_TTL, Drop, DropReason

log = logging.getLogger(__name__)

IP_TOS_INTERNETWORK_CONTROL = 0xC0  # keepalived marks adverts with IP precedence 6
_SIOCGIFADDR = 0x8915  # linux/sockios.h
_IFNAMSIZ = 16
_IFREQ_UNION = 24  # sizeof(struct ifreq) is 40 on Linux: name plus a 24-byte union
_MAX_PACKET = 65535  # read whole packets so that a length mismatch is seen, not truncated


def interface_address(interface: str) -> IPv4Address:
    """The interface's primary IPv4 address, keepalived's default `unicast_src_ip`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack(f"{_IFNAMSIZ}s{_IFREQ_UNION}x", interface.encode()[: _IFNAMSIZ - 1])
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError as exc:
            raise TransportError(f"no IPv4 address on interface {interface!r}: {exc}") from exc
    # struct ifreq: name, then struct sockaddr_in (family, port, address).
    return IPv4Address(answer[_IFNAMSIZ + 4 : _IFNAMSIZ + 8])


class RawTransport:
    """A raw protocol-112 socket bound to one interface; the kernel writes the IP header.

    Unicast mode binds the socket to the local address, as keepalived binds its unicast socket
    to `unicast_src_ip`, so the kernel itself filters packets for other addresses (a VIP on the
    same interface, for instance). Multicast mode joins 224.0.0.18 on the interface and accepts
    only packets sent to that group. Packets for another destination are skipped silently, as
    the kernel would have done; `filtered` counts them.
    """

    def __init__(
        self,
        interface: str,
        local_address: IPv4Address | None = None,
        multicast: bool = False,
        vrid_filter: set[int] | None = None,
    ) -> None:
        if len(interface.encode()) >= _IFNAMSIZ:
            raise ValueError(f"interface name {interface!r} is longer than 15 bytes")
        self.interface = interface
        self.multicast = multicast
        self._requested_address = local_address
        self._local_address: IPv4Address | None = local_address
        self._vrid_filter = frozenset(vrid_filter) if vrid_filter is not None else None
        self._sock: socket.socket | None = None
        self._send_failing = False
        self.send_errors = 0
        self.filtered = 0

    @property
    def local_address(self) -> IPv4Address:
        if self._local_address is None:
            raise TransportError("RawTransport has no local address until it is opened")
        return self._local_address

    async def __aenter__(self) -> Self:
        local = self._requested_address or interface_address(self.interface)
        try:
            ifindex = socket.if_nametoindex(self.interface)
        except OSError as exc:
            raise TransportError(f"no interface {self.interface!r}: {exc}") from exc
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
        except PermissionError as exc:
            raise TransportError("a raw VRRP socket needs root or CAP_NET_RAW") from exc
        try:
            self._configure(sock, local, ifindex)
        except OSError as exc:
            sock.close()
            raise TransportError(
                f"cannot set up raw VRRP socket on {self.interface} ({local}): {exc}"
            ) from exc
        self._sock = sock
        self._local_address = local
        log.debug(
            "raw VRRP transport open on %s, local %s, %s",
            self.interface,
            local,
            "multicast" if self.multicast else "unicast",
        )
        return self

    def _configure(self, sock: socket.socket, local: IPv4Address, ifindex: int) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IP_TOS_INTERNETWORK_CONTROL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        # struct ip_mreqn: group, local address, ifindex; IP_MULTICAST_IF reads the last two.
        mreqn = VRRP_MULTICAST.packed + local.packed + struct.pack("@i", ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        if self.multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            # Binding picks the source address and lets the kernel drop other destinations.
            sock.bind((str(local), 0))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, payload: bytes, dst: IPv4Address) -> None:
        if self._sock is None:
            raise TransportError("RawTransport is not open")
        try:
            self._sock.sendto(payload, (str(dst), 0))
        except OSError as exc:
            # Link down or a full buffer: VRRP's next advert is the retry.
            self.send_errors += 1
            level = logging.DEBUG if self._send_failing else logging.WARNING
            log.log(level, "VRRP send on %s to %s failed: %s", self.interface, dst, exc)
            self._send_failing = True
        else:
            if self._send_failing:
                log.info("VRRP send on %s to %s works again", self.interface, dst)
            self._send_failing = False

    async def recv(self) -> Received | Drop:
        if self._sock is None:
            raise TransportError("RawTransport is not open")
        loop = asyncio.get_running_loop()
        while True:
            packet = await loop.sock_recv(self._sock, _MAX_PACKET)
            result = self._classify(packet)
            if result is not None:
                return result

    def _classify(self, packet: bytes) -> Received | Drop | None:
        """Received or Drop for the caller; None for a packet that was never meant for us."""
        split = split_ip(packet)
        if isinstance(split, Drop):
            return split
        header, payload = split
        wanted_dst = VRRP_MULTICAST if self.multicast else self._local_address
        if header.dst != wanted_dst:
            self.filtered += 1
            log.debug("skipped VRRP packet from %s to %s on %s", header.src, header.dst, self)
            return None
        if header.src == self._local_address:
            return Drop(DropReason.OWN_ADVERT, f"looped back from {header.src}")
        # Cheap pre-filter: the VRID is byte 1 in both v2 and v3 (RFC 3768 §5.3.3).
        vrid = payload[1] if len(payload) > 1 else None
        if self._vrid_filter is not None and vrid not in self._vrid_filter:
            return Drop(DropReason.UNKNOWN_VRID, f"vrid {vrid} from {header.src}")
        return Received(payload=payload, header=header)

    def __repr__(self) -> str:
        mode = "multicast" if self.multicast else "unicast"
        return f"RawTransport({self.interface}, {self._local_address}, {mode})"
