"""Writes in a real pair: each uuid executed at most once while the master is killed or frozen.

A client sends write requests with unique uuids at a steady rate and re-sends every one that
is not answered within a second, against the pair (the shared request topic). The simulator
logs every write it receives; each request writes a value no other request writes, so the log
shows exactly how often each uuid reached the device.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.writes_client import RequestClient
from tests.netns.ha_cluster import CLUSTER, DEVICE, HaCluster, TandemNode, loopback_cluster

pytestmark = pytest.mark.slow

REQUESTS = 60
RATE_HZ = 20.0
RETRY_S = 1.0
ANSWER_ALL_S = 40.0
# What a client may get back for a uuid: written, not master (REST only), not replicated,
# device down (a backup's poller catching up), or outcome unknown; never silence.
ANSWERS = {0, 3002, 4002, 4003, 4004}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("writes-pair"), write_tags=50)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def written_values(cluster: HaCluster) -> Counter[int]:
    """How often each value reached the simulator's write block."""
    counts: Counter[int] = Counter()
    path = cluster.plc.write_log
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["fc"] in (6, 16) and 50 <= entry["address"] < 100:
            counts.update(entry["values"])
    return counts


def body(base: int, i: int) -> dict[str, Any]:
    return {
        "uuid": f"u{base}-{i}",
        "node": DEVICE,
        "group": "w",
        "tag": f"w{i % 50}",
        "value": base + i,  # unique per request: the write log tells requests apart
    }


async def send_through_fault(
    cluster: HaCluster, base: int, fault: Any, at: int
) -> dict[str, list[dict[str, Any]]]:
    """Send REQUESTS requests, run ``fault`` after ``at`` of them, retry until all answered."""
    async with RequestClient(cluster.broker.host, cluster.broker.port, CLUSTER) as client:
        bodies = [body(base, i) for i in range(REQUESTS)]
        last_sent: dict[str, float] = {}

        async def retry_unanswered() -> None:
            """All along, every uuid sent and not answered within RETRY_S is sent again."""
            while True:
                now = time.monotonic()
                for b in bodies[: len(last_sent)]:
                    uuid = b["uuid"]
                    if uuid not in client.responses and now - last_sent[uuid] >= RETRY_S:
                        await client.publish("write/req", b)
                        last_sent[uuid] = now
                await asyncio.sleep(0.1)

        retrier = asyncio.create_task(retry_unanswered())
        try:
            for i, b in enumerate(bodies):
                if i == at:
                    await asyncio.to_thread(fault)
                await client.publish("write/req", b)
                last_sent[b["uuid"]] = time.monotonic()
                await asyncio.sleep(1 / RATE_HZ)
            deadline = time.monotonic() + ANSWER_ALL_S
            while open_ := [b for b in bodies if b["uuid"] not in client.responses]:
                assert time.monotonic() < deadline, f"{len(open_)} uuids never answered"
                await asyncio.sleep(0.1)
        finally:
            retrier.cancel()
        await asyncio.sleep(1.0)  # late repeats, if any, are in the log too
        return client.responses


def check_at_most_once(
    cluster: HaCluster, base: int, responses: dict[str, list[dict[str, Any]]]
) -> Counter[int]:
    counts = written_values(cluster)
    ours = {v: n for v, n in counts.items() if base <= v < base + REQUESTS}
    twice = {v - base: n for v, n in ours.items() if n > 1}
    assert not twice, f"uuids executed more than once: {twice}"
    codes: Counter[int] = Counter()
    for i in range(REQUESTS):
        uuid = f"u{base}-{i}"
        answers = responses[uuid]
        codes.update(a["error"] for a in answers)
        assert {a["error"] for a in answers} <= ANSWERS, f"{uuid}: {answers}"
        if any(a["error"] == 0 for a in answers):
            assert ours.get(base + i) == 1, f"{uuid} answered 0 but not written"
    return codes


def test_writes_pair_master_killed_each_uuid_at_most_once(pair: HaCluster) -> None:
    pair.reset()
    master = pair.a
    responses = asyncio.run(send_through_fault(pair, 10_000, master.kill, REQUESTS // 3))
    pair.wait_role(pair.b, "MASTER", 10)
    codes = check_at_most_once(pair, 10_000, responses)
    print(f"kill -9: answers by code {dict(codes)}")
    assert codes[0] >= REQUESTS // 2, f"most requests are written: {codes}"


def test_writes_pair_master_frozen_each_uuid_at_most_once(pair: HaCluster) -> None:
    pair.reset()
    master = pair.a

    def freeze_then_thaw() -> None:
        master.freeze(True)
        time.sleep(3.0)  # the backup takes over meanwhile
        master.freeze(False)

    responses = asyncio.run(send_through_fault(pair, 20_000, freeze_then_thaw, REQUESTS // 3))
    codes = check_at_most_once(pair, 20_000, responses)
    print(f"SIGSTOP: answers by code {dict(codes)}")
    assert codes[0] >= REQUESTS // 2, f"most requests are written: {codes}"


def test_writes_pair_backup_rest_answers_not_master_with_the_master(pair: HaCluster) -> None:
    pair.reset()
    backup: TandemNode = pair.b
    request = {"node": DEVICE, "group": "w", "tag": "w0", "value": 7}
    response = backup.request("POST", "/api/v1/write", timeout=5, json=request)
    assert response.status_code == 421, response.text
    assert response.json()["error"] == 4002
    assert response.json()["master"] == pair.a.url
    written = pair.a.request("POST", "/api/v1/write", timeout=5, json=request)
    assert written.status_code == 200, written.text


def test_writes_pair_frozen_backup_answers_not_replicated_then_master_writes_alone(
    pair: HaCluster,
) -> None:
    pair.reset()
    request = {"node": DEVICE, "group": "w", "tag": "w1", "value": 4242}
    pair.b.freeze(True)
    try:
        # The peer still looks up for peer_fresh_s (0.5 s): its confirmation is required and
        # does not come within a second, so nothing is sent.
        refused = pair.a.request("POST", "/api/v1/write", timeout=5, json=request)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == 4004
        time.sleep(1.0)  # the peer's state is stale now: the master writes alone
        alone = pair.a.request("POST", "/api/v1/write", timeout=5, json=request)
        assert alone.status_code == 200, alone.text
    finally:
        pair.b.freeze(False)
    assert written_values(pair)[4242] == 1
