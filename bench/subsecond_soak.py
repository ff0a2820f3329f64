"""Soak of sub-second VRRP (v3, 0.1 s adverts) between two Tandem nodes with every core busy.

The question: does a 0.1 s advert interval (master down after 0.365 s at priority 90) survive
a loaded host without spurious failovers, and how fast is the takeover under that load?
Two Tandem engines run in network namespaces while one CPU burner per core spins at normal
priority for --duration seconds; every transition in that window is spurious. Then the master
is killed with SIGKILL --kills times (restarted in between) and the takeover times reported.

Run as root from the repository root:
    .venv/bin/python -m bench.subsecond_soak [--duration 300] [--kills 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import table, write_json
from tests.netns.netns import Topology, netns_available
from tests.netns.vrrp_nodes import AdvertSniffer, NotifyLog, VrrpNode, running_nodes, seed_pair

log = logging.getLogger(__name__)

ADVERT_INT = 0.1


BURN = [sys.executable, "-c", "while True: pass"]


class CpuBurners:
    """Busy-looping processes at normal priority; any that dies is replaced and counted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.restarts = 0
        self._burners: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurners:
        self._burners = [subprocess.Popen(BURN, start_new_session=True) for _ in range(self.count)]
        return self

    def keep_alive(self) -> None:
        # On a shared host something else may kill them; the soak must stay loaded.
        for index, burner in enumerate(self._burners):
            if burner.poll() is not None:
                log.warning(
                    "CPU burner %d exited (%s), restarting it", burner.pid, burner.returncode
                )
                self._burners[index] = subprocess.Popen(BURN, start_new_session=True)
                self.restarts += 1

    def __exit__(self, *exc: object) -> None:
        for burner in self._burners:
            burner.kill()
            burner.wait()


def max_gap(times: list[float]) -> float | None:
    """Longest silence between consecutive adverts, the margin that decides a false failover."""
    if len(times) < 2:
        return None
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def soak(duration: float, kills: int, burner_count: int) -> dict[str, object]:
    with Topology(2) as topo, tempfile.TemporaryDirectory(prefix="tdm-soak-") as tmp:
        work = Path(tmp)
        notify = NotifyLog(work)
        master_spec, backup_spec = seed_pair(topo[0], topo[1], version=3, advert_int=ADVERT_INT)
        master = VrrpNode("tandem", topo[0].ns, master_spec, work / "master", notify)
        backup = VrrpNode("tandem", topo[1].ns, backup_spec, work / "backup", notify)
        with running_nodes([master, backup]), AdvertSniffer(topo[1].ns) as sniffer:
            master.start_and_wait("MASTER")
            backup.start_and_wait("BACKUP")
            time.sleep(1.0)
            with CpuBurners(burner_count) as burners:
                soak_start = time.time()
                log.info("soaking %.0f s with %d burners", duration, burner_count)
                while time.time() < soak_start + duration:
                    time.sleep(min(0.5, max(0.0, soak_start + duration - time.time())))
                    burners.keep_alive()
                soak_end = time.time()
                spurious = [e for e in notify.events() if soak_start <= e.time <= soak_end]
                gaps = [
                    a.time for a in sniffer.from_(master_spec.src, soak_start) if a.time <= soak_end
                ]
                adverts_seen = len(gaps)
                longest = max_gap(gaps)
                master_stats = master.stats()
                backup_stats = backup.stats()
                takeovers: list[float] = []
                for attempt in range(kills):
                    killed = master.kill()
                    took = notify.wait_for("backup", "MASTER", since=killed, timeout=10)
                    takeovers.append(took.time - killed)
                    log.info("kill %d: takeover %.3f s", attempt + 1, takeovers[-1])
                    if attempt + 1 < kills:
                        # The priority-100 node preempts back; the backup steps down again.
                        back = master.start()
                        notify.wait_for("master", "MASTER", since=back, timeout=15)
                        notify.wait_for("backup", "BACKUP", since=back, timeout=15)
                        time.sleep(1.0)
    return {
        "duration_s": duration,
        "burners": burner_count,
        "burner_restarts": burners.restarts,
        "advert_int_s": ADVERT_INT,
        "master_down_s": backup_spec.master_down,
        "spurious_transitions": [
            {"time": e.time, "node": e.node, "state": e.state} for e in spurious
        ],
        "master_adverts_seen_by_backup": adverts_seen,
        "max_advert_gap_s": longest,
        "master_stats": master_stats,
        "backup_stats": backup_stats,
        "takeover_s": takeovers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="soak seconds")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 takeovers after the soak")
    parser.add_argument(
        "--burners", type=int, default=os.cpu_count() or 2, help="busy-loop processes"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # SIGTERM unwinds like Ctrl-C, so namespaces and daemons are torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok, reason = netns_available()
    if not ok:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    result = soak(args.duration, args.kills, args.burners)
    takeovers = result["takeover_s"]
    assert isinstance(takeovers, list)
    spurious = result["spurious_transitions"]
    assert isinstance(spurious, list)
    rows = [
        ["soak duration (s)", args.duration],
        ["CPU burners", args.burners],
        ["burners restarted (killed by others)", result["burner_restarts"]],
        ["advert interval (s)", ADVERT_INT],
        ["master_down_interval at prio 90 (s)", result["master_down_s"]],
        ["spurious transitions", len(spurious)],
        ["master adverts seen by backup", result["master_adverts_seen_by_backup"]],
        ["longest advert gap (s)", result["max_advert_gap_s"]],
        ["kill -9 runs", len(takeovers)],
        ["takeover median (s)", statistics.median(takeovers)],
        ["takeover min (s)", min(takeovers)],
        ["takeover max (s)", max(takeovers)],
    ]
    title = "Sub-second VRRP soak (Tandem <-> Tandem, v3, loaded host)"
    print(table(title, ["metric", "value"], rows))
    print(f"\nJSON: {write_json('subsecond_soak', result)}")
    return 0 if not spurious else 1


if __name__ == "__main__":
    raise SystemExit(main())
