"""A Tandem pair as a non-transparent hot redundant OPC UA server set (OPC UA Part 4, 6.6.2).

Two `tandem run` nodes on loopback (tests/netns/ha_cluster.py) each serve OPC UA. A client
that behaves as Part 4 asks (read ServiceLevel of every server of ServerUriArray, read from
the highest) runs alongside: after kill -9 of the master the survivor's level becomes the
highest within 1 s of its takeover, after the switchback it falls below the master again,
and the values it reads never go back in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from asyncua import Client, ua

from tests.integration.opcua_helpers import Reading, RedundantClient
from tests.netns.ha_cluster import HaCluster, TandemNode, first_publish, loopback_cluster

pytestmark = pytest.mark.slow

START_S = 120.0  # generous: each node loads the OPC UA standard address space at start
TAKEOVER_TO_LEVEL_S = 1.0


async def _read_redundancy(url: str) -> tuple[int, list[str], int, dict[str, list[str]]]:
    async with Client(url, timeout=2.0) as client:
        found = {s.ApplicationUri: list(s.DiscoveryUrls or []) for s in await client.find_servers()}
        level = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel)).read_value()
        uris = await client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerRedundancy_ServerUriArray)
        ).read_value()
        support = await client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerRedundancy_RedundancySupport)
        ).read_value()
    return int(level), list(uris), int(support), found


def url_of(node: TandemNode) -> str:
    url = node.plan.opcua_url
    assert url is not None
    return url


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("opcua-pair"), opcua=True)
    try:
        cluster.start(timeout=START_S)
        yield cluster
    finally:
        cluster.close()


def wait_levels(client: RedundantClient, ok: object, timeout: float, what: str) -> Reading:
    assert callable(ok)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.readings and ok(client.readings[-1]):
            return client.readings[-1]
        time.sleep(0.05)
    last = client.readings[-1] if client.readings else None
    raise AssertionError(f"{what} not within {timeout} s; last reading {last}")


def test_opcua_pair_redundancy_nodes_name_both_servers(pair: HaCluster) -> None:
    a, b = pair.a, pair.b
    for node, peer in ((a, b), (b, a)):
        _, uris, support, found = asyncio.run(_read_redundancy(url_of(node)))
        assert uris == [node.plan.opcua_uri, peer.plan.opcua_uri]
        assert support == ua.RedundancySupport.Hot
        # FindServers on one node is enough to find the other (Part 4, 6.6.2.4.5.1).
        assert set(found) == set(uris)
        assert found[peer.plan.opcua_uri] == [url_of(peer)]


def test_opcua_pair_master_killed_survivor_highest_then_switchback(pair: HaCluster) -> None:
    a, b = pair.a, pair.b
    client = RedundantClient({a.name: url_of(a), b.name: url_of(b)})
    client.start()
    try:
        steady = wait_levels(
            client,
            lambda r: r.levels[a.name] == 255 and (r.levels[b.name] or 0) >= 200,
            60,
            "master 255, hot standby healthy",
        )
        assert steady.levels[b.name] is not None and 200 <= steady.levels[b.name] < 255

        killed = a.kill()
        pair.wait_role(b, "MASTER", 15)
        took = first_publish(pair.audit.arrivals(), killed, b.name)
        highest = wait_levels(
            client, lambda r: r.levels[b.name] == 255, 15, f"{b.name} at 255 after the kill"
        )
        assert took is not None
        rose = client.first(killed, lambda r: r.levels[b.name] == 255)
        assert rose is not None and rose.at - took < TAKEOVER_TO_LEVEL_S, (took, rose)
        assert highest.chosen == b.name

        a.start()
        pair.wait_steady(a, START_S)
        back = wait_levels(
            client,
            lambda r: r.levels[a.name] == 255 and (r.levels[b.name] or 0) < 255,
            30,
            f"{a.name} master again, {b.name} below it",
        )
        assert back.chosen == a.name
        time.sleep(1.0)
    finally:
        client.stop()

    stamps = [(r.at, r.chosen, r.stamp) for r in client.readings if r.stamp is not None]
    assert len(stamps) > 50, f"too few values read: {len(stamps)}"
    back_in_time = [
        (earlier, later)
        for earlier, later in zip(stamps, stamps[1:], strict=False)
        if later[2] < earlier[2]
    ]
    assert not back_in_time, f"values went back in time: {back_in_time[:3]}"
    servers = {chosen for _, chosen, _ in stamps}
    assert servers == {a.name, b.name}, servers
