"""Keeps bench/writes.py runnable: a --quick run through real processes, and its numbers' shape."""

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

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 240.0


@pytest.fixture
def results_name() -> Iterator[str]:
    name = f"bench-writes-smoke-{uuid.uuid4().hex[:8]}"
    existed = RESULTS.exists()
    try:
        yield name
    finally:
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
        if not existed and RESULTS.exists() and not any(RESULTS.iterdir()):
            RESULTS.rmdir()


@pytest.mark.slow
def test_writes_bench_quick_run_answers_every_request_once(results_name: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.writes", "--quick", "--output", results_name],
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
    assert "| setup" in stdout
    doc = json.loads((RESULTS / f"{results_name}.json").read_text())
    rows = {(r["setup"], r["path"]): r for r in doc["results"]}
    single = rows[("single node", "MQTT")]
    assert single["requests"] == 60 and single["codes"] == {"0": 60}
    assert 0 < single["p50_ms"] <= single["p99_ms"] <= single["max_ms"]
    pair = rows[("pair, kill -9", "MQTT, all")]
    assert pair["requests"] == 60 and pair["executed_twice"] == 0
    assert sum(pair["codes"].values()) == 60
