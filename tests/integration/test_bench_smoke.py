"""Keeps bench/throughput.py runnable: a tiny --quick run through real processes, and its math."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.report import RESULTS
from bench.throughput import Result, goals, rate_between, table_rows

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 90.0


@pytest.fixture
def results_name() -> Iterator[str]:
    """A results/<name>.json only this test writes, removed afterwards whatever happened."""
    name = f"bench-smoke-{uuid.uuid4().hex[:8]}"
    existed = RESULTS.exists()
    try:
        yield name
    finally:
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
        if not existed and RESULTS.exists() and not any(RESULTS.iterdir()):
            RESULTS.rmdir()


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the benchmark in its own session, so a timeout kills every process it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.throughput", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"benchmark did not finish in {BENCH_TIMEOUT_S} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("hub", ["run", "pipeline"])
def test_throughput_bench_quick_run_measures_every_path(hub: str, results_name: str) -> None:
    done = run_bench("--quick", "--hub", hub, "--output", results_name)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "| devices | path" in done.stdout
    doc = json.loads((RESULTS / f"{results_name}.json").read_text())
    assert doc["config"]["hub"] == hub
    by_path = {r["path"]: r for r in doc["results"]}
    assert set(by_path) == {"bare", "end-to-end"}
    bare, e2e = by_path["bare"], by_path["end-to-end"]
    assert bare["values_per_s"] > 1000
    assert e2e["values_per_s"] > 1000
    assert e2e["messages_per_s"] > 1
    # 250 registers per message: the subscriber counted values, not just messages.
    assert e2e["values_per_s"] == pytest.approx(e2e["messages_per_s"] * 250, rel=0.01)
    assert e2e["seq_gaps"] == 0
    assert e2e["tag_errors"] == 0
    assert 10 < e2e["hub_rss_max_mb"] < 1000
    assert e2e["hub_exit"] == 0, "the hub did not stop in order on SIGTERM"
    assert doc["goals"]["devices"] == 1


def test_rate_between_uses_reports_inside_the_window_only() -> None:
    lines = [
        {"t": 9.0, "values": 0},
        {"t": 10.0, "values": 100},
        {"t": 12.0, "values": 500},
        {"t": 13.0, "values": 10_000},
    ]

    assert rate_between(lines, "values", 10.0, 12.5) == pytest.approx(200.0)


def test_rate_between_too_few_reports_raises() -> None:
    with pytest.raises(RuntimeError, match="too few"):
        rate_between([{"t": 1.0, "values": 5}], "values", 0.0, 2.0)


def _result(devices: int, path: str, rate: float, rss: float | None = None) -> Result:
    return Result(devices, path, rate, None, rss, {}, None, 0)


def test_goals_four_devices_at_85_percent_of_bare_pass() -> None:
    results = [
        _result(1, "bare", 300_000.0),
        _result(1, "end-to-end", 100_000.0, 60.0),
        _result(4, "bare", 400_000.0),
        _result(4, "end-to-end", 340_000.0, 79.0),
    ]

    verdict = goals(results)

    assert verdict["devices"] == 4
    assert verdict["ratio_to_bare"] == pytest.approx(0.85)
    assert verdict["ratio_ok"] and verdict["values_per_s_ok"] and verdict["rss_ok"]


def test_goals_slow_hub_fails_ratio_and_rate() -> None:
    results = [_result(4, "bare", 400_000.0), _result(4, "end-to-end", 90_000.0, 81.0)]

    verdict = goals(results)

    assert not verdict["ratio_ok"]
    assert not verdict["values_per_s_ok"]
    assert not verdict["rss_ok"]


def test_table_rows_percent_of_bare_matches_device_count() -> None:
    results = [
        _result(1, "bare", 200_000.0),
        _result(4, "bare", 400_000.0),
        _result(4, "end-to-end", 100_000.0),
    ]

    rows = table_rows(results)

    assert rows[0][4] is None
    assert rows[2][4] == pytest.approx(25.0)
