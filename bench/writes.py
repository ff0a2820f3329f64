"""Write latency: request -> response on a single node and across a failover of a pair.

* **single node**: one ``tandem run`` node, the PLC simulator and mosquitto on loopback;
  ``--requests`` write requests in Neuron's format, one after the other (the next is sent when
  the previous one is answered), over MQTT and over REST (an operator token). Latency is from
  the publish (or the POST) to the response, as the client sees it, so it includes the
  broker's two hops, the intent's commit (SQLite, ``synchronous=FULL``) and the Modbus round
  trip through the device's link, queued with its polls.
* **failover**: the loopback pair (VRRPv3 over UDP at 0.1 s, hot standby, intents streamed
  over the peer link); requests are sent at ``--rate`` per second with unique uuids, the
  master is killed (kill -9) a third of the way through, and the client re-sends every uuid
  not answered within ``--retry`` seconds. Latency is from the first send to the first answer;
  "around the fault" are the requests sent from 0.5 s before the kill until the new master
  answered its first. The simulator's write log shows how often each request was executed:
  at most once is checked, not assumed.

Usage: ``.venv/bin/python -m bench.writes [--requests 300] [--rate 20] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are importable from the root
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.report import table, write_json  # noqa: E402
from tandem.config.hub import load_config  # noqa: E402
from tandem.security.roles import Role  # noqa: E402
from tandem.security.tokens import create_token  # noqa: E402
from tests.integration.broker import Broker  # noqa: E402
from tests.integration.plc import start_sim  # noqa: E402
from tests.integration.test_hub_e2e import NodeProcess, write_config  # noqa: E402
from tests.integration.writes_client import RequestClient  # noqa: E402
from tests.netns.ha_cluster import CLUSTER, DEVICE, loopback_cluster  # noqa: E402

NODELAY_LINE = "set_tcp_nodelay true\n"


@dataclass(frozen=True, slots=True)
class Row:
    setup: str
    path: str
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    codes: dict[str, int]
    executed_twice: int | None = None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


def _row(setup: str, path: str, latencies: list[float], codes: Counter[int], **kw: Any) -> Row:
    return Row(
        setup,
        path,
        len(latencies),
        _pct(latencies, 0.5),
        _pct(latencies, 0.99),
        round(max(latencies), 2) if latencies else None,
        {str(k): v for k, v in sorted(codes.items())},
        **kw,
    )


# ---- single node ----------------------------------------------------------------------------


async def single_node(workdir: Path, requests: int, nodelay: bool = True) -> list[Row]:
    (workdir / "broker").mkdir(parents=True)
    sim = start_sim(["--port", "0"])
    broker = Broker(workdir / "broker")
    if nodelay:
        # mosquitto leaves Nagle on by default: small responses wait for the delayed ACK.
        broker.conf.write_text(broker.conf.read_text() + NODELAY_LINE)
    setup = "single node" if nodelay else "single node, broker Nagle on"
    broker.start()
    node: NodeProcess | None = None
    try:
        tags = [{"name": f"w{i}", "address": 50 + i, "access": "write"} for i in range(10)]
        config = write_config(
            workdir / "node.yaml",
            data_dir=workdir / "data",
            broker_port=broker.port,
            node="bench",
            devices=[
                {
                    "name": "plc",
                    "host": "127.0.0.1",
                    "port": sim.ports[0],
                    "groups": [{"name": "w", "interval": 0.1, "tags": tags}],
                }
            ],
        )
        node = NodeProcess(config, workdir / "node.log")
        await node.wait_ready()
        token = create_token(load_config(config).data_dir, Role.OPERATOR)
        rows = []
        async with RequestClient(broker.host, broker.port, "bench") as client:
            await _wait_answering(client)
            latencies: list[float] = []
            codes: Counter[int] = Counter()
            for i in range(requests):
                uuid = f"s{i}"
                body = {"uuid": uuid, "node": "plc", "group": "w", "tag": f"w{i % 10}", "value": i}
                start = time.perf_counter()
                answer = await client.request("write", body)
                latencies.append((time.perf_counter() - start) * 1000)
                codes[answer["error"]] += 1
            rows.append(_row(setup, "MQTT", latencies, codes))
        if not nodelay:
            return rows
        latencies, codes = [], Counter()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=10) as http:
            for i in range(requests):
                body = {"node": "plc", "group": "w", "tag": f"w{i % 10}", "value": i}
                start = time.perf_counter()
                response = await http.post("/api/v1/write", json=body)
                latencies.append((time.perf_counter() - start) * 1000)
                codes[response.json()["error"]] += 1
        rows.append(_row(setup, "REST", latencies, codes))
        return rows
    finally:
        if node is not None:
            node.terminate()
        broker.stop()
        sim.stop()


async def _wait_answering(client: RequestClient) -> None:
    probe = {"uuid": "probe", "node": "plc", "group": "w"}
    for _ in range(200):
        await client.publish("read/req", probe)
        await asyncio.sleep(0.1)
        if "probe" in client.responses:
            return
    raise RuntimeError("the node never answered a read request")


# ---- failover -------------------------------------------------------------------------------


async def failover(workdir: Path, requests: int, rate: float, retry: float) -> list[Row]:
    cluster = loopback_cluster(workdir / "pair", write_tags=50)
    cluster.broker.conf.write_text(cluster.broker.conf.read_text() + NODELAY_LINE)
    try:
        cluster.start()
        time.sleep(2.0)
        base = 30_000  # values base..base+requests fit uint16 and no other request writes them
        async with RequestClient(cluster.broker.host, cluster.broker.port, CLUSTER) as client:
            bodies = [
                {
                    "uuid": f"f{i}",
                    "node": DEVICE,
                    "group": "w",
                    "tag": f"w{i % 50}",
                    "value": base + i,
                }
                for i in range(requests)
            ]
            first_sent: dict[str, float] = {}
            last_sent: dict[str, float] = {}
            sends: Counter[str] = Counter()

            async def send(body: dict[str, Any]) -> None:
                await client.publish("write/req", body)
                now = time.perf_counter()
                first_sent.setdefault(body["uuid"], now)
                last_sent[body["uuid"]] = now
                sends[body["uuid"]] += 1

            async def retry_unanswered() -> None:
                """Every uuid not answered within ``retry`` s is sent again, all along."""
                while True:
                    now = time.perf_counter()
                    for b in list(bodies[: len(first_sent)]):
                        uuid = b["uuid"]
                        if uuid not in client.responses and now - last_sent[uuid] >= retry:
                            await send(b)
                    await asyncio.sleep(0.05)

            retrier = asyncio.create_task(retry_unanswered())
            killed_at = 0.0
            for i, body in enumerate(bodies):
                if i == requests // 3:
                    killed_at = time.perf_counter()
                    # In a thread: the wait for the killed processes must not stall the
                    # client's loop (answers would be stamped late, retries held back).
                    await asyncio.to_thread(cluster.a.kill)
                await send(body)
                await asyncio.sleep(1 / rate)
            deadline = time.monotonic() + 60
            while any(b["uuid"] not in client.responses for b in bodies):
                if time.monotonic() > deadline:
                    raise RuntimeError("some uuids were never answered")
                await asyncio.sleep(0.05)
            retrier.cancel()
            await asyncio.sleep(1.0)
            answered = client.first_answer_at
            latency = {u: (answered[u] - first_sent[u]) * 1000 for u in first_sent}
            codes = Counter(client.responses[b["uuid"]][0]["error"] for b in bodies)
            after_kill = [answered[b["uuid"]] for b in bodies[requests // 3 :]]
            resumed = min(after_kill) if after_kill else killed_at
            around = [u for u, t in first_sent.items() if killed_at - 0.5 <= t <= resumed]
            for u in sorted(latency, key=latency.get)[-3:]:  # type: ignore[arg-type]
                print(
                    f"slowest {u}: sent {first_sent[u] - killed_at:+.3f} s from the kill,"
                    f" answered after {latency[u]:.0f} ms, sent {sends[u]} time(s)",
                    file=sys.stderr,
                )
        counts: Counter[int] = Counter()
        for line in cluster.plc.write_log.read_text().splitlines():
            entry = json.loads(line)
            counts.update(v for v in entry["values"] if base <= v < base + requests)
        twice = sum(1 for n in counts.values() if n > 1)
        around_codes = Counter(client.responses[u][0]["error"] for u in around)
        return [
            _row("pair, kill -9", "MQTT, all", list(latency.values()), codes, executed_twice=twice),
            _row(
                "pair, kill -9",
                "MQTT, around the fault",
                [latency[u] for u in around],
                around_codes,
                executed_twice=twice,
            ),
        ]
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--rate", type=float, default=20.0, help="failover: requests per second")
    parser.add_argument("--retry", type=float, default=0.5, help="failover: seconds to re-send")
    parser.add_argument("--quick", action="store_true", help="60 requests")
    parser.add_argument("--output", default="writes", help="results/<OUTPUT>.json")
    args = parser.parse_args(argv)
    requests = 60 if args.quick else args.requests
    workdir = Path(tempfile.mkdtemp(prefix="tandem-writes-"))
    try:
        rows = asyncio.run(single_node(workdir / "single", requests))
        rows += asyncio.run(single_node(workdir / "nagle", requests, nodelay=False))
        rows += asyncio.run(failover(workdir, requests, args.rate, args.retry))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    columns = ["setup", "path", "requests", "p50 ms", "p99 ms", "max ms", "answers", "twice"]
    print(
        table(
            "Write request -> response latency",
            columns,
            [
                [
                    r.setup,
                    r.path,
                    r.requests,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    " ".join(f"{k}:{v}" for k, v in r.codes.items()),
                    r.executed_twice,
                ]
                for r in rows
            ],
        )
    )
    mean = statistics.fmean(r.p50_ms for r in rows if r.p50_ms is not None)
    path = write_json(
        args.output,
        {
            "command": " ".join(["python -m bench.writes", *(argv or sys.argv[1:])]),
            "requests": requests,
            "rate": args.rate,
            "retry_s": args.retry,
            "results": [asdict(r) for r in rows],
            "mean_p50_ms": round(mean, 2),
        },
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
