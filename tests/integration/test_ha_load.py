"""Operator load on the master cannot move the role: live streams and API bursts on a pair.

Two `tandem run` nodes on loopback (VRRP over UDP at 0.1 s), one group of 2,000 registers
polled every 100 ms next to the audit's groups. Several dashboard streams and a burst of API
requests hit the master; the backup must stay BACKUP throughout (no master-down timer
expiring, no term taken), and delivery stays exactly once. Timing goals live in
bench/load_isolation.py; this test asserts only that the role never moves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

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
