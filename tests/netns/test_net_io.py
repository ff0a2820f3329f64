"""Raw VRRP sockets, VIPs and gratuitous ARP between real network namespaces, incl. keepalived."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from tandem.net.raw import RawTransport
from tandem.net.transport import LossyTransport, Received
from tandem.net.vip import ETH_P_ARP, VipManager, send_gratuitous_arp
from tandem.vrrp import packet
from tandem.vrrp.types import VRRP_MULTICAST, VRRP_TTL, Advert, Drop, DropReason
from tests.netns.netns import Netns, Node, Topology, veth_pair

pytestmark = pytest.mark.netns

RECV_TIMEOUT = 5.0
VIP = IPv4Address("10.77.0.250")


def _advert(vrid: int = 51, priority: int = 100) -> Advert:
    return Advert(
        version=2,
        vrid=vrid,
        priority=priority,
        interval=1.0,
        addresses=(VIP,),
        auth_type=packet.AUTH_PASS,
        auth_data=packet.pass_auth_data(b"secret"),
    )


def _encoded(node_src: Node, dst: IPv4Address, vrid: int = 51, priority: int = 100) -> bytes:
    return packet.encode(_advert(vrid, priority), node_src.address.ip, dst)


@contextlib.asynccontextmanager
async def _open(node: Node, **kw: Any) -> AsyncIterator[RawTransport]:
    """A RawTransport whose socket lives in the node's namespace."""
    transport = RawTransport(node.ifname, **kw)
    with node.ns.entered():
        await transport.__aenter__()
    try:
        yield transport
    finally:
        await transport.__aexit__(None, None, None)


async def _recv(transport: RawTransport | LossyTransport) -> Received | Drop:
    return await asyncio.wait_for(transport.recv(), RECV_TIMEOUT)


async def _nothing_arrives(transport: RawTransport, within: float = 0.5) -> bool:
    try:
        await asyncio.wait_for(transport.recv(), within)
    except TimeoutError:
        return True
    return False


def _addresses(ns: Netns, ifname: str) -> set[str]:
    shown = ns.run(["ip", "-4", "-o", "addr", "show", "dev", ifname]).stdout
    return {line.split()[3] for line in shown.splitlines()}


async def test_raw_transport_unicast_between_namespaces_delivers_advert(
    topology: Topology,
) -> None:
    a, b = topology[0], topology[1]
    async with _open(a) as ta, _open(b) as tb:
        assert ta.local_address == a.address.ip  # default: the interface's address
        ta.send(_encoded(a, b.address.ip), b.address.ip)
        got = await _recv(tb)

    assert isinstance(got, Received)
    assert got.header.src == a.address.ip
    assert got.header.dst == b.address.ip
    assert got.header.ttl == VRRP_TTL
    assert got.header.tos == 0xC0
    decoded = packet.decode(got.payload, got.header.src, got.header.dst)
    assert isinstance(decoded, Advert)
    assert (decoded.vrid, decoded.priority, decoded.addresses) == (51, 100, (VIP,))
    assert packet.auth_matches(packet.pass_auth_data(b"secret"), decoded.auth_data)


async def test_raw_transport_multicast_reaches_every_node_on_the_bridge(
    topology: Topology,
) -> None:
    a, b, c = topology[0], topology[1], topology[2]
    async with (
        _open(a, multicast=True) as ta,
        _open(b, multicast=True) as tb,
        _open(c, multicast=True) as tc,
    ):
        ta.send(_encoded(a, VRRP_MULTICAST), VRRP_MULTICAST)
        results = [await _recv(tb), await _recv(tc)]
        # IP_MULTICAST_LOOP is off, so the sender does not hear itself.
        assert await _nothing_arrives(ta)

    for got in results:
        assert isinstance(got, Received)
        assert got.header.src == a.address.ip
        assert got.header.dst == VRRP_MULTICAST
        assert got.header.ttl == VRRP_TTL


async def test_raw_transport_unicast_packet_for_other_local_address_is_filtered(
    topology: Topology,
) -> None:
    a, b = topology[0], topology[1]
    other = IPv4Address("10.77.0.99")
    b.ns.run(["ip", "addr", "add", f"{other}/24", "dev", b.ifname])
    async with _open(a) as ta, _open(b) as tb:
        ta.send(_encoded(a, other, priority=1), other)
        ta.send(_encoded(a, b.address.ip, priority=2), b.address.ip)
        got = await _recv(tb)
    assert isinstance(got, Received)
    assert got.payload[2] == 2  # the advert to .99 never surfaced


async def test_raw_transport_multicast_mode_skips_unicast_packets(topology: Topology) -> None:
    a, b = topology[0], topology[1]
    async with (
        _open(a) as unicast_sender,
        _open(a, multicast=True) as multicast_sender,
        _open(b, multicast=True) as tb,
    ):
        unicast_sender.send(_encoded(a, b.address.ip, priority=1), b.address.ip)
        await asyncio.sleep(0.2)  # let the unicast one arrive first
        multicast_sender.send(_encoded(a, VRRP_MULTICAST, priority=2), VRRP_MULTICAST)
        got = await _recv(tb)
    assert isinstance(got, Received)
    assert got.payload[2] == 2
    assert tb.filtered == 1


async def test_raw_transport_vrid_filter_returns_unknown_vrid_drop(topology: Topology) -> None:
    a, b = topology[0], topology[1]
    async with _open(a) as ta, _open(b, vrid_filter={51}) as tb:
        ta.send(_encoded(a, b.address.ip, vrid=52), b.address.ip)
        ta.send(_encoded(a, b.address.ip, vrid=51), b.address.ip)
        first, second = await _recv(tb), await _recv(tb)
    assert isinstance(first, Drop)
    assert first.reason is DropReason.UNKNOWN_VRID
    assert isinstance(second, Received)
    assert second.payload[1] == 51


async def test_raw_transport_own_address_as_source_is_own_advert_drop(
    topology: Topology,
) -> None:
    a, b = topology[0], topology[1]
    # A receiver configured with the sender's address sees that packet as its own echo.
    async with (
        _open(a, multicast=True) as ta,
        _open(b, multicast=True, local_address=a.address.ip) as tb,
    ):
        ta.send(_encoded(a, VRRP_MULTICAST), VRRP_MULTICAST)
        got = await _recv(tb)
    assert isinstance(got, Drop)
    assert got.reason is DropReason.OWN_ADVERT


async def test_raw_transport_cut_link_loses_traffic_until_restored(topology: Topology) -> None:
    a, b = topology[0], topology[1]
    async with _open(a) as ta, _open(b) as tb:
        ta.send(_encoded(a, b.address.ip), b.address.ip)
        assert isinstance(await _recv(tb), Received)  # ARP resolved before the cut
        topology.isolate(0)
        ta.send(_encoded(a, b.address.ip), b.address.ip)
        assert await _nothing_arrives(tb)
        topology.restore(0)
        topology.cut(1)
        ta.send(_encoded(a, b.address.ip), b.address.ip)
        assert await _nothing_arrives(tb)
        topology.restore(1)
        deadline = time.monotonic() + RECV_TIMEOUT
        got: Received | Drop | None = None
        while got is None and time.monotonic() < deadline:
            # The carrier takes a moment to come back; keep advertising like VRRP would.
            ta.send(_encoded(a, b.address.ip), b.address.ip)
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(tb.recv(), 0.3)
        assert isinstance(got, Received)


async def test_lossy_transport_blocked_over_raw_sockets_cuts_and_restores(
    topology: Topology,
) -> None:
    a, b = topology[0], topology[1]
    async with _open(a) as ta, _open(b) as tb:
        lossy = LossyTransport(ta, seed=1)
        lossy.blocked = True
        lossy.send(_encoded(a, b.address.ip, priority=1), b.address.ip)
        lossy.blocked = False
        lossy.send(_encoded(a, b.address.ip, priority=2), b.address.ip)
        got = await _recv(tb)
    assert isinstance(got, Received)
    assert got.payload[2] == 2


def test_vip_manager_add_and_remove_are_visible_and_idempotent(topology: Topology) -> None:
    node = topology[0]
    vips = [IPv4Interface("10.77.0.250/24"), IPv4Interface("192.0.2.10/32")]
    with node.ns.entered():
        manager = VipManager(node.ifname).open()
    try:
        manager.add(vips)
        manager.add(vips)  # already there: fine
        assert {str(v) for v in vips} <= _addresses(node.ns, node.ifname)
        assert manager.added == frozenset(vips)
        manager.remove(vips[:1])
        manager.remove(vips[:1])  # already gone: fine
        shown = _addresses(node.ns, node.ifname)
        assert str(vips[0]) not in shown
        assert str(vips[1]) in shown
        assert str(node.address) in shown  # the node's own address is untouched
    finally:
        manager.close()
    # remove_on_close took away what was still added.
    assert str(vips[1]) not in _addresses(node.ns, node.ifname)


def test_vip_manager_missing_interface_raises_transport_error(topology: Topology) -> None:
    from tandem.net.transport import TransportError

    with topology[0].ns.entered(), pytest.raises(TransportError):
        VipManager("nosuchif0").open()


def _arp_announcements(
    sock: socket.socket, want: int, within: float
) -> list[tuple[bytes, IPv4Address]]:
    """(sender MAC, sender IP) of ARP requests with sender IP == target IP, until `want` seen."""
    seen: list[tuple[bytes, IPv4Address]] = []
    deadline = time.monotonic() + within
    while len(seen) < want and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            break
        arp = frame[14:42]
        if len(arp) < 28 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
            continue
        op = struct.unpack("!H", arp[6:8])[0]
        sha, spa, tpa = arp[8:14], IPv4Address(arp[14:18]), IPv4Address(arp[24:28])
        if op == 1 and spa == tpa:
            seen.append((sha, spa))
    return seen


def _mac(ns: Netns, ifname: str) -> bytes:
    shown = ns.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
    return bytes.fromhex(shown.replace(":", ""))


def test_gratuitous_arp_is_seen_by_peer_namespace(topology: Topology) -> None:
    a, b = topology[0], topology[1]
    with b.ns.entered():
        listener = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    with listener:
        listener.bind((b.ifname, ETH_P_ARP))
        with a.ns.entered():
            sent = send_gratuitous_arp(a.ifname, [VIP, IPv4Interface("10.77.0.251/24")], count=2)
        # Ask for one more than sent, so a duplicate would be counted too.
        seen = _arp_announcements(listener, want=5, within=1.0)
    assert sent == 4
    mac_a = _mac(a.ns, a.ifname)
    assert seen.count((mac_a, VIP)) == 2
    assert seen.count((mac_a, IPv4Address("10.77.0.251"))) == 2


def test_gratuitous_arp_updates_peer_neighbour_entry(topology: Topology) -> None:
    a, b = topology[0], topology[1]
    # The peer knows the VIP at a stale MAC; an announcement must move it to node a.
    stale = "02:00:00:00:00:99"
    b.ns.run(["ip", "neigh", "replace", str(VIP), "lladdr", stale, "dev", b.ifname, "nud", "stale"])
    with a.ns.entered():
        send_gratuitous_arp(a.ifname, [VIP])
    mac_a = _mac(a.ns, a.ifname).hex(":")
    deadline = time.monotonic() + RECV_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        shown = b.ns.run(["ip", "neigh", "show", str(VIP), "dev", b.ifname]).stdout
        if mac_a in shown:
            break
        time.sleep(0.05)
    assert mac_a in shown


def test_topology_teardown_removes_namespaces_and_processes(
    make_topology: Callable[..., Topology],
) -> None:
    topology = make_topology(2)
    names = [node.ns.name for node in topology.nodes]
    sleeper = topology[0].ns.popen(["sleep", "300"])
    topology.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert sleeper.poll() is not None
    assert not any(name in listed for name in names)


def test_veth_pair_links_two_standalone_namespaces() -> None:
    with Netns("x") as left, Netns("y") as right:
        if_a, if_b = veth_pair(left, right, "10.78.0.1/30", "10.78.0.2/30")
        assert len(if_a) <= 15 and len(if_b) <= 15
        assert "10.78.0.1/30" in _addresses(left, if_a)
        assert "10.78.0.2/30" in _addresses(right, if_b)


KEEPALIVED_CONF = """\
global_defs {{
  vrrp_garp_interval 0
  vrrp_gna_interval 0
  vrrp_version 2
}}
vrrp_instance VI_1 {{
  state MASTER
  interface {ifname}
  virtual_router_id 51
  priority 255
  advert_int 1
  authentication {{
    auth_type PASS
    auth_pass abcdefgh
  }}
  virtual_ipaddress {{
    {vip}/24
  }}
{unicast}}}
"""
UNICAST_PEERING = """\
  unicast_src_ip {src}
  unicast_peer {{
    {peer}
  }}
"""


@pytest.fixture(params=["unicast", "multicast"])
def keepalived_on_node0(
    request: pytest.FixtureRequest, topology: Topology, tmp_path: Path
) -> subprocess.Popen[bytes]:
    """keepalived 2.2.7 as address owner (priority 255, so MASTER at once) on node 0."""
    a, b = topology[0], topology[1]
    unicast = (
        UNICAST_PEERING.format(src=a.address.ip, peer=b.address.ip)
        if request.param == "unicast"
        else ""
    )
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(ifname=a.ifname, vip=VIP, unicast=unicast))
    log_path = tmp_path / "keepalived.log"
    argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(conf)]
    for flag, name in (("-p", "main"), ("-r", "vrrp"), ("-c", "check")):
        argv += [flag, str(tmp_path / f"{name}.pid")]
    with log_path.open("wb") as log_file:
        # The Topology fixture stops this process when it deletes the namespace.
        return a.ns.popen(argv, stdout=log_file, stderr=subprocess.STDOUT)


def _conf_of(process: subprocess.Popen[bytes]) -> Path:
    argv = [str(arg) for arg in process.args]  # type: ignore[union-attr]
    return Path(argv[argv.index("-f") + 1])


async def test_raw_transport_receives_real_keepalived_adverts(
    topology: Topology, keepalived_on_node0: subprocess.Popen[bytes]
) -> None:
    a, b = topology[0], topology[1]
    multicast = "unicast_peer" not in _conf_of(keepalived_on_node0).read_text()
    expected_dst = VRRP_MULTICAST if multicast else b.address.ip
    adverts: list[Received] = []
    async with _open(b, multicast=multicast) as tb:
        deadline = time.monotonic() + 15.0
        while len(adverts) < 2 and time.monotonic() < deadline:
            assert keepalived_on_node0.poll() is None, "keepalived exited"
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(tb.recv(), 1.0)
                assert isinstance(got, Received)
                adverts.append(got)
        a.ns.stop(keepalived_on_node0)
        # Resigning on SIGTERM sends one priority-0 advert.
        resign = await _recv(tb)
        while isinstance(resign, Received) and resign.payload[2] != 0:
            resign = await _recv(tb)

    assert len(adverts) >= 2
    for got in adverts:
        assert got.header.src == a.address.ip
        assert got.header.dst == expected_dst
        assert got.header.ttl == VRRP_TTL
        decoded = packet.decode(got.payload, got.header.src, got.header.dst)
        assert isinstance(decoded, Advert)
        assert (decoded.version, decoded.vrid, decoded.priority) == (2, 51, 255)
        assert decoded.addresses == (VIP,)
        assert decoded.auth_data == b"abcdefgh"
    assert adverts[1].header.ident != adverts[0].header.ident
    assert isinstance(resign, Received)
    assert resign.payload[2] == 0
