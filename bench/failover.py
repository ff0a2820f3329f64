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
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.report import table, write_json
from tests.netns.ha_cluster import (
    PLC_ADDRESS,
    SERVICES_ADDRESS,
    TANDEM,
    VIP,
    AuditProcess,
    ClusterTimeout,
    HaCluster,
    NodePlan,
    Place,
    PlcSimulator,
    ServiceBroker,
    Verdict,
    blackhole,
    first_publish,
    judge,
    netns_cluster,
    node_config,
    tail,
    unblackhole,
    wait_until,
)
from tests.netns.netns import Netns, Topology, netns_available

log = logging.getLogger(__name__)

SCENARIOS = {
    "kill9": "kill -9 of the master",
    "hub": "hub failure (devices lost)",
    "host": "host loss",
    "recovery": "recovery (switchback)",
    "switchover": "manual switchover",
    "broker": "broker restart during failover",
}
SEED, COLD, HOT = "keepalived seed", "tandem cold", "tandem hot"
SEED_API_PORT = 8085  # the guide's check curls 127.0.0.1:8085


@dataclass(frozen=True, slots=True)
class Timing:
    steady: float  # steady state inside the window before the fault
    settle: float  # after recovery, inside the window
    outage: float  # how long a fault nobody detects is left in place (seed hub failure)
    seed_wait: float  # the longest the seed may take to fail over


FULL = Timing(steady=2.0, settle=2.5, outage=15.0, seed_wait=45.0)
QUICK = Timing(steady=1.5, settle=2.0, outage=8.0, seed_wait=40.0)


@dataclass(frozen=True, slots=True)
class Outcome:
    setup: str
    scenario: str
    takeover_s: float | None
    max_gap_s: float | None
    lost: int | None
    no_data: int | None
    duplicates: int | None
    redeliveries: int | None
    note: str = ""

    @classmethod
    def of(
        cls, setup: str, scenario: str, took: float | None, v: Verdict, note: str = ""
    ) -> Outcome:
        return cls(
            setup,
            scenario,
            None if took is None else round(took, 3),
            round(v.max_gap_s, 3),
            v.lost,
            v.error_only,
            v.duplicates,
            v.redeliveries,
            note,
        )

    @classmethod
    def not_applicable(cls, setup: str, scenario: str, note: str) -> Outcome:
        return cls(setup, scenario, None, None, None, None, None, None, note)

    def row(self) -> list[object]:
        def na(value: object) -> object:
            return "n/a" if self.note.startswith("n/a") else value

        return [
            self.setup,
            self.scenario,
            na(self.takeover_s) if self.takeover_s is not None else na("none"),
            na(self.max_gap_s),
            na(self.lost),
            na(self.no_data),
            na(self.duplicates),
            self.note,
        ]


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


# ---- the seed guide's architecture ----------------------------------------------------------


def _alive(pid: int) -> bool:
    """Running, not a zombie: a killed orphan lingers as one until init reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _keepalived_conf(
    ifname: str, peer: str, master: bool, scripts: dict[str, Path], check: Path | None
) -> str:
    lines = [
        "global_defs {",
        "  vrrp_skip_check_adv_addr",
        "  vrrp_garp_interval 0",
        "  vrrp_gna_interval 0",
        "}",
    ]
    if check is not None:
        lines += [
            "vrrp_script check_ex_alived {",
            f'  script "{check}"',
            "  interval 5",
            "  fall 3",
            "}",
        ]
    lines += [
        "vrrp_instance VI_1 {",
        f"  state {'MASTER' if master else 'BACKUP'}",
        *([] if master else ["  nopreempt"]),
        f"  interface {ifname}",
        "  virtual_router_id 51",
        f"  priority {100 if master else 90}",
        "  advert_int 1",
        "  authentication {",
        "    auth_type PASS",
        "    auth_pass abcdefgh",
        "  }",
        "  virtual_ipaddress {",
        f"    {VIP}",
        "  }",
        "  unicast_peer {",
        f"    {peer}",
        "  }",
    ]
    if check is not None:
        lines += ["  track_script {", "    check_ex_alived", "  }"]
    lines += [f'  {hook} "{path}"' for hook, path in scripts.items()]
    lines += ["}", ""]
    return "\n".join(lines)


class SeedNode:
    """keepalived + a single-mode hub that its notify scripts start and stop."""

    def __init__(
        self,
        ns: Netns,
        ifname: str,
        name: str,
        peer: str,
        master: bool,
        workdir: Path,
        broker: ServiceBroker,
        plc: PlcSimulator,
    ) -> None:
        self.ns = ns
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pid_file = workdir / "hub.pid"
        self.hub_log = workdir / "hub.log"
        self.kd_log = workdir / "keepalived.log"
        plan = NodePlan(name, "127.0.0.1", SEED_API_PORT, peer, SEED_API_PORT, 100, "raw")
        config = node_config(
            plan,
            data_dir=workdir / "data",
            broker=(broker.host, broker.port),
            plc=(plc.host, plc.port),
        )
        del config["ha"]  # single mode: the service knows nothing of its peer
        hub_config = workdir / "single.yaml"
        hub_config.write_text(json.dumps(config, indent=2))
        start = workdir / "master.sh"
        pid, hub_log = self.pid_file, self.hub_log
        start.write_text(
            "#!/bin/sh\n# systemctl start: a no-op when the service already runs (a killed\n"
            "# process stays a zombie until init reaps it, so kill -0 is not enough)\n"
            f"pid=$(cat {pid} 2>/dev/null)\n"
            'if [ -n "$pid" ]; then state=$(cut -d" " -f3 "/proc/$pid/stat" 2>/dev/null); fi\n'
            'if [ -n "$state" ] && [ "$state" != Z ]; then exit 0; fi\n'
            f"cd {workdir}\n"
            f"PYTHONUNBUFFERED=1 {TANDEM} run -c {hub_config} >> {hub_log} 2>&1 < /dev/null &\n"
            f"echo $! > {pid}\n"
        )
        stop = workdir / "stop.sh"
        stop.write_text(
            "#!/bin/sh\n# systemctl stop\n"
            f'if [ -f {self.pid_file} ]; then kill "$(cat {self.pid_file})" 2>/dev/null; '
            f"rm -f {self.pid_file}; fi\n"
        )
        check = workdir / "check_alive.sh"
        check.write_text(
            "#!/bin/bash\n"
            f'if ! curl 127.0.0.1:{SEED_API_PORT} >/dev/null 2>&1; then echo "hub start failed"; '
            "exit 1; fi\n"
        )
        for script in (start, stop, check):
            script.chmod(0o755)
        scripts = (
            {"notify_fault": stop, "notify_master": start}
            if master
            else {"notify_master": start, "notify_backup": stop}
        )
        self.conf = workdir / "keepalived.conf"
        self.conf.write_text(
            _keepalived_conf(ifname, peer, master, scripts, check if master else None)
        )
        self.start_script = start
        self.keepalived: subprocess.Popen[Any] | None = None

    def start_hub(self) -> float:
        """What systemd does at boot for an enabled service."""
        when = time.time()
        self.ns.run(["sh", str(self.start_script)])
        return when

    def start_keepalived(self) -> float:
        argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(self.conf)]
        for flag, pid in (("-p", "main"), ("-r", "vrrp"), ("-c", "check")):
            argv += [flag, str(self.workdir / f"{pid}.pid")]
        when = time.time()
        with self.kd_log.open("ab") as out:
            self.keepalived = self.ns.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        return when

    def hub_pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def hub_running(self) -> bool:
        pid = self.hub_pid()
        return pid is not None and _alive(pid)

    def kill_hub(self) -> float:
        """kill -9 of the service; like systemd, the host then knows it is not running."""
        when = time.time()
        pid = self.hub_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.pid_file.unlink(missing_ok=True)
        return when

    def kill_all(self) -> float:
        when = time.time()
        if self.keepalived is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.keepalived.pid, signal.SIGKILL)
            self.keepalived.wait(10)
        self.kill_hub()
        return when

    def is_master(self) -> bool:
        text = self.kd_log.read_text(errors="replace") if self.kd_log.exists() else ""
        entered = text.rfind("Entering MASTER STATE")
        return entered >= 0 and entered > max(
            text.rfind("Entering BACKUP STATE"), text.rfind("Entering FAULT STATE")
        )

    def close(self) -> None:
        self.kill_hub()
        if self.keepalived is not None:
            self.ns.stop(self.keepalived)
        # Hubs forked by notify scripts: any process left in our own namespace, by pid.
        done = subprocess.run(["ip", "netns", "pids", self.ns.name], capture_output=True, text=True)
        for pid in done.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def tail(self) -> str:
        return (
            f"--- {self.name} keepalived\n{tail(self.kd_log, 15)}\n"
            f"--- {self.name} hub\n{tail(self.hub_log, 15)}"
        )


def _seed_once(key: str, t: Timing, workdir: Path) -> Outcome:
    scenario = SCENARIOS[key]
    if key == "switchover":
        return Outcome.not_applicable(SEED, scenario, "n/a: no switchover in the guide")
    with Topology(3) as topology:
        services_node = topology[2]
        services_node.ns.run(
            ["ip", "addr", "add", f"{PLC_ADDRESS}/24", "dev", services_node.ifname]
        )
        services = Place(services_node.ns)
        broker = ServiceBroker(services, SERVICES_ADDRESS, workdir / "broker")
        plc = PlcSimulator(services, PLC_ADDRESS, workdir)
        audit = AuditProcess(
            services, broker.host, broker.port, workdir, f"seed-audit-{time.time_ns()}"
        )
        a = SeedNode(
            topology[0].ns,
            topology[0].ifname,
            "node-a",
            "10.77.0.2",
            True,
            workdir / "a",
            broker,
            plc,
        )
        b = SeedNode(
            topology[1].ns,
            topology[1].ifname,
            "node-b",
            "10.77.0.1",
            False,
            workdir / "b",
            broker,
            plc,
        )

        def logs() -> str:
            return f"{a.tail()}\n{b.tail()}"

        def publishing(node: str, within: float = 0.5) -> bool:
            last = audit.last_arrival()
            return (
                last is not None
                and last.delivered.source_node == node
                and time.time() - last.at < within
            )

        try:
            broker.start()
            plc.start()
            audit.start()
            a.start_hub()
            wait_until(lambda: publishing("node-a"), 20, "node-a hub publishing", logs)
            a.start_keepalived()
            b.start_keepalived()
            wait_until(a.is_master, 20, "node-a keepalived MASTER", logs)
            time.sleep(t.steady)
            start = time.time() - t.steady
            note = ""
            new = "node-b"
            if key == "kill9":
                trigger = a.kill_hub()
                wait_until(lambda: publishing("node-b"), t.seed_wait, "node-b publishing", logs)
            elif key == "hub":
                place = Place(topology[0].ns)
                blackhole(place, PLC_ADDRESS)
                trigger = time.time()
                time.sleep(t.outage)
                unblackhole(place, PLC_ADDRESS)
                note = f"API still answers: no failover; devices cut for {t.outage:g} s"
                wait_until(
                    lambda: publishing("node-a") or publishing("node-b"), 20, "publishing", logs
                )
            elif key == "host":
                topology.cut(0)
                trigger = a.kill_all()
                wait_until(lambda: publishing("node-b"), t.seed_wait, "node-b publishing", logs)
            elif key == "recovery":
                topology.cut(0)
                a.kill_all()
                wait_until(lambda: publishing("node-b"), t.seed_wait, "node-b publishing", logs)
                time.sleep(t.steady)
                start = time.time() - t.steady
                topology.restore(0)
                trigger = a.start_hub()  # the service is enabled: it starts at boot
                # keepalived only once the hub answers: started together, the first check
                # fails, FAULT runs fault.sh, which stops the hub for good (a real boot race).
                wait_until(
                    lambda: first_publish(audit.arrivals(), trigger, "node-a") is not None,
                    20,
                    "node-a hub publishing again",
                    logs,
                )
                a.start_keepalived()
                new = "node-a"
                wait_until(
                    lambda: a.is_master() and not b.hub_running(), t.seed_wait, "A back", logs
                )
                note = "both hubs run until A preempts"
            elif key == "broker":
                broker.stop()
                a.kill_hub()
                time.sleep(2.0)
                broker.start()
                trigger = time.time()
                note = "takeover from the broker's return"
                wait_until(lambda: publishing("node-b"), t.seed_wait, "node-b publishing", logs)
            else:
                raise ValueError(key)
            time.sleep(t.settle)
            arrivals = audit.arrivals()
            verdict = judge(arrivals, start, time.time(), audit.digests, audit.empties)
            took = None if key == "hub" else first_publish(arrivals, trigger, new)
            log.info("%s / %s: %s", SEED, scenario, verdict.describe())
            return Outcome.of(
                SEED, scenario, None if took is None else took - trigger, verdict, note
            )
        except ClusterTimeout as exc:
            log.error("%s / %s failed: %s", SEED, scenario, exc)
            return Outcome.not_applicable(SEED, scenario, "FAILED: see log")
        finally:
            a.close()
            b.close()
            audit.stop()
            plc.stop()
            broker.stop()


def run_seed(keys: list[str], t: Timing, workdir: Path) -> list[Outcome]:
    return [_seed_once(key, t, workdir / f"seed-{key}") for key in keys]


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
