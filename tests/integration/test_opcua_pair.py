"""A Tandem pair as a non-transparent hot redundant OPC UA server set (OPC UA Part 4, 6.6.2).

Two `tandem run` nodes on loopback (tests/netns/ha_cluster.py) each serve OPC UA. A client
that behaves as Part 4 asks (read ServiceLevel of every server of ServerUriArray, read from
the highest) runs alongside: after kill -9 of the master the survivor's level becomes the
highest within 1 s of its takeover, after the switchback it falls below the master again,
and the values it reads never go back in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from asyncua import Client, ua

from tests.netns.ha_cluster import HaCluster, TandemNode, first_publish, loopback_cluster

pytestmark = pytest.mark.slow

TAG = "plc1/fast/counter"
NAMESPACE = "urn:tandem:line1"  # the cluster's: the same NodeIds on both servers
START_S = 120.0  # generous: each node loads the OPC UA standard address space at start
READ_PERIOD_S = 0.02
TAKEOVER_TO_LEVEL_S = 1.0


@dataclass(slots=True)
class Reading:
    at: float
    levels: dict[str, int | None]
    chosen: str | None
    stamp: datetime | None


@dataclass
class RedundantClient:
    """A Part 4 client: ServiceLevel of each server, values from the highest one."""

    urls: dict[str, str]
    readings: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    async def _run(self) -> None:
        clients: dict[str, Client | None] = dict.fromkeys(self.urls)
        retry_at: dict[str, float] = dict.fromkeys(self.urls, 0.0)
        try:
            while not self._stop.is_set():
                levels: dict[str, int | None] = {}
                for name in self.urls:
                    levels[name] = await self._level(name, clients, retry_at)
                live = {n: lv for n, lv in levels.items() if lv is not None}
                chosen = max(live, key=lambda n: live[n]) if live else None
                stamp = await self._stamp(clients[chosen]) if chosen else None
                self.readings.append(Reading(time.time(), levels, chosen, stamp))
                await asyncio.sleep(READ_PERIOD_S)
        finally:
            for client in clients.values():
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 2)

    async def _level(
        self, name: str, clients: dict[str, Client | None], retry_at: dict[str, float]
    ) -> int | None:
        client = clients[name]
        if client is None:
            if time.monotonic() < retry_at[name]:
                return None
            client = Client(self.urls[name], timeout=1.0)
            try:
                await asyncio.wait_for(client.connect(), 3)
            except Exception:
                retry_at[name] = time.monotonic() + 0.2
                return None
            clients[name] = client
        try:
            node = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel))
            return int(await asyncio.wait_for(node.read_value(), 1))
        except Exception as exc:
            self.errors.append(f"{name}: {exc!r}")
            clients[name] = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 1)
            return None

    async def _stamp(self, client: Client | None) -> datetime | None:
        if client is None:
            return None
        try:
            ns = await client.get_namespace_index(NAMESPACE)
            node = client.get_node(f"ns={ns};s={TAG}")
            value = await asyncio.wait_for(node.read_data_value(raise_on_bad_status=False), 1)
        except Exception:
            return None
        good = value.StatusCode is not None and value.StatusCode.is_good()
        return value.SourceTimestamp if good else None

    def first(self, after: float, ok: object) -> Reading | None:
        assert callable(ok)
        return next((r for r in self.readings if r.at >= after and ok(r)), None)


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
