"""A real pair over HTTPS: two `tandem run` nodes, API and peer link on TLS.

node-a verifies node-b against the pair's CA (hostname checked), node-b pins node-a's
certificate; a switchover (a handover POST on the peer link) works over it. A node whose
peer does not prove the expected certificate refuses the link: it never sends its bearer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.security.certs import init_pair
from tests.netns.ha_cluster import HaCluster, TandemNode, loopback_cluster

pytestmark = pytest.mark.slow

REFUSED_S = 3.0  # how long the refusing node is watched: many reconnect attempts


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path, tls=True)
    try:
        cluster.start()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def restart_with_peer_tls(node: TandemNode, peer_tls: dict[str, Any]) -> None:
    node.terminate()
    config = json.loads(node.config.read_text())
    config["ha"]["peer_tls"] = peer_tls
    node.config.write_text(json.dumps(config, indent=2))
    node.start()


def peer_state(node: TandemNode) -> str | None:
    status = node.status()
    return None if status is None else (status.get("ha") or {}).get("peer_state")


def assert_link_refused(cluster: HaCluster, node: TandemNode, expected_log: str) -> None:
    cluster.wait(lambda: node.status() is not None, 20, f"{node.name} API up")
    deadline = time.monotonic() + REFUSED_S
    while time.monotonic() < deadline:
        assert peer_state(node) == "unreachable", cluster.logs()
        time.sleep(0.2)
    log_text = node.log.read_text()
    assert expected_log in log_text, node.tail()


def test_ha_tls_pair_peer_link_over_https_and_bad_certificate_refused(
    pair: HaCluster, tmp_path: Path
) -> None:
    a, b = pair.a, pair.b
    assert a.url.startswith("https://") and b.url.startswith("https://")
    pair.wait_steady(a, 20)  # both peer links up: CA on one side, pin on the other
    assert "peer certificate matches the pinned fingerprint" in b.log.read_text()
    with pytest.raises(httpx.HTTPError):  # no plain-http answer on the TLS port
        httpx.get(a.url.replace("https://", "http://") + "/api/v1/health", timeout=2)

    pair.wait_switchover_ready(a)
    response = a.switchover()  # the handover travels on the TLS peer link
    assert response.status_code == 200, response.text
    pair.wait_steady(b, 15)

    # A pin that is not node-a's certificate: node-b refuses the link.
    other = init_pair(tmp_path / "other-ca", [("node-a", a.plan.address)], "other")
    restart_with_peer_tls(b, {"fingerprint": other[0].fingerprint})
    assert_link_refused(pair, b, "does not match ha.peer_tls.fingerprint")
    # A CA that did not sign node-a's certificate: refused too.
    restart_with_peer_tls(b, {"ca_file": str(tmp_path / "other-ca" / "ca.pem")})
    assert_link_refused(pair, b, "CERTIFICATE_VERIFY_FAILED")
