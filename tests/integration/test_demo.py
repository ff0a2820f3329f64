"""`tandem demo` end to end: the README's first command, its results, and that it leaves nothing."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = REPO / "scripts" / "demo"
SCENARIO_TIMEOUT_S = 180  # --quick runs in about 20 s; setup and a loaded machine add to that
EXPECTED_STEPS = ("kill -9", "restart", "switchover", "SIGTERM")


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or working directory contains `text` (a /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = next(
                (
                    line
                    for line in (entry / "status").read_text().splitlines()
                    if line.startswith("State:")
                ),
                "",
            )
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if "zombie" in state:
            continue
        if text in cmdline or text in cwd:
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def _wait_gone(text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = _processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_mentioning(text)
    return left


def _role(url: str, token_file: Path) -> str:
    """A node's role, asked with the token the demo left for it in its work dir."""
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    return str(httpx.get(f"{url}/api/v1/status", timeout=2, headers=headers).json()["role"])


def _wait_role(url: str, token_file: Path, role: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, OSError):
            if _role(url, token_file) == role:
                return True
        time.sleep(0.2)
    return False


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Whatever happened in the test: nothing of the demo's process group survives it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def demo_runs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            _stop_group(proc)


def _result_rows(output: str) -> dict[str, dict[str, str]]:
    """The results table's data rows, by step: {column: cell}."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert lines, f"no results table in the output:\n{output}"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == len(header) and not set("".join(cells)) <= set("-+"):
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_demo_failover_scenario_quick_exits_zero_without_loss_or_leftovers(
    demo_runs: list[subprocess.Popen[str]],
) -> None:
    proc = subprocess.Popen(
        [str(DEMO_SCRIPT), "--scenario", "failover", "--quick", "--no-color"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo_runs.append(proc)
    started = time.monotonic()
    try:
        output, _ = proc.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        output, _ = proc.communicate()
        pytest.fail(f"the demo did not finish in {SCENARIO_TIMEOUT_S} s:\n{output}")
    elapsed = time.monotonic() - started

    assert proc.returncode == 0, output
    assert "RESULT: PASS" in output
    rows = _result_rows(output)
    assert len(rows) == len(EXPECTED_STEPS), output
    for step_name, expected in zip(rows, EXPECTED_STEPS, strict=True):
        assert expected in step_name
    for step_name, row in rows.items():
        assert row["lost"] == "0", f"{step_name}: {row}"
        assert row["duplicates"] == "0", f"{step_name}: {row}"
        assert re.fullmatch(r"\d+", row["takeover ms"]), f"{step_name}: no takeover seen: {row}"
    assert elapsed < SCENARIO_TIMEOUT_S

    match = re.search(r"^work dir: (\S+)$", output, re.MULTILINE)
    assert match, output
    workdir = match.group(1)
    assert not Path(workdir).exists()
    assert _wait_gone(workdir) == []


def test_demo_interactive_kill9_restarts_node_and_ctrl_c_stops_every_process(
    demo_runs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tandem", "demo", "--no-color", "--workdir", str(workdir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo_runs.append(proc)
    assert proc.stdout is not None
    urls: list[str] = []
    deadline = time.monotonic() + 60
    while len(urls) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.match(r"dashboard node-[ab]: (http://\S+?)/?$", line.strip())
        if match:
            urls.append(match.group(1))
    assert len(urls) == 2, f"the demo printed no dashboard URLs; exit {proc.poll()}"
    login = proc.stdout.readline().strip()
    match = re.match(r"log in as (\S+) / (\S+) ", login)
    assert match, f"the demo did not say how to log in: {login!r}"
    user, password = match.groups()
    answer = httpx.post(
        f"{urls[0]}/api/v1/login", json={"username": user, "password": password}, timeout=10
    )
    assert answer.status_code == 200 and answer.json()["role"] == "operator", answer.text

    roles: set[str] = set()
    while roles != {"MASTER", "BACKUP"} and time.monotonic() < deadline:
        roles = set()
        for url, name in zip(urls, ("node-a", "node-b"), strict=True):
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, OSError):
                roles.add(_role(url, workdir / f"{name}.token"))
        time.sleep(0.2)
    assert roles == {"MASTER", "BACKUP"}
    assert _processes_mentioning(str(workdir)) != []  # the scan does see the running pair

    # kill -9 by hand: the backup takes over, and the demo brings the node back, which then
    # takes its role back (automatic recovery).
    node_a = [p for p in _processes_mentioning(str(workdir / "node-a.yaml")) if " run " in p]
    assert len(node_a) == 1, node_a
    os.kill(int(node_a[0].split(":")[0]), signal.SIGKILL)
    assert _wait_role(urls[1], workdir / "node-b.token", "MASTER", 30), "node-b did not take over"
    assert _wait_role(urls[0], workdir / "node-a.token", "MASTER", 60), (
        "node-a was not restarted or did not take over"
    )

    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the demo
    try:
        rest, _ = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not stop within 40 s of Ctrl-C")
    assert proc.returncode == 130, rest
    assert _wait_gone(str(workdir)) == []
    # A work dir the user chose is theirs: configs and logs stay for a look afterwards.
    assert (workdir / "node-a.yaml").is_file()
    assert (workdir / "node-a.log").stat().st_size > 0


def test_demo_failover_scenario_cold_standby_reports_gap_and_exits_zero(
    demo_runs: list[subprocess.Popen[str]],
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tandem", "demo", "--scenario", "failover", "--quick"]
        + ["--standby", "cold", "--no-color"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo_runs.append(proc)
    try:
        output, _ = proc.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        output, _ = proc.communicate()
        pytest.fail(f"the demo did not finish in {SCENARIO_TIMEOUT_S} s:\n{output}")

    assert proc.returncode == 0, output
    assert "cold standby: the backup polls only once master" in output
    rows = _result_rows(output)
    assert len(rows) == len(EXPECTED_STEPS), output
    assert all(re.fullmatch(r"\d+", row["takeover ms"]) for row in rows.values()), output
    kill = next(row for step, row in rows.items() if step.startswith("kill -9"))
    # A cold backup starts polling only once it is master, at least three adverts (300 ms,
    # three 100 ms slots) after the kill: those slots were never read, so they are lost.
    assert int(kill["lost"]) > 0, output


# A fresh checkout installs its venv first (uv, or pip): allow for a slow mirror.
FRESH_TIMEOUT_S = 300


def _fresh_checkout(target: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored) in `target`, without .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            dest = target / name.decode()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    # ../shared beside the checkout, as in the repository's own layout.
    shared = REPO.parent / "shared"
    if shared.is_dir() and not (target.parent / "shared").exists():
        (target.parent / "shared").symlink_to(shared)
    return target


def _status(url: str, token_file: Path) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    with contextlib.suppress(httpx.HTTPError, ValueError, OSError):
        body = httpx.get(f"{url}/api/v1/status", timeout=2, headers=headers).json()
        return body if isinstance(body, dict) else None
    return None


def _pair_with_data(nodes: dict[str, Path]) -> bool:
    """One MASTER and one BACKUP, and the master's published count going up.

    `nodes`: URL -> the token file the demo wrote for that node.
    """
    bodies = {url: _status(url, token) for url, token in nodes.items()}
    roles = {(b or {}).get("role") for b in bodies.values()}
    if roles != {"MASTER", "BACKUP"}:
        return False
    master = next(u for u, b in bodies.items() if (b or {}).get("role") == "MASTER")
    before = (bodies[master] or {})["publisher"]["published_total"]
    time.sleep(0.5)
    after = _status(master, nodes[master]) or {}
    return bool(after.get("publisher", {}).get("published_total", 0) > before)


def test_demo_fresh_checkout_new_venv_reaches_pair_with_data_flowing(
    demo_runs: list[subprocess.Popen[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkout = _fresh_checkout(tmp_path / "tandem")
    assert not (checkout / ".venv").exists()
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(checkout / "scripts" / "demo"), "--no-color"],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo_runs.append(proc)
    assert proc.stdout is not None
    output: list[str] = []
    urls: list[str] = []
    deadline = started + FRESH_TIMEOUT_S
    while len(urls) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        match = re.match(r"dashboard node-[ab]: (http://\S+?)/?$", line.strip())
        if match:
            urls.append(match.group(1))
    assert len(urls) == 2, "".join(output)
    setup_s = next(
        (float(m.group(1)) for line in output if (m := re.search(r"ready .* in ([\d.]+) s", line))),
        None,
    )
    match = re.search(r"^work dir: (\S+)$", "".join(output), re.MULTILINE)
    assert match, "".join(output)
    workdir = Path(match.group(1))
    names = ("node-a", "node-b")
    nodes = {url: workdir / f"{name}.token" for url, name in zip(urls, names, strict=True)}
    while not _pair_with_data(nodes):
        assert time.monotonic() < deadline, f"no MASTER/BACKUP pair with data:\n{''.join(output)}"
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nfresh checkout -> MASTER/BACKUP pair with data flowing: {elapsed:.1f} s "
            f"(setup {setup_s} s)"
        )

    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=40)
    assert proc.returncode == 130
    assert (checkout / ".venv" / "bin" / "tandem").exists()
    assert elapsed < FRESH_TIMEOUT_S
