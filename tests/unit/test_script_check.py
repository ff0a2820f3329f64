"""Tests for track scripts: the rise/fall machine exhaustively, the runner with real scripts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import signal
import time
import uuid
from pathlib import Path

import pytest

from tandem.health.script import CheckResult, RiseFall, ScriptCheck


def reference_state(results: tuple[bool, ...], rise: int, fall: int) -> bool | None:
    """The documented rule, stated over trailing runs instead of counters."""
    state: bool | None = None
    for index, ok in enumerate(results):
        run = 1
        while index - run >= 0 and results[index - run] == ok:
            run += 1
        if ok and (state is None or (state is False and run >= rise)):
            state = True
        elif not ok and state is not False and run >= fall:
            state = False
    return state


@pytest.fixture
def unique_sleep():
    """A sleep argument no other process uses, so /proc finds ours alone; leftovers are killed."""
    seconds = f"100.{uuid.uuid4().int % 10**9:09d}"
    yield seconds
    for pid in processes_with_argv(["sleep", seconds]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_with_argv(argv: list[str]) -> list[int]:
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                found.append(int(entry))
        except OSError:
            continue
    return found


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


@pytest.fixture
async def start_check():
    """Start checks as tasks and cancel every one of them at the end, even on failure."""
    tasks: list[asyncio.Task[None]] = []

    def start(check: ScriptCheck) -> asyncio.Task[None]:
        task = asyncio.create_task(check.run())
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def set_status(path: Path, code: str) -> None:
    """Replace the status file in one step: a run reading it mid-write (truncated, empty) would
    exit with a shell error and log an empty line, and the counts below would be off by one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(code)
    os.replace(tmp, path)


@pytest.fixture
def toggled_script(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A check script whose exit status is read from a file and appended to a log per run."""
    status = tmp_path / "status"
    status.write_text("0")
    runs = tmp_path / "runs.log"
    script = write_script(
        tmp_path / "check.sh",
        f'code=$(cat "{status}")\necho "$code" >> "{runs}"\nexit "$code"\n',
    )
    return script, status, runs


# --- RiseFall -------------------------------------------------------------------------------


@pytest.mark.parametrize("rise", [1, 2, 3, 4])
@pytest.mark.parametrize("fall", [1, 2, 3, 4])
def test_rise_fall_every_sequence_up_to_eight_matches_reference(rise: int, fall: int) -> None:
    for length in range(9):
        for results in itertools.product((True, False), repeat=length):
            machine = RiseFall(rise=rise, fall=fall)
            for ok in results:
                machine = machine.observe(ok)
            assert machine.state == reference_state(results, rise, fall), (results, machine)


def test_rise_fall_initial_state_is_none() -> None:
    assert RiseFall(rise=3, fall=3).state is None


def test_rise_fall_one_success_from_none_is_ok_even_with_rise_three() -> None:
    assert RiseFall(rise=3, fall=3).observe(True).state is True


def test_rise_fall_from_none_needs_fall_failures_for_ko() -> None:
    machine = RiseFall(rise=1, fall=3).observe(False).observe(False)
    assert machine.state is None
    assert machine.observe(False).state is False


def test_rise_fall_success_interrupting_failures_restarts_the_count() -> None:
    machine = RiseFall(fall=2).observe(True).observe(False).observe(True).observe(False)
    assert machine.state is True
    assert machine.observe(False).state is False


def test_rise_fall_ko_needs_rise_consecutive_successes() -> None:
    machine = RiseFall(rise=2, fall=1).observe(False)
    assert machine.state is False
    machine = machine.observe(True).observe(False).observe(True)
    assert machine.state is False
    assert machine.observe(True).state is True


def test_rise_fall_observe_leaves_original_unchanged() -> None:
    machine = RiseFall(fall=1)
    machine.observe(False)
    assert machine.state is None and machine.failures == 0


@pytest.mark.parametrize(("rise", "fall"), [(0, 1), (1, 0), (-1, 2)])
def test_rise_fall_non_positive_counts_raise(rise: int, fall: int) -> None:
    with pytest.raises(ValueError):
        RiseFall(rise=rise, fall=fall)


# --- ScriptCheck construction ---------------------------------------------------------------


def test_script_check_timeout_defaults_to_interval() -> None:
    assert ScriptCheck("c", "true", interval=3.0).timeout == 3.0


def test_script_check_plain_command_is_split_without_shell() -> None:
    check = ScriptCheck("c", "/usr/bin/test -e '/tmp/a b'")
    assert check.argv == ("/usr/bin/test", "-e", "/tmp/a b")


def test_script_check_pipeline_command_runs_under_shell() -> None:
    check = ScriptCheck("c", "pidof mosquitto | grep -q .")
    assert check.argv[:3] == ("/bin/sh", "-c", "pidof mosquitto | grep -q .")


def test_script_check_argv_sequence_is_used_verbatim() -> None:
    assert ScriptCheck("c", ["echo", "a|b"]).argv == ("echo", "a|b")


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_script_check_non_positive_interval_raises(interval: float) -> None:
    with pytest.raises(ValueError):
        ScriptCheck("c", "true", interval=interval)


# --- ScriptCheck with real processes --------------------------------------------------------


async def test_script_check_first_success_reports_ok_once(start_check) -> None:
    changes: list[CheckResult] = []
    check = ScriptCheck("alive", "true", interval=0.05, weight=-20, on_change=changes.append)
    assert check.state is None
    start_check(check)
    await wait_until(lambda: check.runs >= 4)
    assert check.state is True
    assert [c.ok for c in changes] == [True]
    assert changes[0] == CheckResult("alive", True, -20, 0, changes[0].duration, "exit 0")
    assert check.last_exit == 0
    assert check.failures == 0


async def test_script_check_first_run_is_immediate(start_check) -> None:
    check = ScriptCheck("c", "true", interval=30.0)
    started = time.monotonic()
    start_check(check)
    await wait_until(lambda: check.runs == 1, timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert check.runs == 1


async def test_script_check_fall_and_rise_count_consecutive_runs(
    start_check, toggled_script
) -> None:
    script, status, runs = toggled_script
    transitions: list[tuple[bool | None, list[str]]] = []

    def on_change(result: CheckResult) -> None:
        transitions.append((result.ok, runs.read_text().split()))

    # A generous timeout: the default (the interval, 50 ms) kills a run on a busy machine after
    # it logged its exit code, and that kill counts as one more failure than the log shows.
    check = ScriptCheck(
        "svc", str(script), interval=0.05, timeout=10.0, rise=2, fall=3, on_change=on_change
    )
    start_check(check)
    await wait_until(lambda: check.state is True)
    set_status(status, "1")
    await wait_until(lambda: check.state is False)
    set_status(status, "0")
    await wait_until(lambda: len(transitions) == 3)

    assert [ok for ok, _ in transitions] == [True, False, True]
    _, log_at_ko = transitions[1]
    trailing_failures = len(log_at_ko) - len("".join(log_at_ko).rstrip("1"))
    assert trailing_failures == 3
    _, log_at_ok = transitions[2]
    trailing_successes = len(log_at_ok) - len("".join(log_at_ok).rstrip("0"))
    assert trailing_successes == 2
    assert check.last_exit == 0
    assert check.failures >= 3


async def test_script_check_missing_program_counts_as_failure(start_check, tmp_path) -> None:
    changes: list[CheckResult] = []
    check = ScriptCheck("gone", str(tmp_path / "missing"), interval=0.05, on_change=changes.append)
    start_check(check)
    await wait_until(lambda: check.state is False)
    assert check.last_exit is None
    assert changes[0].ok is False
    assert changes[0].reason.startswith("not started")


async def test_script_check_timeout_kills_sleep_and_counts_failure(
    unique_sleep, start_check
) -> None:
    seconds = unique_sleep
    check = ScriptCheck(
        "slow", f"sleep {seconds}", interval=5.0, timeout=0.3, kill_after=0.5, fall=1
    )
    start_check(check)
    await wait_until(lambda: check.runs == 1, timeout=5.0)
    assert check.state is False
    assert check.timeouts == 1
    assert check.failures == 1
    assert check.last_exit == -15  # SIGTERM was enough for sleep
    assert 0.3 <= check.last_duration < 0.3 + 0.5 + 1.5
    assert check.last_result is not None and "timed out" in check.last_result.reason
    assert processes_with_argv(["sleep", seconds]) == []


async def test_script_check_timeout_kills_children_of_a_pipeline(unique_sleep, start_check) -> None:
    seconds = unique_sleep
    check = ScriptCheck("pipe", f"sleep {seconds} | cat", interval=5.0, timeout=0.3, kill_after=0.5)
    start_check(check)
    await wait_until(lambda: processes_with_argv(["sleep", seconds]) != [], timeout=5.0)
    await wait_until(lambda: check.runs == 1, timeout=5.0)
    assert check.timeouts == 1
    assert check.last_duration < 0.3 + 0.5 + 1.5
    assert processes_with_argv(["sleep", seconds]) == []


async def test_script_check_term_ignoring_script_is_killed_after_grace(
    unique_sleep, start_check, tmp_path
) -> None:
    seconds = unique_sleep
    script = write_script(tmp_path / "stubborn.sh", f"trap '' TERM\nsleep {seconds}\n")
    check = ScriptCheck("stubborn", str(script), interval=5.0, timeout=0.3, kill_after=0.6)
    start_check(check)
    await wait_until(lambda: check.runs == 1, timeout=5.0)
    assert check.last_exit == -9
    assert 0.3 + 0.6 <= check.last_duration < 0.3 + 0.6 + 5.0  # generous: a loaded CI host
    assert processes_with_argv(["sleep", seconds]) == []


async def test_script_check_overlapping_tick_is_skipped(start_check, tmp_path) -> None:
    log = tmp_path / "runs.log"
    lock = tmp_path / "lock"
    script = write_script(
        tmp_path / "slow.sh",
        f'mkdir "{lock}" 2>/dev/null || echo overlap >> "{log}"\n'
        f'echo start >> "{log}"\nsleep 0.35\nrmdir "{lock}"\n',
    )
    check = ScriptCheck("slow", str(script), interval=0.1, timeout=5.0)
    start_check(check)
    await wait_until(lambda: check.runs >= 3)
    assert "overlap" not in log.read_text()
    assert check.skipped >= 3
    assert check.state is True


async def test_script_check_interval_is_measured_from_previous_start(start_check, tmp_path) -> None:
    log = tmp_path / "starts.log"
    script = write_script(tmp_path / "busy.sh", f'date +%s.%N >> "{log}"\nsleep 0.4\n')
    check = ScriptCheck("busy", str(script), interval=0.5, timeout=5.0)
    start_check(check)
    await wait_until(lambda: check.runs >= 4, timeout=15.0)
    starts = [float(line) for line in log.read_text().split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # From the previous end would be >= 0.9 s per gap.
    assert sum(gaps) / len(gaps) < 0.75
    assert min(gaps) > 0.3


async def test_script_check_cancel_kills_running_script(unique_sleep, start_check) -> None:
    seconds = unique_sleep
    check = ScriptCheck("long", f"sleep {seconds}", interval=60.0, timeout=60.0)
    task = start_check(check)
    await wait_until(lambda: processes_with_argv(["sleep", seconds]) != [], timeout=5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with_argv(["sleep", seconds]) == []
    assert check.runs == 0


async def test_script_check_runs_inside_task_group_until_cancelled() -> None:
    check = ScriptCheck("tg", "true", interval=0.05)

    async def stop_after_three_runs(group_task: asyncio.Task[None]) -> None:
        await wait_until(lambda: check.runs >= 3)
        group_task.cancel()

    async def group() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(check.run())
            tg.create_task(stop_after_three_runs(asyncio.current_task()))

    with pytest.raises(asyncio.CancelledError):
        await group()
    assert check.runs >= 3
    assert check.state is True


async def test_script_check_failing_on_change_does_not_stop_checks(start_check) -> None:
    def broken(_: CheckResult) -> None:
        raise RuntimeError("callback bug")

    check = ScriptCheck("c", "true", interval=0.05, on_change=broken)
    start_check(check)
    await wait_until(lambda: check.runs >= 3)
    assert check.state is True


async def test_script_check_logs_failure_output_once_per_repeat(
    start_check, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="tandem.health.script")
    check = ScriptCheck("noisy", "sh -c 'echo broken pipe; exit 2'", interval=0.05)
    start_check(check)
    await wait_until(lambda: check.runs >= 4)
    output_lines = [r for r in caplog.records if "broken pipe" in r.getMessage()]
    assert len(output_lines) == 1
    assert check.last_exit == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
async def test_script_check_user_runs_script_as_that_user(start_check, tmp_path) -> None:
    uid = pwd.getpwnam("nobody").pw_uid
    check = ScriptCheck("as-nobody", f'test "$(id -u)" = {uid}', interval=0.05, user="nobody")
    start_check(check)
    await wait_until(lambda: check.runs >= 1)
    assert check.state is True
    assert check.last_exit == 0
