"""Running external commands for checks and hooks: argv rules, timeouts, process-group kills."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from tandem.errors import TandemError
from tandem.health.spawn import RunAs, kill_group, spawn, wait_exit

log = logging.getLogger(__name__)

SHELL = "/bin/sh"

# Any of these anywhere in the text means the author expects a shell. Checked on the raw
# text, quoted or not: running a quoted "a|b" through sh gives the same argv as shlex would,
# so erring towards the shell never changes what the command means.
SHELL_METACHARACTERS = frozenset("|&;<>$`*?[()\n")

# First words that only exist inside a shell (or change the shell itself), so exec would fail.
SHELL_ONLY_WORDS = frozenset(
    {
        ".", "alias", "case", "cd", "eval", "exec", "exit", "export", "for", "if", "local",
        "read", "readonly", "return", "set", "shift", "source", "trap", "ulimit", "umask",
        "unset", "until", "wait", "while", "{", "!",
    }
)  # fmt: skip

# Keep only the end of a command's output: the last line is what explains a failure.
OUTPUT_TAIL_BYTES = 4096


class CommandError(TandemError):
    """A command string that cannot be turned into an argv (empty, for instance)."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How one run of an external command ended.

    `exit_code` is the process's return code (negative: killed by that signal) and None when
    the process could not be started; `error` then says why.
    """

    argv: tuple[str, ...]
    exit_code: int | None
    duration: float
    timed_out: bool = False
    output: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def last_line(self) -> str:
        lines = self.output.strip().splitlines()
        return lines[-1] if lines else ""

    def describe(self) -> str:
        """One short phrase for logs and check reasons."""
        if self.error is not None:
            return f"not started: {self.error}"
        if self.timed_out:
            return f"timed out after {self.duration:.3f}s"
        if self.exit_code is not None and self.exit_code < 0:
            return f"killed by signal {-self.exit_code}"
        return f"exit {self.exit_code}"


def needs_shell(command: str) -> bool:
    """True when `command` uses shell syntax that exec() alone would not understand."""
    if any(ch in SHELL_METACHARACTERS for ch in command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:
        # Unbalanced quotes: let the shell report the syntax error in its own words.
        return True
    if not words:
        return False
    first = words[0]
    if first in SHELL_ONLY_WORDS:
        return True
    # FOO=bar cmd: an environment assignment prefix is shell grammar.
    if "=" in first and not first.startswith("=") and "/" not in first.split("=", 1)[0]:
        return True
    # Tilde expansion and comments are done by the shell, never by exec.
    return any(word.startswith(("~", "#")) for word in words)


def command_argv(command: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The argv that runs `command` as its author meant it, with `extra_args` appended.

    Plain commands are split like a shell would and run without one, so arguments are never
    re-interpreted. Commands with shell syntax run under `/bin/sh -c`; `extra_args` are then
    passed as the positional parameters $1, $2, ... rather than pasted into the text, because
    appending text after a trailing `;`, `&` or comment would change what runs.
    """
    if not command.strip():
        raise CommandError("empty command")
    if needs_shell(command):
        return [SHELL, "-c", command, "sh", *extra_args]
    return [*shlex.split(command), *extra_args]


def resolve_user(user: str | RunAs | None) -> RunAs | None:
    """A user name becomes that user with its primary group; KeyError when it does not exist."""
    if user is None or isinstance(user, RunAs):
        return user
    entry = pwd.getpwnam(user)
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _read_tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - OUTPUT_TAIL_BYTES))
    return stream.read().decode("utf-8", errors="replace")


async def _wait_or_kill(
    process: subprocess.Popen[bytes], timeout: float | None, kill_after: float
) -> bool:
    """Wait for the child; on timeout SIGTERM its group, SIGKILL `kill_after` later. True if
    it timed out. Cancelled while it runs, the whole group is killed before the cancel goes on."""
    timed_out = False
    try:
        try:
            await asyncio.wait_for(wait_exit(process), timeout)
        except TimeoutError:
            timed_out = True
            kill_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_exit(process), kill_after)
            # Stragglers of a timed-out run are of no use, even if the leader is gone.
            kill_group(process.pid, signal.SIGKILL)
            await wait_exit(process)
    finally:
        if process.returncode is None:
            kill_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await wait_exit(process)
    return timed_out


async def run_command(
    argv: Sequence[str],
    timeout: float | None,
    kill_after: float = 2.0,
    user: str | RunAs | None = None,
) -> CommandResult:
    """Run `argv` in its own session and wait for it, never longer than timeout + kill_after.

    The child starts without CAP_NET_ADMIN / CAP_NET_RAW (see tandem.health.spawn) and, with
    `user`, as that user. Output goes to an unlinked temporary file rather than a pipe: a daemon
    started in the background by a hook keeps its stdout without holding us up or dying of
    SIGPIPE later. Cancelling this coroutine kills the process group before the cancellation
    propagates.
    """
    argv = tuple(argv)
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        try:
            process = await spawn(argv, output, resolve_user(user))
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
            return CommandResult(
                argv=argv,
                exit_code=None,
                duration=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}",
            )
        timed_out = await _wait_or_kill(process, timeout, kill_after)
        return CommandResult(
            argv=argv,
            exit_code=process.returncode,
            duration=time.monotonic() - started,
            timed_out=timed_out,
            output=_read_tail(output),
        )
