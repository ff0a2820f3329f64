"""Notify hooks with keepalived semantics, but run one at a time, in order, and awaited.

keepalived forks notify scripts without waiting, so a quick MASTER -> BACKUP -> MASTER can run
its scripts out of order and a notify_stop may still be running when the daemon exits. Here one
worker runs every transition's hooks to completion before the next transition's, and `drain()`
lets shutdown wait for the last of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tandem.health.process import CommandError, CommandResult, command_argv, run_command
from tandem.health.spawn import RunAs

log = logging.getLogger(__name__)

NOTIFY_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """The notify settings of one VRRP instance, as keepalived names them."""

    instance: str
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    fifo: Path | None = None
    timeout: float = 30.0
    user: str | RunAs | None = None  # every hook's user, unless `users` names its own
    users: Mapping[str, RunAs] = field(default_factory=dict)  # by hook: "notify_master", ...
    fifo_owner: RunAs | None = None  # who a FIFO created here belongs to, as in keepalived

    def script_for(self, state: str) -> str | None:
        """The state-specific script (notify_master for MASTER, ...), if configured."""
        return {
            "MASTER": self.notify_master,
            "BACKUP": self.notify_backup,
            "FAULT": self.notify_fault,
            "STOP": self.notify_stop,
        }[state]


@dataclass(frozen=True, slots=True)
class HookRun:
    """One finished hook, kept for tests and the status API."""

    name: str
    argv: tuple[str, ...]
    exit_code: int | None
    duration: float
    timed_out: bool
    state: str = ""


def fifo_line(instance: str, state: str, priority: int) -> str:
    """keepalived's vrrp_notify_fifo line for one transition."""
    return f'INSTANCE "{instance}" {state} {priority}\n'


def write_fifo_line(path: Path, line: str, owner: RunAs | None = None) -> bool:
    """Write one line to a FIFO without ever blocking; False (and a log line) when skipped.

    A FIFO nobody reads would block open() forever, and a full one would block write(), so
    both are opened non-blocking and the line is dropped instead: a missing reader must never
    delay failover. The FIFO is created if missing, as keepalived does, and handed to `owner`
    (keepalived's `vrrp_notify_fifo PATH USER [GROUP]`) so that user can read it.
    """
    try:
        if not path.exists():
            os.mkfifo(path, 0o600)
            if owner is not None and (owner.uid, owner.gid) != (os.geteuid(), os.getegid()):
                os.chown(path, owner.uid, owner.gid)
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            log.info("notify fifo %s has no reader, line skipped: %s", path, line.rstrip())
        else:
            log.warning("notify fifo %s unusable, line skipped: %s", path, exc)
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            log.warning("notify fifo %s is not a FIFO, line skipped", path)
            return False
        os.write(fd, line.encode())
    except OSError as exc:
        log.warning("notify fifo %s write failed, line skipped: %s", path, exc)
        return False
    finally:
        os.close(fd)
    return True


class NotifyRunner:
    """Runs an instance's notify hooks for each submitted transition, strictly in order.

    Per transition: notify_<state> as written, then the generic `notify` with keepalived's
    `INSTANCE <name> <STATE> <priority>` appended, then the FIFO line. Hook failures and
    timeouts are logged and recorded in `history`, never raised.

    Leaving the context normally drains the queue first; leaving it on an error or a
    cancellation kills the running hook and drops the rest.
    """

    def __init__(
        self, config: NotifyConfig, *, kill_after: float = 2.0, history_limit: int = 200
    ) -> None:
        self.config = config
        self.kill_after = kill_after
        self.history: list[HookRun] = []
        self._history_limit = history_limit
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> NotifyRunner:
        self._worker = asyncio.create_task(self._work(), name=f"notify:{self.config.instance}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if exc_type is None:
            await self.drain()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def submit(self, state: str, priority: int) -> None:
        """Queue the hooks of one transition; returns at once."""
        state = str(state)
        if state not in NOTIFY_STATES:
            raise ValueError(f"notify state must be one of {NOTIFY_STATES}, got {state!r}")
        if self._closed:
            raise RuntimeError(f"notify runner for {self.config.instance} is closed")
        self._queue.put_nowait((state, priority))

    async def drain(self) -> None:
        """Wait until every transition submitted so far has run all its hooks."""
        if self._worker is None:
            raise RuntimeError("drain() needs the runner started (async with NotifyRunner(...))")
        join = asyncio.create_task(self._queue.join())
        try:
            # If the worker died, join() would wait forever; surface its error instead.
            done, _ = await asyncio.wait({join, self._worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            join.cancel()
        if join not in done:
            self._worker.result()
            raise RuntimeError("notify worker stopped before the queue was drained")

    async def _work(self) -> None:
        while True:
            state, priority = await self._queue.get()
            try:
                await self._run_transition(state, priority)
            except Exception:
                # Only a bug gets here; later transitions must still run.
                log.exception("notify %s %s: hook handling failed", self.config.instance, state)
            finally:
                self._queue.task_done()

    async def _run_transition(self, state: str, priority: int) -> None:
        config = self.config
        specific = config.script_for(state)
        if specific is not None:
            await self._run_hook(f"notify_{state.lower()}", specific, (), state)
        if config.notify is not None:
            extra = ("INSTANCE", config.instance, state, str(priority))
            await self._run_hook("notify", config.notify, extra, state)
        if config.fifo is not None:
            line = fifo_line(config.instance, state, priority)
            write_fifo_line(config.fifo, line, config.fifo_owner)

    async def _run_hook(
        self, name: str, command: str, extra_args: tuple[str, ...], state: str
    ) -> None:
        try:
            argv = command_argv(command, extra_args)
        except CommandError as exc:
            log.warning("notify %s %s: %s", self.config.instance, name, exc)
            return
        user = self.config.users.get(name, self.config.user)
        result = await run_command(argv, self.config.timeout, self.kill_after, user)
        self._remember(name, state, result)

    def _remember(self, name: str, state: str, result: CommandResult) -> None:
        self.history.append(
            HookRun(
                name=name,
                argv=result.argv,
                exit_code=result.exit_code,
                duration=result.duration,
                timed_out=result.timed_out,
                state=state,
            )
        )
        del self.history[: -self._history_limit]
        if result.ok:
            log.info(
                "notify %s %s for %s: exit 0 in %.3fs",
                self.config.instance,
                name,
                state,
                result.duration,
            )
        else:
            log.warning(
                "notify %s %s for %s: %s in %.3fs%s",
                self.config.instance,
                name,
                state,
                result.describe(),
                result.duration,
                f": {result.last_line}" if result.last_line else "",
            )
