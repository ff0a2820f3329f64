"""Tests for notify hooks and the shared command rules, with real short scripts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import time
import uuid
from pathlib import Path

import pytest

from tandem.health.process import CommandError, command_argv, needs_shell, run_command
from tandem.hooks import NotifyConfig, NotifyRunner, fifo_line, write_fifo_line


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A hook that appends its arguments, one call per line, and its parent's name."""
    out = tmp_path / "calls.log"
    script = write_script(
        tmp_path / "record.sh",
        f'echo "$(cat /proc/$PPID/comm)|$#|$*" >> "{out}"\n',
    )
    return script, out


def processes_with_argv(argv: list[str]) -> list[int]:
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                    found.append(int(entry))
    return found


@pytest.fixture
def unique_sleep():
    """A sleep argument no other process uses, so /proc finds ours alone; leftovers are killed."""
    seconds = f"100.{uuid.uuid4().int % 10**9:09d}"
    yield seconds
    for pid in processes_with_argv(["sleep", seconds]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def calls(out: Path) -> list[tuple[str, int, str]]:
    rows = []
    for line in out.read_text().splitlines():
        parent, count, args = line.split("|", 2)
        rows.append((parent, int(count), args))
    return rows


# --- command rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "/etc/keepalived/check_alive.sh",
        "killall -0 haproxy",
        "/usr/bin/test -e '/tmp/a b'",
        'curl -sf "http://127.0.0.1:8080/health"',
        "pidof mosquitto",
    ],
)
def test_needs_shell_plain_command_is_false(command: str) -> None:
    assert needs_shell(command) is False


@pytest.mark.parametrize(
    "command",
    [
        "pidof a | grep b",
        "a && b",
        "a; b",
        "a > /dev/null",
        "a < in",
        "echo $HOME",
        "echo `date`",
        "ls *.conf",
        "ls conf?",
        "(a)",
        "a\nb",
        "cd /tmp",
        "export A=1",
        "FOO=bar cmd",
        "ls ~/x",
        "echo 'unbalanced",
    ],
)
def test_needs_shell_shell_syntax_is_true(command: str) -> None:
    assert needs_shell(command) is True


def test_command_argv_plain_keeps_quoted_space_in_one_argument() -> None:
    assert command_argv("/bin/echo 'a b' c") == ["/bin/echo", "a b", "c"]


def test_command_argv_plain_appends_extra_arguments() -> None:
    assert command_argv("/x/notify.sh -v", ["INSTANCE", "VI_1"]) == [
        "/x/notify.sh",
        "-v",
        "INSTANCE",
        "VI_1",
    ]


def test_command_argv_shell_passes_extra_arguments_as_positional_parameters() -> None:
    assert command_argv("a | b", ["X", "Y"]) == ["/bin/sh", "-c", "a | b", "sh", "X", "Y"]


@pytest.mark.parametrize("command", ["", "   "])
def test_command_argv_empty_raises(command: str) -> None:
    with pytest.raises(CommandError):
        command_argv(command)


async def test_run_command_plain_command_has_no_shell_parent(recorder) -> None:
    script, out = recorder
    result = await run_command(command_argv(f"{script} 'a b' c"), timeout=5.0)
    assert result.ok
    [(parent, count, args)] = calls(out)
    assert parent != "sh"
    assert count == 2
    assert args == "a b c"


async def test_run_command_pipeline_runs_under_shell(recorder) -> None:
    script, out = recorder
    result = await run_command(command_argv(f"{script} one | cat"), timeout=5.0)
    assert result.ok
    [(parent, count, args)] = calls(out)
    assert parent == "sh"
    assert (count, args) == (1, "one")


async def test_run_command_output_tail_and_exit_code_are_reported() -> None:
    result = await run_command(["/bin/sh", "-c", "echo first; echo last >&2; exit 4"], 5.0)
    assert result.exit_code == 4
    assert not result.ok
    assert result.last_line == "last"
    assert result.describe() == "exit 4"


async def test_run_command_background_child_does_not_hold_the_result() -> None:
    started = time.monotonic()
    result = await run_command(["/bin/sh", "-c", "sleep 3 & echo done"], 5.0)
    assert result.ok
    assert time.monotonic() - started < 2.0
    assert result.last_line == "done"


@pytest.mark.parametrize("yields_before_cancel", range(8))
async def test_run_command_cancelled_at_any_point_leaves_no_pipeline_child(
    unique_sleep, yields_before_cancel: int
) -> None:
    task = asyncio.create_task(run_command(["/bin/sh", "-c", f"sleep {unique_sleep} | cat"], 30.0))
    for _ in range(yields_before_cancel):
        await asyncio.sleep(0)
    await asyncio.sleep(0.002 * yields_before_cancel)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert processes_with_argv(["sleep", unique_sleep]) == []


# --- NotifyRunner ---------------------------------------------------------------------------


async def test_notify_runner_generic_notify_gets_instance_name_state_priority(recorder) -> None:
    script, out = recorder
    config = NotifyConfig(instance="VI_1", notify=str(script))
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 100)
        runner.submit("FAULT", 0)
        await runner.drain()
    assert [(count, args) for _, count, args in calls(out)] == [
        (4, "INSTANCE VI_1 MASTER 100"),
        (4, "INSTANCE VI_1 FAULT 0"),
    ]
    assert [run.name for run in runner.history] == ["notify", "notify"]
    assert runner.history[0].argv == (str(script), "INSTANCE", "VI_1", "MASTER", "100")


async def test_notify_runner_state_script_runs_as_written_before_generic(tmp_path) -> None:
    out = tmp_path / "order.log"
    hook = write_script(tmp_path / "hook.sh", f'echo "$*" >> "{out}"\n')
    config = NotifyConfig(
        instance="VI_1",
        notify_master=f"{hook} 'became master'",
        notify_backup=f"{hook} backup",
        notify=f"{hook} generic",
    )
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 90)
        runner.submit("BACKUP", 90)
        runner.submit("STOP", 90)
        await runner.drain()
    assert out.read_text().splitlines() == [
        "became master",
        "generic INSTANCE VI_1 MASTER 90",
        "backup",
        "generic INSTANCE VI_1 BACKUP 90",
        "generic INSTANCE VI_1 STOP 90",
    ]
    assert [run.name for run in runner.history] == [
        "notify_master",
        "notify",
        "notify_backup",
        "notify",
        "notify",
    ]


async def test_notify_runner_transitions_run_in_submission_order_despite_durations(
    tmp_path,
) -> None:
    out = tmp_path / "order.log"
    hook = write_script(
        tmp_path / "hook.sh",
        f'echo "start $1" >> "{out}"\nsleep "$2"\necho "end $1" >> "{out}"\n',
    )
    config = NotifyConfig(
        instance="VI_1",
        notify_master=f"{hook} master 0.6",
        notify_backup=f"{hook} backup 0.05",
        notify_fault=f"{hook} fault 0.3",
    )
    async with NotifyRunner(config) as runner:
        for state in ("MASTER", "BACKUP", "FAULT", "MASTER", "BACKUP"):
            runner.submit(state, 100)
        await runner.drain()
    labels = ["master", "backup", "fault", "master", "backup"]
    expected = [line for label in labels for line in (f"start {label}", f"end {label}")]
    assert out.read_text().splitlines() == expected


async def test_notify_runner_submit_returns_without_waiting_for_hooks(tmp_path) -> None:
    config = NotifyConfig(instance="VI_1", notify_master="sleep 1")
    async with NotifyRunner(config) as runner:
        started = time.monotonic()
        runner.submit("MASTER", 100)
        runner.submit("MASTER", 100)
        assert time.monotonic() - started < 0.1
        assert runner.history == []
        await runner.drain()
        assert len(runner.history) == 2


async def test_notify_runner_drain_waits_for_running_hook(tmp_path) -> None:
    marker = tmp_path / "done"
    config = NotifyConfig(instance="VI_1", notify_stop=f"sh -c 'sleep 0.4; touch {marker}'")
    async with NotifyRunner(config) as runner:
        await runner.drain()  # nothing submitted: returns at once
        runner.submit("STOP", 100)
        assert not marker.exists()
        await asyncio.wait_for(runner.drain(), 10.0)
        assert marker.exists()


async def test_notify_runner_leaving_context_runs_pending_stop_hook(tmp_path) -> None:
    marker = tmp_path / "stopped"
    config = NotifyConfig(instance="VI_1", notify_stop=f"sh -c 'sleep 0.3; touch {marker}'")
    async with NotifyRunner(config) as runner:
        runner.submit("STOP", 100)
    assert marker.exists()
    assert runner.history[0].exit_code == 0


async def test_notify_runner_leaving_context_on_error_kills_running_hook(tmp_path) -> None:
    marker = tmp_path / "never"
    config = NotifyConfig(instance="VI_1", notify_master=f"sh -c 'sleep 30; touch {marker}'")
    started = time.monotonic()
    with pytest.raises(KeyError):
        async with NotifyRunner(config) as runner:
            runner.submit("MASTER", 100)
            await asyncio.sleep(0.2)
            raise KeyError("boom")
    assert time.monotonic() - started < 5.0
    await asyncio.sleep(0.2)
    assert not marker.exists()


async def test_notify_runner_drain_before_start_raises() -> None:
    runner = NotifyRunner(NotifyConfig(instance="VI_1"))
    with pytest.raises(RuntimeError):
        await runner.drain()


async def test_notify_runner_submit_after_close_raises() -> None:
    async with NotifyRunner(NotifyConfig(instance="VI_1")) as runner:
        pass
    with pytest.raises(RuntimeError):
        runner.submit("MASTER", 100)


@pytest.mark.parametrize("state", ["INIT", "master", ""])
async def test_notify_runner_unknown_state_raises(state: str) -> None:
    async with NotifyRunner(NotifyConfig(instance="VI_1")) as runner:
        with pytest.raises(ValueError):
            runner.submit(state, 100)


async def test_notify_runner_timeout_kills_hook_and_next_transition_runs(tmp_path) -> None:
    marker = tmp_path / "backup-ran"
    config = NotifyConfig(
        instance="VI_1",
        notify_master="sleep 30",
        notify_backup=f"touch {marker}",
        timeout=0.3,
    )
    started = time.monotonic()
    async with NotifyRunner(config, kill_after=0.5) as runner:
        runner.submit("MASTER", 100)
        runner.submit("BACKUP", 100)
        await runner.drain()
    assert time.monotonic() - started < 0.3 + 0.5 + 3.0
    master, backup = runner.history
    assert master.timed_out and master.name == "notify_master"
    assert backup.exit_code == 0 and not backup.timed_out
    assert marker.exists()


async def test_notify_runner_failing_hooks_are_logged_not_raised(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem.hooks")
    config = NotifyConfig(
        instance="VI_1",
        notify_master=str(tmp_path / "does-not-exist.sh"),
        notify="sh -c 'echo disk full >&2; exit 3'",
    )
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 100)
        await runner.drain()
    missing, failing = runner.history
    assert missing.exit_code is None
    assert failing.exit_code == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("notify_master" in m and "not started" in m for m in warnings)
    assert any("exit 3" in m and "disk full" in m for m in warnings)


async def test_notify_runner_hooks_run_as_configured_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    uid = pwd.getpwnam("nobody").pw_uid
    config = NotifyConfig(instance="VI_1", notify_master=f'test "$(id -u)" = {uid}', user="nobody")
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 100)
        await runner.drain()
    assert [run.exit_code for run in runner.history] == [0]


# --- FIFO -----------------------------------------------------------------------------------


def test_fifo_line_matches_keepalived_format() -> None:
    assert fifo_line("VI_1", "MASTER", 90) == 'INSTANCE "VI_1" MASTER 90\n'


async def test_notify_runner_writes_fifo_line_after_scripts(tmp_path, recorder) -> None:
    script, out = recorder
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        config = NotifyConfig(instance="VI_1", notify=str(script), fifo=fifo)
        async with NotifyRunner(config) as runner:
            runner.submit("MASTER", 90)
            runner.submit("BACKUP", 80)
            await runner.drain()
        assert os.read(reader, 4096) == b'INSTANCE "VI_1" MASTER 90\nINSTANCE "VI_1" BACKUP 80\n'
        assert len(calls(out)) == 2
    finally:
        os.close(reader)


async def test_notify_runner_fifo_without_reader_does_not_block(tmp_path) -> None:
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    marker = tmp_path / "after"
    config = NotifyConfig(instance="VI_1", notify_backup=f"touch {marker}", fifo=fifo)
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 90)
        runner.submit("BACKUP", 90)
        await asyncio.wait_for(runner.drain(), 5.0)
    assert marker.exists()


def test_write_fifo_line_without_reader_returns_false(tmp_path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert write_fifo_line(fifo, "x\n") is False


def test_write_fifo_line_missing_fifo_is_created(tmp_path) -> None:
    fifo = tmp_path / "new.fifo"
    assert write_fifo_line(fifo, "x\n") is False  # created, but nobody reads it yet
    assert fifo.is_fifo()


def test_write_fifo_line_regular_file_is_left_alone(tmp_path) -> None:
    path = tmp_path / "plain"
    path.write_text("")
    assert write_fifo_line(path, "x\n") is False
    assert path.read_text() == ""
