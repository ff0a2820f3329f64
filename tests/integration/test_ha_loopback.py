"""The HA pair without root: two `tandem run` nodes over VRRP-over-UDP on 127.0.0.2/127.0.0.3.

Same processes as the namespace tests (real mosquitto with persistence, the PLC simulator, a
persistent-session audit subscriber), so exactly-once across failover is covered on any host.
One pair serves the module; every test starts from node-a publishing and node-b hot standby.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.netns.ha_cluster import (
    HaCluster,
    assert_exactly_once,
    first_publish,
    loopback_cluster,
)

pytestmark = pytest.mark.slow

STEADY_S = 2.0  # both nodes up before the fault, inside the audited window
SETTLE_S = 2.0  # after recovery, inside the audited window
TAKEOVER_BOUND_S = 2.0  # generous: the bench measures the real number (~0.35 s)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("ha-loopback"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster(pair: HaCluster) -> HaCluster:
    """The shared pair back in its starting shape: node-a MASTER, node-b hot BACKUP."""
    pair.reset()
    time.sleep(STEADY_S)
    return pair


def test_ha_loopback_master_killed_backup_resumes_exactly_once(cluster: HaCluster) -> None:
    start = time.time() - STEADY_S
    killed = cluster.a.kill()
    cluster.wait_role(cluster.b, "MASTER", 10)
    time.sleep(SETTLE_S)

    verdict = assert_exactly_once(cluster, start, time.time())
    assert verdict.publishers == (cluster.a.name, cluster.b.name)
    took = first_publish(cluster.audit.arrivals(), killed, cluster.b.name)
    assert took is not None and took - killed < TAKEOVER_BOUND_S, verdict.describe()


def test_ha_loopback_preferred_master_restarted_switches_back_exactly_once(
    cluster: HaCluster,
) -> None:
    start = time.time() - STEADY_S
    cluster.a.kill()
    cluster.wait_role(cluster.b, "MASTER", 10)
    time.sleep(1.0)
    cluster.a.start()
    cluster.wait_steady(cluster.a, 30)
    time.sleep(SETTLE_S)

    verdict = assert_exactly_once(cluster, start, time.time())
    assert verdict.publishers == (cluster.a.name, cluster.b.name, cluster.a.name)
    assert cluster.masters() == [cluster.a.name]


def test_ha_loopback_operator_switchover_moves_role_exactly_once(cluster: HaCluster) -> None:
    start = time.time() - STEADY_S
    cluster.wait_switchover_ready(cluster.a)
    asked = time.time()
    response = cluster.a.switchover()
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    cluster.wait_steady(cluster.b, 10)
    time.sleep(SETTLE_S)

    verdict = assert_exactly_once(cluster, start, time.time())
    assert verdict.publishers == (cluster.a.name, cluster.b.name)
    took = first_publish(cluster.audit.arrivals(), asked, cluster.b.name)
    assert took is not None and took - asked < TAKEOVER_BOUND_S
    # A manual choice sticks: the preferred node does not take the role straight back.
    assert cluster.masters() == [cluster.b.name]


def test_ha_loopback_master_sigterm_hands_over_exactly_once(cluster: HaCluster) -> None:
    start = time.time() - STEADY_S
    stopped = cluster.a.terminate()
    assert cluster.a.process is not None and cluster.a.process.returncode == 0
    cluster.wait_role(cluster.b, "MASTER", 10)
    time.sleep(SETTLE_S)

    verdict = assert_exactly_once(cluster, start, time.time())
    assert verdict.publishers == (cluster.a.name, cluster.b.name)
    took = first_publish(cluster.audit.arrivals(), stopped, cluster.b.name)
    assert took is not None and took - stopped < TAKEOVER_BOUND_S
