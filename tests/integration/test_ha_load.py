"""Operator load on the master cannot move the role: live streams and API bursts on a pair.

Two `tandem run` nodes on loopback (VRRP over UDP at 0.1 s), one group of 2,000 registers
polled every 500 ms next to the audit's groups. Several dashboard streams and a burst of API
requests hit the master; the backup must stay BACKUP throughout (no master-down timer
expiring, no term taken), and delivery stays exactly once. Timing goals live in
bench/load_isolation.py; this test asserts only that the role never moves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tandem.config.hub import load_config
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tests.netns.ha_cluster import HaCluster, assert_exactly_once, loopback_cluster

pytestmark = pytest.mark.slow

LOAD_TAGS = 2000
STREAMS = 6
LOAD_S = 15.0


@pytest.fixture(scope="module")
def loaded_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("ha-load"), load_tags=LOAD_TAGS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def vrrp_transitions(node: Any) -> dict[str, int]:
    return dict((node.status() or {}).get("vrrp", {}).get("transitions", {}))


def links_opened(node: Any) -> int:
    """Connections to devices this node has opened so far, from its log."""
    return sum(
        " link " in line and line.endswith(" open") for line in node.log.read_text().splitlines()
    )


class Load:
    """SSE readers and an API hammer against one node, each in a thread of its own."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers  # the node's own token: an anonymous burst is only refusals
        self.stop = threading.Event()
        self.events = 0
        self.requests = 0
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for _ in range(STREAMS):
            self._spawn(self._stream)
        self._spawn(self._hammer)

    def _spawn(self, target: object) -> None:
        thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _stream(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=30.0), headers=self.headers) as client:
            while not self.stop.is_set():
                try:
                    with client.stream("GET", f"{self.url}/api/v1/events") as response:
                        for line in response.iter_lines():
                            if line.startswith("event:"):
                                self.events += 1
                            if self.stop.is_set():
                                return
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.2)

    def _hammer(self) -> None:
        with httpx.Client(timeout=5.0, headers=self.headers) as client:
            while not self.stop.is_set():
                for path in ("/api/v1/status", "/api/v1/tags", "/api/v1/timeline", "/metrics"):
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{self.url}{path}").status_code == 200:
                            self.requests += 1

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=35)


def test_ha_load_streams_and_api_burst_on_master_never_move_the_role(
    loaded_pair: HaCluster,
) -> None:
    cluster = loaded_pair
    a, b = cluster.a, cluster.b
    time.sleep(2.0)
    start = time.time() - 2.0
    before = (b.status() or {}).get("vrrp", {}).get("transitions", {})
    load = Load(a.url, a.headers)
    load.start()
    roles: set[str | None] = set()
    try:
        deadline = time.monotonic() + LOAD_S
        while time.monotonic() < deadline:
            roles.add(b.role())
            time.sleep(0.2)
    finally:
        load.finish()
    time.sleep(1.0)

    after = (b.status() or {}).get("vrrp", {}).get("transitions", {})
    assert roles == {"BACKUP"}, cluster.logs()
    assert after == before, (before, after, cluster.logs())
    assert a.role() == "MASTER" and cluster.publishing_now(a.name), cluster.logs()
    assert load.events > 50 and load.requests > 100, (load.events, load.requests, load.errors)
    assert_exactly_once(cluster, start, time.time())


def test_ha_load_live_change_of_every_device_on_master_loses_no_slot(
    loaded_pair: HaCluster,
) -> None:
    """A config change that replaces every poller (each group grows by a tag) is applied
    live on the master and synced to the backup; the replaced pollers go on from the slot
    after the last one they emitted, so the delivery audit sees no gap and no repeat; the
    connections stay open across the change, so no first poll fails and the role stays put
    (no handover to the peer and back)."""
    cluster = loaded_pair
    a, b = cluster.a, cluster.b
    transitions = {n.name: vrrp_transitions(n) for n in (a, b)}
    opened = {n.name: links_opened(n) for n in (a, b)}
    admin = create_token(load_config(a.config).data_dir, Role.ADMIN)
    doc = yaml.safe_load(a.config.read_text())
    for device in doc["devices"]:
        for index, group in enumerate(device["groups"]):
            group["tags"].append({"name": "added", "address": 90 + index, "type": "uint16"})
    time.sleep(1.0)
    start = time.time() - 1.0
    answer = httpx.put(
        f"{a.url}/api/v1/config",
        content=yaml.safe_dump(doc, sort_keys=False),
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    version = answer.json()["version"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ha = (b.status() or {}).get("ha") or {}
        if str(ha.get("config_version", "")).startswith(f"v{version} "):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"backup not at v{version}: {b.status()}\n{cluster.logs()}")
    time.sleep(3.0)
    assert a.role() == "MASTER" and b.role() == "BACKUP", cluster.logs()
    assert {n.name: vrrp_transitions(n) for n in (a, b)} == transitions, cluster.logs()
    assert {n.name: links_opened(n) for n in (a, b)} == opened, cluster.logs()
    tags = {(t["device"], t["tag"]) for t in a.request("GET", "/api/v1/tags", 5).json()}
    assert all((d["name"], "added") in tags for d in doc["devices"]), sorted(tags)[:5]
    assert_exactly_once(cluster, start, time.time())
