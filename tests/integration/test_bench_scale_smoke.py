"""bench/scale.py in its quick mode: real simulators, hub, broker and subscriber, one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import RESULTS
from bench.scale import Result, Scenario, goals

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_quick_run_measures_every_slot_of_ten_devices() -> None:
    name = "scale-smoke"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--output", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "10 x 20 @ 1 s" in done.stdout
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    (row,) = doc["results"]
    assert row["expected"] >= 10 and row["received"] + row["lost"] == row["expected"]
    assert row["duplicates"] == 0
    assert row["rss_max_mb"] > 10 and row["cpu_hub_pct"] is not None
    assert row["received"] > 0 and row["jitter_p50_ms"] is not None


def test_scale_goals_judge_the_better_thousand_device_row() -> None:
    def row(lost: int, jitter: float | None) -> Result:
        return Result(
            "x",
            1000,
            20,
            1.0,
            10.0,
            100.0,
            20.0,
            1.0,
            1.0,
            1.0,
            jitter,
            1.0,
            1.0,
            100,
            100 - lost,
            lost,
            0,
            1.0,
        )

    judged = goals([row(5, 3.0), row(0, 19.0)])
    assert judged["lost"]["value"] == 0 and judged["jitter_p99_ms"]["value"] == 19.0
    assert goals([]) == {}


def test_scale_spread_group_phase_is_inside_the_interval() -> None:
    group = Scenario(1, 2, 1.0, spread=True).group()
    phases = [group.phase_seconds(f"d{i}") for i in range(200)]
    assert all(0 <= p < 0.9 for p in phases)
    assert len(set(phases)) == 200
    assert Scenario(1, 2, 1.0).group().phase_seconds("d0") == 0.0
