"""Keeps bench/dashboard.py runnable: a tiny --quick run through real processes, and its math."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from bench.dashboard import advert_gaps, table_rows
from bench.report import RESULTS
from tests.integration.test_bench_smoke import ROOT, results_name  # noqa: F401 - fixture

BENCH_TIMEOUT_S = 240.0


def test_advert_gaps_longest_p99_and_late_count() -> None:
    stamps = [0.0, 0.1, 0.2, 0.45, 0.55, 0.65]
    gaps = advert_gaps(stamps, interval_s=0.1)
    assert (gaps.adverts, gaps.max_gap_ms, gaps.late) == (6, 250.0, 1)
    assert gaps.p99_gap_ms == 250.0
    assert advert_gaps([1.0], 0.1).max_gap_ms is None


def test_table_rows_one_row_per_tag_count_gaps_per_window() -> None:
    window = {"adverts": 10, "max_gap_ms": 104.0, "p99_gap_ms": 104.0, "late": 0}
    result = {
        "tags": 1000,
        "page_busy_pct": 4.5,
        "page_cpu_pct": 3.0,
        "first_paint_ms": 300.0,
        "tags_visible_ms": 420.0,
        "hub_cpu_pct_idle": 10.0,
        "hub_cpu_per_viewer_1": 0.5,
        "hub_cpu_per_viewer_3": 0.4,
        "adverts": {"0": window, "1": {**window, "max_gap_ms": 160.0, "late": 2}, "3": window},
        "overruns": {"0": 0, "1": 0, "3": 4},
    }
    (row,) = table_rows([result])
    assert row[:4] == [1000, 4.5, 3.0, 300.0]
    assert row[-3:] == ["104 / 160 / 104", "0 / 2 / 0", "0 / 0 / 4"]


@pytest.mark.slow
def test_dashboard_bench_quick_run_measures_pages_hub_and_adverts(results_name: str) -> None:  # noqa: F811
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.dashboard", "--tags", "200", "--quick"]
        + ["--output", results_name],
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

    assert process.returncode == 0, stderr[-3000:]
    assert "| tags | page busy %" in stdout
    doc = json.loads((RESULTS / f"{results_name}.json").read_text())
    (result,) = doc["results"]
    assert result["tags"] == 200 and result["master_kept_role"] is True
    assert 0 < result["first_paint_ms"] < 30_000
    assert 0 < result["tags_visible_ms"] < 30_000
    assert 0 < result["page_busy_pct"] < 100 and len(result["page_busy_pct_3_pages"]) == 3
    assert 0 < result["hub_cpu_pct_idle"] < 200
    # Five-second windows of 0.1 s adverts: about fifty in each, all from the master.
    assert all(w["adverts"] >= 25 for w in result["adverts"].values()), result["adverts"]
    assert result["page_errors"] == []
