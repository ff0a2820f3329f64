"""Zero-trust VRRP input and interface tracking, between real namespaces.

A third host that sends perfectly valid adverts (right VRID, password and VIPs, top
priority) must not move the role when it is not a configured peer; a tracked link going down
must put the instance in FAULT (or lower its priority) as soon as the kernel says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tandem.net.driver import VrrpDriver
from tandem.net.raw import RawTransport
from tandem.vrrp import packet
from tandem.vrrp.types import InstanceConfig, State
from tests.netns.netns import Netns, Node, Topology, link_down, link_up, veth_pair
from tests.netns.vrrp_nodes import NotifyLog, VrrpNode, running_nodes, seed_pair

pytestmark = pytest.mark.netns

VIP = IPv4Interface("10.77.0.100/24")
# The kernel reports the link change in microseconds; this only has to catch polling.
LINK_FAULT_BOUND = 1.0


def _config(me: Node, peer: Node, priority: int) -> InstanceConfig:
    return InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=priority,
        advert_interval=0.1,
        local_address=me.address.ip,
        version=3,
        vips=(VIP,),
        unicast_peers=(peer.address.ip,),
    )  # source_check defaults to PEERS_ONLY: Tandem's native rule


@contextlib.asynccontextmanager
async def _driver(node: Node, config: InstanceConfig) -> AsyncIterator[VrrpDriver]:
    transport = RawTransport(node.ifname, local_address=node.address.ip)
    with node.ns.entered():
        await transport.__aenter__()
    driver = VrrpDriver(config, transport)
    task = asyncio.create_task(driver.run())
    try:
        yield driver
    finally:
        driver.stop()
        await asyncio.wait_for(task, 5)
        await transport.__aexit__(None, None, None)


async def _wait_state(driver: VrrpDriver, state: State, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while driver.state is not state:
            await asyncio.sleep(0.01)


async def test_native_driver_stranger_with_valid_adverts_is_dropped(topology: Topology) -> None:
    a, b, stranger = topology[0], topology[1], topology[2]
    config_a, config_b = _config(a, b, 100), _config(b, a, 90)
    forged = packet.advert_for(config_a, 254, config_a.advert_interval)  # valid in every field
    sender = RawTransport(stranger.ifname, local_address=stranger.address.ip)
    with stranger.ns.entered():
        await sender.__aenter__()
    try:
        async with _driver(a, config_a) as da, _driver(b, config_b) as db:
            await _wait_state(da, State.MASTER)
            await _wait_state(db, State.BACKUP)
            for _ in range(30):  # 3 s of a top-priority "master" at 0.1 s
                for target in (a.address.ip, b.address.ip):
                    sender.send(packet.encode(forged, stranger.address.ip, target), target)
                await asyncio.sleep(0.1)
            assert (da.state, db.state) == (State.MASTER, State.BACKUP)
            assert da.stats.drops.get("unknown_source", 0) >= 25
            assert db.stats.drops.get("unknown_source", 0) >= 25
            assert db.machine.master_address == a.address.ip
            assert da.stats.transition_counts == {
                "startup": 1,
                "master_down_timer_expired": 1,
            }
    finally:
        await sender.__aexit__(None, None, None)


def _stranger_floods(stranger: Node, target: IPv4Address, config: InstanceConfig) -> None:
    """Send 2 s of valid priority-254 v2 adverts from a host that is not a peer."""
    forged = packet.advert_for(config, 254, config.advert_interval)

    async def flood() -> None:
        sender = RawTransport(stranger.ifname, local_address=stranger.address.ip)
        with stranger.ns.entered():
            await sender.__aenter__()
        try:
            for _ in range(20):
                sender.send(packet.encode(forged, stranger.address.ip, target), target)
                await asyncio.sleep(0.1)
        finally:
            await sender.__aexit__(None, None, None)

    asyncio.run(flood())


@pytest.mark.parametrize("checked", [True, False])
def test_engine_check_unicast_src_drops_stranger_like_keepalived(
    make_topology: Callable[..., Topology], tmp_path: Path, checked: bool
) -> None:
    topo = make_topology(3)
    notify = NotifyLog(tmp_path)
    extra = ("check_unicast_src",) if checked else ()
    master_spec, backup_spec = seed_pair(topo[0], topo[1], extra=extra)
    master = VrrpNode("tandem", topo[0].ns, master_spec, tmp_path / "master", notify)
    backup = VrrpNode(
        "tandem", topo[1].ns, replace(backup_spec, extra=extra), tmp_path / "b", notify
    )
    mirror = InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=254,
        advert_interval=1.0,
        local_address=topo[2].address.ip,
        vips=(VIP,),
        auth_pass=b"abcdefgh",
    )
    with running_nodes([master, backup]):
        master.start_and_wait("MASTER", timeout=20)
        backup.start_and_wait("BACKUP")
        flooded = time.time()
        _stranger_floods(topo[2], topo[0].address.ip, mirror)
        drops = master.stats()["drops"]
        if checked:
            assert notify.of("master", flooded) == []  # still MASTER: the stranger was ignored
            assert drops.get("unknown_source", 0) >= 15
        else:
            # keepalived's default believes any sender: the master yields to priority 254.
            notify.wait_for("master", "BACKUP", since=flooded, timeout=5)
            assert "unknown_source" not in drops


def _tracked_pair(
    make_topology: Callable[..., Topology], tmp_path: Path, weight: int | None
) -> tuple[VrrpNode, VrrpNode, NotifyLog, Netns, str]:
    """The seed pair at v3 0.1 s, the master also tracking a spare veth link."""
    topo = make_topology(2)
    spare = Netns("spare")
    topo._namespaces.append(spare)  # torn down with the topology
    tracked, _ = veth_pair(topo[0].ns, spare, None, None)
    entry = tracked if weight is None else f"{tracked} weight {weight}"
    notify = NotifyLog(tmp_path)
    master_spec, backup_spec = seed_pair(
        topo[0], topo[1], version=3, advert_int=0.1, extra=("track_interface {", entry, "}")
    )
    backup_spec = replace(backup_spec, nopreempt=False)
    master = VrrpNode("tandem", topo[0].ns, master_spec, tmp_path / "master", notify)
    backup = VrrpNode("tandem", topo[1].ns, backup_spec, tmp_path / "backup", notify)
    return master, backup, notify, topo[0].ns, tracked


def test_engine_track_interface_link_down_faults_within_bound(
    make_topology: Callable[..., Topology], tmp_path: Path
) -> None:
    master, backup, notify, ns, tracked = _tracked_pair(make_topology, tmp_path, None)
    with running_nodes([master, backup]):
        master.start_and_wait("MASTER")
        backup.start_and_wait("BACKUP")
        down_at = time.time()
        link_down(ns, tracked)
        fault = notify.wait_for("master", "FAULT", since=down_at, timeout=5)
        took = notify.wait_for("backup", "MASTER", since=down_at, timeout=5)
        print(
            f"link down -> FAULT {fault.time - down_at:.3f} s, MASTER {took.time - down_at:.3f} s"
        )
        assert fault.time - down_at < LINK_FAULT_BOUND
        assert not master.has_vips()
        up_at = time.time()
        link_up(ns, tracked)
        notify.wait_for("master", "BACKUP", since=up_at, timeout=5)
        # Priority 100 against 90, both preempting: the master takes the role back.
        notify.wait_for("master", "MASTER", since=up_at, timeout=5)


def test_engine_track_interface_weight_lowers_priority_instead_of_fault(
    make_topology: Callable[..., Topology], tmp_path: Path
) -> None:
    master, backup, notify, ns, tracked = _tracked_pair(make_topology, tmp_path, -20)
    with running_nodes([master, backup]):
        master.start_and_wait("MASTER")
        backup.start_and_wait("BACKUP")
        down_at = time.time()
        link_down(ns, tracked)
        # 100 - 20 = 80 < 90: the backup preempts, the master steps down, never FAULT.
        notify.wait_for("backup", "MASTER", since=down_at, timeout=5)
        stepped = notify.wait_for("master", "BACKUP", since=down_at, timeout=5)
        assert stepped.priority == 80
        assert all(e.state != "FAULT" for e in notify.of("master", down_at))
