"""UdpTransport on loopback and LossyTransport's deterministic loss; no root needed."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address

import pytest

from tandem.net.transport import LossyTransport, Received, TransportError
from tandem.net.udp import UdpTransport
from tandem.vrrp.types import VRRP_MULTICAST, VRRP_TTL, Drop, DropReason, IpHeader

# A v2 advert: version 2 type 1, vrid 51, prio 100, 1 address, no auth, interval 1, checksum,
# one address, 8 auth bytes. The transport does not decode it, so any bytes of this shape do.
ADVERT = bytes([0x21, 51, 100, 1, 0, 1, 0x12, 0x34]) + bytes([10, 0, 0, 254]) + bytes(8)
RECV_TIMEOUT = 5.0


def _free_port(host: str) -> int:
    """One ephemeral port that is free on both loopback addresses used below."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def _recv(transport: UdpTransport | LossyTransport) -> Received | Drop:
    return await asyncio.wait_for(transport.recv(), RECV_TIMEOUT)


async def test_udp_transport_two_loopback_addresses_exchange_payloads() -> None:
    port = _free_port("127.0.0.2")
    a = UdpTransport(("127.0.0.2", port), peers=[("127.0.0.3", port)])
    b = UdpTransport(("127.0.0.3", port), peers=[("127.0.0.2", port)])
    async with a, b:
        a.send(ADVERT, IPv4Address("127.0.0.3"))
        got = await _recv(b)
        b.send(ADVERT[::-1], IPv4Address("127.0.0.2"))
        back = await _recv(a)

    assert isinstance(got, Received)
    assert got.payload == ADVERT
    assert got.header.src == IPv4Address("127.0.0.2")
    assert got.header.dst == IPv4Address("127.0.0.3")
    assert got.header.ttl == VRRP_TTL
    assert got.header.total_length == 20 + len(ADVERT)
    assert isinstance(back, Received)
    assert back.payload == ADVERT[::-1]
    assert back.header.src == IPv4Address("127.0.0.3")


async def test_udp_transport_same_address_distinct_ports_reaches_peer_port() -> None:
    a = UdpTransport(("127.0.0.1", 0))
    async with a:
        b = UdpTransport(("127.0.0.1", 0), peers=[("127.0.0.1", a.local_port)])
        async with b:
            b.send(ADVERT, IPv4Address("127.0.0.1"))
            got = await _recv(a)
    assert isinstance(got, Received)
    assert got.payload == ADVERT
    assert a.local_port != 0


async def test_udp_transport_multicast_destination_fans_out_to_every_peer() -> None:
    listeners = [UdpTransport(("127.0.0.1", 0)) for _ in range(2)]
    async with listeners[0], listeners[1]:
        peers = [("127.0.0.1", listener.local_port) for listener in listeners]
        async with UdpTransport(("127.0.0.4", 0), peers=peers) as sender:
            sender.send(ADVERT, VRRP_MULTICAST)
            results = [await _recv(listener) for listener in listeners]
    for result in results:
        assert isinstance(result, Received)
        assert result.header.src == IPv4Address("127.0.0.4")


async def test_udp_transport_short_datagram_returns_drop() -> None:
    async with UdpTransport(("127.0.0.1", 0)) as receiver:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"\x21\x33\x64", ("127.0.0.1", receiver.local_port))
        got = await _recv(receiver)
    assert isinstance(got, Drop)
    assert got.reason is DropReason.TOO_SHORT


async def test_udp_transport_vrid_filter_returns_unknown_vrid_drop() -> None:
    async with UdpTransport(("127.0.0.1", 0), vrid_filter={7}) as receiver:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(ADVERT, ("127.0.0.1", receiver.local_port))
            wanted = bytes([0x21, 7]) + ADVERT[2:]
            raw.sendto(wanted, ("127.0.0.1", receiver.local_port))
        first = await _recv(receiver)
        second = await _recv(receiver)
    assert isinstance(first, Drop)
    assert first.reason is DropReason.UNKNOWN_VRID
    assert isinstance(second, Received)
    assert second.payload == wanted


def test_udp_transport_unspecified_bind_address_is_rejected() -> None:
    with pytest.raises(ValueError, match="specific address"):
        UdpTransport(("0.0.0.0", 0))


async def test_udp_transport_port_in_use_raises_transport_error() -> None:
    async with UdpTransport(("127.0.0.1", 0)) as first:
        with pytest.raises(TransportError):
            async with UdpTransport(("127.0.0.1", first.local_port)):
                pass


async def test_udp_transport_send_before_open_raises_transport_error() -> None:
    with pytest.raises(TransportError):
        UdpTransport(("127.0.0.1", 0)).send(ADVERT, IPv4Address("127.0.0.2"))


class _RecordingTransport:
    """A stand-in transport that records sends and replays queued receives."""

    def __init__(self, incoming: list[Received | Drop] | None = None) -> None:
        self.sent: list[tuple[bytes, IPv4Address]] = []
        self.incoming = list(incoming or [])
        self.local_address = IPv4Address("192.0.2.1")

    async def __aenter__(self) -> _RecordingTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def send(self, payload: bytes, dst: IPv4Address) -> None:
        self.sent.append((payload, dst))

    async def recv(self) -> Received | Drop:
        if not self.incoming:
            raise LookupError("nothing left to receive")
        return self.incoming.pop(0)


def _numbered_received(count: int) -> list[Received | Drop]:
    header = IpHeader(IPv4Address("192.0.2.2"), IPv4Address("192.0.2.1"), 255, 0, 0xC0, 40, 20)
    return [Received(payload=i.to_bytes(4, "big"), header=header) for i in range(count)]


def _lossy_sends(seed: int, loss: float, count: int) -> tuple[LossyTransport, list[int]]:
    inner = _RecordingTransport()
    lossy = LossyTransport(inner, send_loss=loss, seed=seed)
    for i in range(count):
        lossy.send(i.to_bytes(4, "big"), IPv4Address("192.0.2.2"))
    return lossy, [int.from_bytes(payload, "big") for payload, _ in inner.sent]


def test_lossy_transport_send_loss_drops_roughly_the_fraction_asked() -> None:
    lossy, delivered = _lossy_sends(seed=1, loss=0.3, count=2000)
    assert lossy.sends_lost + len(delivered) == 2000
    assert 0.25 < lossy.sends_lost / 2000 < 0.35


def test_lossy_transport_same_seed_loses_the_same_packets() -> None:
    _, first = _lossy_sends(seed=42, loss=0.5, count=200)
    _, again = _lossy_sends(seed=42, loss=0.5, count=200)
    _, other = _lossy_sends(seed=43, loss=0.5, count=200)
    assert first == again
    assert first != other


async def test_lossy_transport_recv_loss_skips_lost_packets_in_order() -> None:
    incoming = _numbered_received(400)
    lossy = LossyTransport(_RecordingTransport(incoming), recv_loss=0.5, seed=7)
    got: list[int] = []
    while lossy.receives_lost + len(got) < 300:
        result = await lossy.recv()
        assert isinstance(result, Received)
        got.append(int.from_bytes(result.payload, "big"))
    assert got == sorted(got)
    assert 0.4 < lossy.receives_lost / (lossy.receives_lost + len(got)) < 0.6


async def test_lossy_transport_blocked_cuts_both_directions_until_unblocked() -> None:
    inner = _RecordingTransport(_numbered_received(3))
    lossy = LossyTransport(inner, seed=0)
    lossy.blocked = True
    lossy.send(b"lost", IPv4Address("192.0.2.2"))
    with pytest.raises(LookupError):
        await lossy.recv()  # every queued packet was swallowed while blocked
    assert inner.sent == []
    assert lossy.receives_lost == 3
    lossy.blocked = False
    lossy.send(b"kept", IPv4Address("192.0.2.2"))
    assert inner.sent == [(b"kept", IPv4Address("192.0.2.2"))]


async def test_lossy_transport_over_udp_exchanges_when_lossless() -> None:
    port = _free_port("127.0.0.2")
    a = LossyTransport(UdpTransport(("127.0.0.2", port)), seed=3)
    b = LossyTransport(UdpTransport(("127.0.0.3", port)), seed=3)
    async with a, b:
        assert a.local_address == IPv4Address("127.0.0.2")
        a.send(ADVERT, b.local_address)
        got = await _recv(b)
    assert isinstance(got, Received)
    assert got.payload == ADVERT


def test_lossy_transport_loss_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        LossyTransport(_RecordingTransport(), send_loss=1.5)
