"""Failover of the data path: takeover time, lost and duplicate slots, per scenario and setup.

Three setups on the same 3-namespace topology (node-a 10.77.0.1, node-b 10.77.0.2, services
10.77.0.3 with mosquitto + the audit subscriber, the PLC simulator on 10.77.0.4), judged by the
same audit (tandem.ha.audit's rule, via tests/netns/ha_cluster.py):

- keepalived seed: the NeuronEX guide reproduced. Real keepalived 2.2.7, VRRPv2, advert 1 s,
  PASS auth, priorities 100/90, backup nopreempt, `vrrp_script` curl 127.0.0.1:8085 every 5 s,
  fall 3 on the master; a Tandem hub in single mode (no ha section) started by notify_master
  and stopped by notify_fault / notify_backup (start/stop the service, like systemctl).
- tandem cold: a native Tandem pair, raw VRRPv3 at 0.1 s, standby cold (polls only as master).
- tandem hot: the same pair with standby hot (the standby polls and buffers; exactly-once).

Scenarios: kill -9 of the master (for the seed: of its hub, the guide's "service failure";
keepalived keeps running), hub failure (the master loses its devices: a blackhole route to
the PLC's address), host loss (the master's cable pulled and every process killed), recovery
(the preferred node returns after a kill -9 and takes the role back), manual switchover
(POST /api/v1/switchover; no such thing in the seed), broker restart during failover (broker
stopped, master killed, broker back 2 s later).

Columns: takeover = trigger -> first message of the new master at the subscriber (trigger:
the fault; for recovery, the returning node's start; for broker restart, the broker's
return); max gap = the longest silence at the subscriber in the window; lost = slots missing;
no data = slots delivered as failed polls (errors, no values); duplicates = slots delivered
twice (not counting byte-identical QoS 1 redeliveries, which are in the JSON).

Run as root from the repository root:
    .venv/bin/python -m bench.failover [--quick] [--setups seed,cold,hot]
        [--scenarios kill9,hub,host,recovery,switchover,broker]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.failover_common import COLD, FULL, HOT, QUICK, SCENARIOS, SEED, Outcome, Timing
from bench.failover_seed import run_seed
from bench.report import table, write_json
from tests.netns.ha_cluster import (
    PLC_ADDRESS,
    ClusterTimeout,
    HaCluster,
    blackhole,
    first_publish,
    netns_cluster,
    unblackhole,
)
from tests.netns.netns import Topology, netns_available

log = logging.getLogger(__name__)

# ---- Tandem pairs --------------------------------------------------------------------------


def _tandem_scenario(
    key: str, c: HaCluster, topology: Topology, t: Timing
) -> tuple[float, float, str, str]:
    """Inject the fault; returns (window start, trigger time, node publishing next, note)."""
    a, b = c.a, c.b
    start = time.time() - t.steady
    if key == "kill9":
        trigger = a.kill()
        c.wait_role(b, "MASTER", 15)
        return start, trigger, b.name, ""
    if key == "hub":
        blackhole(a.place, PLC_ADDRESS)
        trigger = time.time()
        c.wait_role(b, "MASTER", 20)
        return start, trigger, b.name, ""
    if key == "host":
        topology.cut(0)
        trigger = a.kill()
        c.wait_role(b, "MASTER", 15)
        return start, trigger, b.name, ""
    if key == "recovery":
        a.kill()
        c.wait_role(b, "MASTER", 15)
        c.wait(lambda: c.publishing_now(b.name), 15, "node-b publishing")
        time.sleep(t.steady)
        start = time.time() - t.steady
        trigger = a.start()
        c.wait_steady(a, 30)
        return start, trigger, a.name, ""
    if key == "switchover":
        trigger = time.time()
        response = a.switchover()
        if response.status_code != 200:
            raise ClusterTimeout(f"switchover refused: {response.text}")
        c.wait_steady(b, 15)
        return start, trigger, b.name, ""
    if key == "broker":
        c.broker.stop()
        a.kill()
        time.sleep(2.0)
        c.broker.start()
        trigger = time.time()
        c.wait_role(b, "MASTER", 20)
        return start, trigger, b.name, "takeover from the broker's return"
    raise ValueError(key)


def run_tandem(standby: str, keys: list[str], t: Timing, workdir: Path) -> list[Outcome]:
    setup = HOT if standby == "hot" else COLD
    out: list[Outcome] = []
    with Topology(3) as topology:
        c = netns_cluster(topology, workdir / standby, standby=standby)  # type: ignore[arg-type]
        try:
            c.start()
            for key in keys:
                scenario = SCENARIOS[key]
                if key == "hub" and standby == "cold":
                    # A cold standby never connects to the devices, so nothing says it would
                    # do better: the master keeps the role (docs/failover.md).
                    out.append(
                        Outcome.not_applicable(
                            setup, scenario, "n/a: a cold standby has no device path to prefer"
                        )
                    )
                    continue
                try:
                    c.reset()
                    time.sleep(t.steady)
                    start, trigger, new, note = _tandem_scenario(key, c, topology, t)
                    c.wait(lambda n=new: c.publishing_now(n), 20, f"{new} publishing")  # type: ignore[misc]
                    time.sleep(t.settle)
                    verdict = c.judge(start, time.time())
                    took = first_publish(c.audit.arrivals(), trigger, new)
                    out.append(
                        Outcome.of(
                            setup, scenario, None if took is None else took - trigger, verdict, note
                        )
                    )
                    log.info("%s / %s: %s", setup, scenario, verdict.describe())
                except ClusterTimeout as exc:
                    log.error("%s / %s failed: %s", setup, scenario, exc)
                    out.append(Outcome.not_applicable(setup, scenario, "FAILED: see log"))
                finally:
                    unblackhole(c.a.place, PLC_ADDRESS)
                    topology.restore(0)
                    c.broker.start()
        finally:
            c.close()
    return out


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter steady/settle/outage")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--setups", default="seed,cold,hot", help="comma-separated subset of seed,cold,hot"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ok, reason = netns_available()
    if not ok:
        print(f"bench.failover: {reason}", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    timing = QUICK if args.quick else FULL
    runners: dict[str, Callable[[Path], list[Outcome]]] = {
        "seed": lambda w: run_seed(keys, timing, w),
        "cold": lambda w: run_tandem("cold", keys, timing, w),
        "hot": lambda w: run_tandem("hot", keys, timing, w),
    }
    workdir = Path(tempfile.mkdtemp(prefix="tandem-failover-"))
    outcomes: list[Outcome] = []
    try:
        for setup in setups:
            outcomes += runners[setup](workdir)
    finally:
        if args.keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    order = {label: i for i, label in enumerate(SCENARIOS.values())}
    outcomes.sort(key=lambda o: (order[o.scenario], [SEED, COLD, HOT].index(o.setup)))
    columns = [
        "scenario",
        "setup",
        "takeover s",
        "max gap s",
        "lost",
        "no data",
        "duplicates",
        "note",
    ]
    rows = [[o.scenario, o.setup, *o.row()[2:]] for o in outcomes]
    print(table("Failover of the data path (slots at 10 Hz, two groups)", columns, rows))
    path = write_json(
        "failover",
        {
            "command": " ".join(["python -m bench.failover", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "timing": asdict(timing),
            "results": [asdict(o) for o in outcomes],
        },
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
