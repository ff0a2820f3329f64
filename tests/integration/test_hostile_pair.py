"""A live pair under a table of hostile inputs: nobody without the secret can crash, stall,
fence or move it, and delivery stays exactly once (tests/integration/hostile.py has the cases).

One loopback pair (VRRP over UDP, real mosquitto, the PLC simulator, the audit) takes every
case in turn. After each: both nodes are up, the master is still the master and publishes again
within a second, the backup is still the backup. At the end the backup is killed and restarted
with every retained forgery still on the broker, and the whole window is judged exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.integration.hostile import CASES, Target
from tests.netns.ha_cluster import (
    CLUSTER,
    DEVICE,
    GROUP_INTERVAL,
    GROUPS,
    SECRET,
    HaCluster,
    assert_exactly_once,
    loopback_cluster,
)

pytestmark = pytest.mark.slow

RECOVER_S = 1.0  # the master publishes again within this after each case
SETTLE_S = 1.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("hostile"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def target_of(cluster: HaCluster) -> Target:
    return Target(
        broker=(cluster.broker.host, cluster.broker.port),
        cluster=CLUSTER,
        secret=SECRET,
        nodes={n.name: n.url for n in cluster.nodes},
        vrrp={n.name: (n.plan.address, n.plan.udp_port) for n in cluster.nodes},
        data_topic=f"/neuron/{DEVICE}",
        device=DEVICE,
        group=GROUPS[0],
        interval=GROUP_INTERVAL,
        token=cluster.a.token,
    )


def healthy(cluster: HaCluster) -> str | None:
    """Why the pair is not in shape after a case, or None."""
    a, b = cluster.a, cluster.b
    if not (a.running and b.running):
        return "a node process ended"
    if a.role() != "MASTER":
        return f"node-a is {a.role()}"
    if not cluster.publishing_now(a.name, within=RECOVER_S):
        return "node-a is not publishing"
    if b.role() != "BACKUP":
        return f"node-b is {b.role()}"
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the spoofed-advert case needs a raw socket")
def test_hostile_table_leaves_the_pair_up_publishing_and_exactly_once(pair: HaCluster) -> None:
    assert len(CASES) >= 40
    target = target_of(pair)
    time.sleep(2.0)
    start = time.time() - 2.0
    failures: list[str] = []
    for name, act in CASES:
        try:
            act(target)
        except Exception as exc:  # a case whose answer was not the refusal it should get
            failures.append(f"{name}: {exc!r}")
        time.sleep(SETTLE_S)
        why = None
        deadline = time.monotonic() + 3.0  # a spoofed resign may take the backup a moment back
        while (why := healthy(pair)) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if why is not None:
            failures.append(f"{name}: {why}")
    pair.b.kill()
    pair.b.start()  # with every retained forgery still on the broker
    pair.wait_steady(pair.a, 30)
    time.sleep(SETTLE_S)
    assert failures == [], "\n".join(failures) + "\n" + pair.logs()
    # One redelivery: the byte-for-byte replay case itself (identical bytes, not a new publish).
    assert_exactly_once(pair, start, time.time(), max_redeliveries=1)
    drops = (pair.a.status() or {}).get("vrrp", {}).get("broker_drops", {})
    assert {"malformed", "unsigned", "bad_signature", "future_slot"} <= set(drops), drops
