"""Split brain of the heartbeat link alone: both nodes VRRP MASTER, still one publisher per slot.

Only the A<->B path is cut (a blackhole route to the peer plus strict reverse-path filtering
in each node's namespace), so VRRP adverts and the peer link are gone while both nodes keep
the broker and the PLC. The fencing
rule must hold: a VRRP master acquires a term only when no other node was active on the broker
for three adverts, so node-b, seeing node-a's heartbeats, never publishes; after the link heals
exactly one master remains and no slot was lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.ha_cluster import (
    HaCluster,
    assert_exactly_once,
    cut_peer_link,
    heal_peer_link,
    netns_cluster,
)
from tests.netns.netns import Topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

STEADY_S = 2.0
PARTITION_S = 4.0
SETTLE_S = 2.5


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[HaCluster]:
    with Topology(3) as topology:
        cluster = netns_cluster(topology, tmp_path, standby="hot")
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()


def vrrp_state(cluster: HaCluster, name: str) -> str | None:
    status = cluster.node(name).status()
    return None if status is None or status.get("vrrp") is None else status["vrrp"]["state"]


def test_split_brain_peer_link_cut_one_publisher_and_one_master_after_healing(
    pair: HaCluster,
) -> None:
    a, b = pair.a, pair.b
    time.sleep(STEADY_S)
    start = time.time() - STEADY_S

    cut_peer_link(pair)
    cut = time.time()
    try:
        pair.wait(lambda: vrrp_state(pair, b.name) == "MASTER", 10, "node-b VRRP MASTER")
        time.sleep(PARTITION_S)
        # Both claim VRRP; only the term holder may publish.
        assert vrrp_state(pair, a.name) == "MASTER", pair.logs()
        assert vrrp_state(pair, b.name) == "MASTER", pair.logs()
        # B is the VRRP master too, but it never got past waiting for the broker to go quiet.
        b_status = b.status()
        assert b_status is not None and b_status["phase"] == "quiet", pair.logs()
        assert not b_status["publishing"], pair.logs()
        a_status = a.status()
        assert a_status is not None and a_status["publishing"], pair.logs()
        assert pair.publishing_now(a.name), pair.logs()
    finally:
        heal_peer_link(pair)
    healed = time.time()

    pair.wait_steady(a, 15)
    time.sleep(SETTLE_S)
    verdict = assert_exactly_once(pair, start, time.time())

    assert [vrrp_state(pair, n.name) for n in pair.nodes] == ["MASTER", "BACKUP"], pair.logs()
    a_terms = [t for t, nodes in verdict.terms.items() if nodes == (a.name,)]
    during = [
        x
        for x in pair.audit.arrivals()
        if cut <= x.at <= healed and x.delivered.source_node == b.name
    ]
    # If the fenced node ever got a message out, it carries a lower term than the holder's.
    assert all(x.delivered.term < max(a_terms) for x in during), verdict.describe()
