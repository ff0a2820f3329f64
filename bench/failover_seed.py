"""The failover benchmark's "keepalived seed" setup: the NeuronEX guide reproduced exactly.

Real keepalived 2.2.7 with the guide's config (VRRPv2, advert 1 s, PASS auth, priorities
100/90, backup nopreempt, a curl check every 5 s, fall 3 on the master) starting and stopping
a single-node Tandem hub through the guide's notify scripts. Every scenario builds its own
namespaces, broker, PLC, audit subscriber and work directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.failover_common import SCENARIOS, SEED, SEED_API_PORT, Outcome, Timing
from tests.netns.ha_cluster import (
    PLC_ADDRESS,
    SERVICES_ADDRESS,
    TANDEM,
    VIP,
    AuditProcess,
    ClusterTimeout,
    NodePlan,
    Place,
    PlcSimulator,
    ServiceBroker,
    blackhole,
    first_publish,
    judge,
    node_config,
    tail,
    unblackhole,
    wait_until,
)
from tests.netns.netns import Netns, Topology

log = logging.getLogger(__name__)


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
        start, stop, check = self._write_scripts(hub_config)
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

    def _write_scripts(self, hub_config: Path) -> tuple[Path, Path, Path]:
        """The guide's master.sh / stop.sh / check_alive.sh, with systemctl played by sh."""
        workdir, pid, hub_log = self.workdir, self.pid_file, self.hub_log
        start = workdir / "master.sh"
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
            f'if [ -f {pid} ]; then kill "$(cat {pid})" 2>/dev/null; rm -f {pid}; fi\n'
        )
        check = workdir / "check_alive.sh"
        check.write_text(
            "#!/bin/bash\n"
            f'if ! curl 127.0.0.1:{SEED_API_PORT} >/dev/null 2>&1; then echo "hub start failed"; '
            "exit 1; fi\n"
        )
        for script in (start, stop, check):
            script.chmod(0o755)
        return start, stop, check

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

    def _last_state(self) -> str | None:
        text = self.kd_log.read_text(errors="replace") if self.kd_log.exists() else ""
        found = {
            state: text.rfind(f"Entering {state} STATE") for state in ("MASTER", "BACKUP", "FAULT")
        }
        state, at = max(found.items(), key=lambda item: item[1])
        return state if at >= 0 else None

    def is_master(self) -> bool:
        return self._last_state() == "MASTER"

    def is_backup(self) -> bool:
        return self._last_state() == "BACKUP"

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


class SeedBench:
    """One seed scenario's world: fresh namespaces, broker, PLC, audit and the two nodes."""

    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        services_node = topology[2]
        services_node.ns.run(
            ["ip", "addr", "add", f"{PLC_ADDRESS}/24", "dev", services_node.ifname]
        )
        services = Place(services_node.ns)
        self.broker = ServiceBroker(services, SERVICES_ADDRESS, workdir / "broker")
        self.plc = PlcSimulator(services, PLC_ADDRESS, workdir)
        self.audit = AuditProcess(
            services, self.broker.host, self.broker.port, workdir, f"seed-audit-{time.time_ns()}"
        )
        node_a, node_b = topology[0], topology[1]
        args = (self.broker, self.plc)
        self.a = SeedNode(
            node_a.ns, node_a.ifname, "node-a", "10.77.0.2", True, workdir / "a", *args
        )
        self.b = SeedNode(
            node_b.ns, node_b.ifname, "node-b", "10.77.0.1", False, workdir / "b", *args
        )

    def logs(self) -> str:
        return f"{self.a.tail()}\n{self.b.tail()}"

    def publishing(self, node: str, within: float = 0.5) -> bool:
        last = self.audit.last_arrival()
        return (
            last is not None
            and last.delivered.source_node == node
            and time.time() - last.at < within
        )

    def start(self) -> None:
        """The guide's steady state: A's hub publishing, A MASTER, B BACKUP with its hub off.

        B's keepalived starts only once A is MASTER. Started together, B often wins the first
        election: A stays in FAULT until its first check (a curl) has run, which costs more
        than the 39 ms by which priority 100's down timer beats priority 90's. B then runs
        notify_master and, a moment later, notify_backup; keepalived forks both without
        waiting, and when stop.sh reads the pid file before master.sh has written it, B's hub
        keeps running: both hubs publish (duplicates) and a "host loss" then looks like a
        0.08 s takeover. Nothing survives from one scenario to the next (fresh namespaces,
        work directory, pid files and broker store each time); this race was the instability.
        """
        a, b = self.a, self.b
        self.broker.start()
        self.plc.start()
        self.audit.start()
        a.start_hub()
        wait_until(lambda: self.publishing("node-a"), 20, "node-a hub publishing", self.logs)
        a.start_keepalived()
        wait_until(a.is_master, 20, "node-a keepalived MASTER", self.logs)
        b.start_keepalived()
        wait_until(b.is_backup, 20, "node-b keepalived BACKUP", self.logs)

    def check_steady(self) -> None:
        """Refuse to measure from a state the scenario does not describe."""
        if self.b.hub_running() or not self.a.is_master() or not self.b.is_backup():
            raise ClusterTimeout(f"not in the guide's steady state before the fault\n{self.logs()}")

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.audit.stop()
        self.plc.stop()
        self.broker.stop()


def _seed_fault(key: str, w: SeedBench, t: Timing) -> tuple[float, float, str, str]:
    """Inject the fault; returns (window start, trigger time, node publishing next, note)."""
    a, topology = w.a, w.topology
    start = time.time() - t.steady
    if key == "kill9":
        trigger = a.kill_hub()
        wait_until(lambda: w.publishing("node-b"), t.seed_wait, "node-b publishing", w.logs)
        return start, trigger, "node-b", ""
    if key == "hub":
        place = Place(topology[0].ns)
        blackhole(place, PLC_ADDRESS)
        trigger = time.time()
        time.sleep(t.outage)
        unblackhole(place, PLC_ADDRESS)
        wait_until(
            lambda: w.publishing("node-a") or w.publishing("node-b"), 20, "publishing", w.logs
        )
        return (
            start,
            trigger,
            "node-b",
            f"API still answers: no failover; devices cut for {t.outage:g} s",
        )
    if key == "host":
        topology.cut(0)
        trigger = a.kill_all()
        wait_until(lambda: w.publishing("node-b"), t.seed_wait, "node-b publishing", w.logs)
        return start, trigger, "node-b", ""
    if key == "recovery":
        return _seed_recovery(w, t)
    if key == "broker":
        w.broker.stop()
        a.kill_hub()
        time.sleep(2.0)
        w.broker.start()
        trigger = time.time()
        wait_until(lambda: w.publishing("node-b"), t.seed_wait, "node-b publishing", w.logs)
        return start, trigger, "node-b", "takeover from the broker's return"
    raise ValueError(key)


def _seed_recovery(w: SeedBench, t: Timing) -> tuple[float, float, str, str]:
    a, b = w.a, w.b
    w.topology.cut(0)
    a.kill_all()
    wait_until(lambda: w.publishing("node-b"), t.seed_wait, "node-b publishing", w.logs)
    time.sleep(t.steady)
    start = time.time() - t.steady
    w.topology.restore(0)
    trigger = a.start_hub()  # the service is enabled: it starts at boot
    # keepalived only once the hub answers: started together, the first check fails, FAULT
    # runs fault.sh, which stops the hub for good (a real boot race).
    wait_until(
        lambda: first_publish(w.audit.arrivals(), trigger, "node-a") is not None,
        20,
        "node-a hub publishing again",
        w.logs,
    )
    a.start_keepalived()
    wait_until(lambda: a.is_master() and not b.hub_running(), t.seed_wait, "A back", w.logs)
    return start, trigger, "node-a", "both hubs run until A preempts"


def _seed_once(key: str, t: Timing, workdir: Path) -> Outcome:
    scenario = SCENARIOS[key]
    if key == "switchover":
        return Outcome.not_applicable(SEED, scenario, "n/a: no switchover in the guide")
    with Topology(3) as topology:
        w = SeedBench(topology, workdir)
        try:
            w.start()
            time.sleep(t.steady)
            w.check_steady()
            start, trigger, new, note = _seed_fault(key, w, t)
            time.sleep(t.settle)
            arrivals = w.audit.arrivals()
            verdict = judge(arrivals, start, time.time(), w.audit.digests, w.audit.empties)
            took = None if key == "hub" else first_publish(arrivals, trigger, new)
            log.info("%s / %s: %s", SEED, scenario, verdict.describe())
            return Outcome.of(
                SEED, scenario, None if took is None else took - trigger, verdict, note
            )
        except ClusterTimeout as exc:
            log.error("%s / %s failed: %s", SEED, scenario, exc)
            return Outcome.not_applicable(SEED, scenario, "FAILED: see log")
        finally:
            w.close()


def run_seed(keys: list[str], t: Timing, workdir: Path) -> list[Outcome]:
    return [_seed_once(key, t, workdir / f"seed-{key}") for key in keys]
