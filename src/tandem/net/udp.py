"""VRRP messages carried in UDP, for unprivileged nodes and networks that block IP protocol 112."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address
from types import TracebackType
from typing import Self

from tandem.net.transport import Received, TransportError
from tandem.vrrp.types import VRRP_MULTICAST, VRRP_TTL, Drop, DropReason, IpHeader

log = logging.getLogger(__name__)

DEFAULT_UDP_PORT = 5112  # not IANA-assigned; chosen to echo protocol 112
VRRP_MIN_LENGTH = 8  # the fixed VRRP header, RFC 3768 §5.1 / RFC 5798 §5.1
_IP_HEADER_LENGTH = 20
_TOS_INTERNETWORK_CONTROL = 0xC0  # IP precedence 6, as keepalived marks its adverts
_MAX_DATAGRAM = 65535


class UdpTransport:
    """Sends each VRRP message as one UDP datagram to the peers whose IP is the destination.

    A VRRP engine addresses peers by IP only, so `peers` maps that IP to a UDP endpoint. The
    VRRP tie-break and the v3 checksum pseudo-header use addresses, so two nodes on one host
    should use distinct loopback addresses (127.0.0.2 and 127.0.0.3, same port: Linux routes
    all of 127/8 to lo) rather than one address with two ports.
    A destination of 224.0.0.18 goes to every peer, standing in for multicast.
    """

    def __init__(
        self,
        bind: tuple[str, int],
        peers: Iterable[tuple[str, int]] = (),
        vrid_filter: set[int] | None = None,
    ) -> None:
        if IPv4Address(bind[0]).is_unspecified:
            # The bound address is our VRRP identity (tie-break, v3 pseudo-header).
            raise ValueError("UdpTransport must bind a specific address, not 0.0.0.0")
        self._bind = bind
        self._peers = [(IPv4Address(host), port) for host, port in peers]
        self._vrid_filter = frozenset(vrid_filter) if vrid_filter is not None else None
        self._sock: socket.socket | None = None
        self._local_address = IPv4Address(bind[0])
        self._local_port = bind[1]
        self._ident = 0
        self._send_failing = False
        self.send_errors = 0

    @property
    def local_address(self) -> IPv4Address:
        return self._local_address

    @property
    def local_port(self) -> int:
        """The bound port; differs from the requested one when port 0 was asked for."""
        return self._local_port

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _TOS_INTERNETWORK_CONTROL)
            sock.setblocking(False)
            sock.bind(self._bind)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP transport to {self._bind}: {exc}") from exc
        self._sock = sock
        self._local_port = sock.getsockname()[1]
        log.debug("UDP transport bound to %s:%s", self._local_address, self._local_port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _endpoints_for(self, dst: IPv4Address) -> list[tuple[str, int]]:
        if dst == VRRP_MULTICAST:
            return [(str(ip), port) for ip, port in self._peers]
        matching = [(str(ip), port) for ip, port in self._peers if ip == dst]
        # An unlisted destination is assumed to listen on our own port, the common deployment.
        return matching or [(str(dst), self._local_port)]

    def send(self, payload: bytes, dst: IPv4Address) -> None:
        if self._sock is None:
            raise TransportError("UDP transport is not open")
        for endpoint in self._endpoints_for(dst):
            try:
                self._sock.sendto(payload, endpoint)
            except OSError as exc:
                self.send_errors += 1
                # One warning per outage, not one per advert.
                level = logging.DEBUG if self._send_failing else logging.WARNING
                log.log(level, "UDP send to %s:%s failed: %s", endpoint[0], endpoint[1], exc)
                self._send_failing = True
            else:
                if self._send_failing:
                    log.info("UDP send to %s:%s works again", endpoint[0], endpoint[1])
                self._send_failing = False

    async def recv(self) -> Received | Drop:
        if self._sock is None:
            raise TransportError("UDP transport is not open")
        loop = asyncio.get_running_loop()
        data, (host, _port) = await loop.sock_recvfrom(self._sock, _MAX_DATAGRAM)
        return self._classify(data, IPv4Address(host))

    def _classify(self, data: bytes, src: IPv4Address) -> Received | Drop:
        if len(data) < VRRP_MIN_LENGTH:
            return Drop(DropReason.TOO_SHORT, f"{len(data)} byte datagram from {src}")
        if self._vrid_filter is not None and data[1] not in self._vrid_filter:
            return Drop(DropReason.UNKNOWN_VRID, f"vrid {data[1]} from {src}")
        # UDP hides the IP header, so report what a raw VRRP packet from this peer would carry.
        self._ident = (self._ident + 1) & 0xFFFF
        header = IpHeader(
            src=src,
            dst=self._local_address,
            ttl=VRRP_TTL,
            ident=self._ident,
            tos=_TOS_INTERNETWORK_CONTROL,
            total_length=_IP_HEADER_LENGTH + len(data),
            header_length=_IP_HEADER_LENGTH,
        )
        return Received(payload=data, header=header)
