"""A pair as a redundant OPC UA server set: how fast a Part 4 client follows a failover.

The loopback pair of tests/netns/ha_cluster.py with an `opcua_server` on each node, and a
client that reads both ServiceLevels every 20 ms and a tag from the highest server. Each run
kills the master (kill -9) and later restarts it (it gets the role back by handover). Per run:

- takeover: first MQTT publish of the survivor minus the kill;
- to 255: the survivor's ServiceLevel first read at 255, minus its first publish (the tests
  bound this at 1 s);
- no value: the longest time the client had no good value to read (the dead master's
  session fails, the survivor has not been chosen yet);
- back in time: reads whose SourceTimestamp was older than the previous read's (must be 0);
- switchback: the returning master's 255 minus its first publish after the restart.

    .venv/bin/python -m bench.opcua_failover [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import table, write_json
from tests.integration.opcua_helpers import Reading, RedundantClient
from tests.netns.ha_cluster import HaCluster, first_publish, loopback_cluster

log = logging.getLogger(__name__)

START_S = 120.0


def _wait(client: RedundantClient, ok: Any, timeout: float) -> Reading:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.readings and ok(client.readings[-1]):
            return client.readings[-1]
        time.sleep(0.05)
    raise TimeoutError(f"not within {timeout} s: {client.readings[-1:]}")


def _longest_gap(readings: list[Reading], start: float, end: float) -> float:
    good = [r.at for r in readings if start <= r.at <= end and r.stamp is not None]
    return max((b - a for a, b in zip(good, good[1:], strict=False)), default=end - start)


def _back_in_time(readings: list[Reading]) -> int:
    stamps = [r.stamp for r in readings if r.stamp is not None]
    return sum(1 for a, b in zip(stamps, stamps[1:], strict=False) if b < a)


def one_run(cluster: HaCluster, client: RedundantClient) -> dict[str, Any]:
    a, b = cluster.a, cluster.b
    _wait(client, lambda r: r.levels[a.name] == 255 and (r.levels[b.name] or 0) >= 200, 60)
    time.sleep(1.0)
    killed = a.kill()
    cluster.wait_role(b, "MASTER", 15)
    _wait(client, lambda r: r.levels[b.name] == 255, 15)
    took = first_publish(cluster.audit.arrivals(), killed, b.name)
    rose = client.first(killed, lambda r: r.levels[b.name] == 255)
    time.sleep(1.0)
    restarted = time.time()
    a.start()
    cluster.wait_steady(a, START_S)
    _wait(client, lambda r: r.levels[a.name] == 255 and (r.levels[b.name] or 0) < 255, 30)
    back = first_publish(cluster.audit.arrivals(), restarted, a.name)
    returned = client.first(restarted, lambda r: r.levels[a.name] == 255)
    return {
        "takeover_s": None if took is None else took - killed,
        "to_255_s": None if took is None or rose is None else rose.at - took,
        "no_value_s": _longest_gap(client.readings, killed - 1.0, killed + 5.0),
        "switchback_to_255_s": None if back is None or returned is None else returned.at - back,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default="opcua_failover", help="results/<OUTPUT>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="tandem-opcua-bench-") as tmp:
        cluster = loopback_cluster(Path(tmp), opcua=True)
        try:
            cluster.start(timeout=START_S)
            a, b = cluster.a, cluster.b
            urls = {n.name: n.plan.opcua_url or "" for n in (a, b)}
            client = RedundantClient(urls)
            client.start()
            try:
                runs = [one_run(cluster, client) for _ in range(args.runs)]
            finally:
                client.stop()
            back_in_time = _back_in_time(client.readings)
        finally:
            cluster.close()
    rows = [
        [i + 1, r["takeover_s"], r["to_255_s"], r["no_value_s"], r["switchback_to_255_s"]]
        for i, r in enumerate(runs)
    ]
    print(
        table(
            f"OPC UA redundant pair, kill -9 of the master ({args.runs} runs, "
            f"{len(client.readings)} client reads, {back_in_time} back in time)",
            ["run", "takeover s", "to 255 s", "no value s", "switchback to 255 s"],
            rows,
        )
    )
    summary = {
        key: statistics.median([r[key] for r in runs if r[key] is not None] or [float("nan")])
        for key in ("takeover_s", "to_255_s", "no_value_s", "switchback_to_255_s")
    }
    if args.output != "-":
        path = write_json(
            args.output, {"runs": runs, "median": summary, "back_in_time": back_in_time}
        )
        print(f"\nwrote {path}")
    return 0 if back_in_time == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
