"""Takeover time of the failover engine: Tandem and keepalived 2.2.7 in every master/backup pairing.

"Backup X takes over from master Y": a priority-100 master of implementation Y and a
priority-90 nopreempt backup of implementation X (the seed guide's pair) run in two network
namespaces; the master is then crashed (SIGKILL to its process group) or stopped (SIGTERM,
which sends a priority-0 advert). The takeover time is the wall time the backup's notify
script wrote MASTER minus the wall time the signal was sent: the same notify script records
both implementations. After each run the master is restarted and preempts back, so every run
starts from the same converged pair; the signal is sent at a random phase of the advert
interval, as a real crash would be.

Profiles: v2 with 1 s adverts (the seed guide) and v3 with 0.1 s adverts (sub-second).
Run as root from the repository root:
    .venv/bin/python -m bench.failover_engine [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import table, write_json
from tests.netns.netns import Topology, netns_available
from tests.netns.vrrp_nodes import (
    Implementation,
    NotifyLog,
    VrrpNode,
    running_nodes,
    seed_pair,
)

log = logging.getLogger(__name__)

SIGNALS = ("kill -9", "SIGTERM")
PAIRINGS: tuple[tuple[Implementation, Implementation], ...] = (
    ("keepalived", "keepalived"),
    ("tandem", "tandem"),
    ("tandem", "keepalived"),
    ("keepalived", "tandem"),
)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    version: int
    advert_int: float


PROFILES = (Profile("v2 1 s", 2, 1.0), Profile("v3 0.1 s", 3, 0.1))


@dataclass(frozen=True, slots=True)
class Series:
    """All takeover times of one (profile, backup, master, signal) cell."""

    profile: str
    backup: Implementation
    master: Implementation
    signal: str
    expected_s: float
    takeovers_s: tuple[float, ...]
    failures: int

    def row(self) -> list[object]:
        t = self.takeovers_s
        return [
            self.profile,
            self.backup,
            self.master,
            self.signal,
            len(t),
            statistics.median(t) if t else None,
            min(t) if t else None,
            max(t) if t else None,
            self.expected_s,
            self.failures,
        ]


class PairRunner:
    """One converged master/backup pair that can be knocked over and brought back repeatedly."""

    def __init__(
        self,
        topo: Topology,
        work: Path,
        profile: Profile,
        backup_impl: Implementation,
        master_impl: Implementation,
    ) -> None:
        self.notify = NotifyLog(work)
        master_spec, backup_spec = seed_pair(
            topo[0], topo[1], version=profile.version, advert_int=profile.advert_int
        )
        self.profile = profile
        self.master = VrrpNode(master_impl, topo[0].ns, master_spec, work / "master", self.notify)
        self.backup = VrrpNode(backup_impl, topo[1].ns, backup_spec, work / "backup", self.notify)

    def converge(self) -> None:
        """Fresh start: master first, so the backup joins a live segment and stays BACKUP."""
        for node in (self.master, self.backup):
            node.stop()
        timeout = self.master.spec.master_down + 15
        self.master.start_and_wait("MASTER", timeout=timeout)
        self.backup.start_and_wait("BACKUP", timeout=timeout)

    def settle(self) -> None:
        """A few adverts in, then a random phase of the interval, like a crash at any moment."""
        interval = self.profile.advert_int
        time.sleep(max(1.0, 3 * interval) + random.uniform(0, interval))

    def takeover(self, how: str) -> float:
        lost = self.master.kill() if how == "kill -9" else self.master.terminate()
        took = self.notify.wait_for("backup", "MASTER", since=lost, timeout=15)
        return took.time - lost

    def restore(self) -> None:
        """Restart the master; it preempts the nopreempt backup back to BACKUP."""
        back = self.master.start()
        timeout = self.master.spec.master_down + 15
        self.notify.wait_for("master", "MASTER", since=back, timeout=timeout)
        self.notify.wait_for("backup", "BACKUP", since=back, timeout=timeout)


def measure(
    profile: Profile, backup_impl: Implementation, master_impl: Implementation, runs: int
) -> list[Series]:
    times: dict[str, list[float]] = {s: [] for s in SIGNALS}
    failures = dict.fromkeys(SIGNALS, 0)
    with Topology(2) as topo, tempfile.TemporaryDirectory(prefix="tdm-bench-") as tmp:
        runner = PairRunner(topo, Path(tmp), profile, backup_impl, master_impl)
        with running_nodes([runner.master, runner.backup]):
            runner.converge()
            for attempt in range(runs):
                # Alternate the signals so both see the same host conditions.
                for how in SIGNALS:
                    try:
                        runner.settle()
                        took = runner.takeover(how)
                    except AssertionError as exc:
                        failures[how] += 1
                        log.warning("no takeover, starting the pair afresh: %s", exc)
                        runner.converge()
                        continue
                    times[how].append(took)
                    log.info(
                        "%s backup %s <- master %s, %s #%d: %.3f s",
                        profile.name, backup_impl, master_impl, how, attempt + 1, took,
                    )  # fmt: skip
                    try:
                        runner.restore()
                    except AssertionError as exc:
                        # Not a takeover failure, but the next run needs a converged pair.
                        log.warning("master did not return, starting the pair afresh: %s", exc)
                        runner.converge()
        backup_spec = runner.backup.spec
    expected = {"kill -9": backup_spec.master_down, "SIGTERM": backup_spec.skew}
    return [
        Series(
            profile=profile.name,
            backup=backup_impl,
            master=master_impl,
            signal=how,
            expected_s=round(expected[how], 3),
            takeovers_s=tuple(round(t, 4) for t in times[how]),
            failures=failures[how],
        )
        for how in SIGNALS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per cell (median of these)")
    parser.add_argument("--quick", action="store_true", help="2 runs per cell, for a smoke test")
    args = parser.parse_args(argv)
    runs = 2 if args.quick else args.runs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # SIGTERM unwinds like Ctrl-C, so namespaces and daemons are torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok, reason = netns_available()
    if not ok:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    series: list[Series] = []
    for profile in PROFILES:
        for backup_impl, master_impl in PAIRINGS:
            series += measure(profile, backup_impl, master_impl, runs)
    columns = [
        "profile", "backup", "master", "signal", "runs",
        "median s", "min s", "max s", "3xadv+skew / skew", "failed",
    ]  # fmt: skip
    print(
        table(
            "Takeover time: backup X takes over from master Y", columns, [s.row() for s in series]
        )
    )
    path = write_json(
        "failover_engine",
        {
            "runs_per_cell": runs,
            "definition": "backup X takes over from master Y: time of X's MASTER notify line "
            "minus time the signal was sent to Y",
            "series": [
                {
                    "profile": s.profile,
                    "backup": s.backup,
                    "master": s.master,
                    "signal": s.signal,
                    "expected_s": s.expected_s,
                    "takeovers_s": list(s.takeovers_s),
                    "failures": s.failures,
                }
                for s in series
            ],
        },
    )
    print(f"\nJSON: {path}")
    return 0 if all(s.failures == 0 for s in series) else 1


if __name__ == "__main__":
    raise SystemExit(main())
