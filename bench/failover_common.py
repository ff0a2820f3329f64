"""What the failover benchmark's setups share: scenarios, timings and one row of results."""

from __future__ import annotations

from dataclasses import dataclass

from tests.netns.ha_cluster import Verdict

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
