"""Track scripts with keepalived vrrp_script semantics: interval, timeout, rise, fall, weight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tandem.health.process import CommandResult, command_argv, run_command
from tandem.health.spawn import RunAs

log = logging.getLogger(__name__)

# A check failing the same way every second must not flood the log with its output.
FAILURE_OUTPUT_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class RiseFall:
    """Consecutive-result debouncing of a check: `rise` successes for OK, `fall` failures for KO.

    `state` is None until the first verdict. From None one success is enough for OK (keepalived:
    "a weight-0 script that has not run yet holds the instance in FAULT; one success frees it"),
    while KO still needs `fall` consecutive failures, so one flaky first run of a `fall 3` check
    is not a verdict. A weight-0 check with no verdict already holds FAULT, so this choice only
    shows for weighted checks, where it avoids a priority dip on a single early failure.
    """

    rise: int = 1
    fall: int = 1
    state: bool | None = None
    successes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={self.rise} fall={self.fall}")

    def observe(self, ok: bool) -> RiseFall:
        """The machine after one more result."""
        if ok:
            successes = self.successes + 1
            if self.state is None or (self.state is False and successes >= self.rise):
                return replace(self, state=True, successes=0, failures=0)
            if self.state is True:
                return replace(self, successes=0, failures=0)
            return replace(self, successes=successes, failures=0)
        failures = self.failures + 1
        if self.state is not False and failures >= self.fall:
            return replace(self, state=False, successes=0, failures=0)
        if self.state is False:
            return replace(self, successes=0, failures=0)
        return replace(self, successes=0, failures=failures)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A check's verdict after a run: what the priority logic and the timeline consume."""

    name: str
    ok: bool | None
    weight: int
    exit_code: int | None
    duration: float
    reason: str


class ScriptCheck:
    """One vrrp_script: runs a command periodically and debounces its exit status.

    Use `run()` as a task (e.g. in an asyncio.TaskGroup) and cancel it to stop; a run in
    progress at cancellation is killed with its whole process group. `clock` times the
    schedule and must advance with the event loop's own time (it defaults to the same
    monotonic clock); `kill_after` is the SIGTERM-to-SIGKILL grace, 2 s as in keepalived.
    """

    def __init__(
        self,
        name: str,
        argv_or_command: str | Sequence[str],
        *,
        interval: float = 1.0,
        timeout: float | None = None,
        rise: int = 1,
        fall: int = 1,
        weight: int = 0,
        on_change: Callable[[CheckResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        user: str | RunAs | None = None,
        kill_after: float = 2.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.name = name
        self.argv: tuple[str, ...] = (
            tuple(command_argv(argv_or_command))
            if isinstance(argv_or_command, str)
            else tuple(argv_or_command)
        )
        if not self.argv:
            raise ValueError(f"check {name}: empty argv")
        self.interval = interval
        self.timeout = interval if timeout is None else timeout
        self.weight = weight
        self.user = user
        self.kill_after = kill_after
        self._on_change = on_change
        self._clock = clock
        self._debounce = RiseFall(rise=rise, fall=fall)
        self.last_exit: int | None = None
        self.last_duration: float = 0.0
        self.last_result: CheckResult | None = None
        self.runs = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0
        self._last_output_logged: tuple[str, float] | None = None

    @property
    def state(self) -> bool | None:
        """True = OK, False = KO, None = no verdict yet."""
        return self._debounce.state

    async def run(self) -> None:
        """Run forever: first run now, then one per interval from the previous start."""
        next_due = self._clock()
        current: asyncio.Task[None] | None = None
        try:
            while True:
                if current is None or current.done():
                    current = asyncio.create_task(self._run_once(), name=f"check:{self.name}")
                else:
                    # keepalived skips the tick rather than queueing a second run.
                    self.skipped += 1
                    log.debug("check %s: previous run still going, tick skipped", self.name)
                next_due += self.interval
                now = self._clock()
                if next_due < now:
                    # After a stall, restart the cadence instead of bursting to catch up.
                    next_due = now
                await asyncio.sleep(next_due - now)
        finally:
            if current is not None and not current.done():
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await current

    async def _run_once(self) -> None:
        result = await run_command(self.argv, self.timeout, self.kill_after, self.user)
        try:
            self._record(result)
        except Exception:
            # A broken on_change must not stop the check from running.
            log.exception("check %s: result handling failed", self.name)

    def _record(self, result: CommandResult) -> None:
        self.runs += 1
        self.last_exit = result.exit_code
        self.last_duration = result.duration
        if result.timed_out:
            self.timeouts += 1
        if not result.ok:
            self.failures += 1
            self._log_failure_output(result)
        before = self._debounce.state
        self._debounce = self._debounce.observe(result.ok)
        check_result = CheckResult(
            name=self.name,
            ok=self._debounce.state,
            weight=self.weight,
            exit_code=result.exit_code,
            duration=result.duration,
            reason=result.describe(),
        )
        self.last_result = check_result
        if check_result.ok == before:
            return
        log.info(
            "check %s: %s -> %s (%s)",
            self.name,
            _state_name(before),
            _state_name(check_result.ok),
            check_result.reason,
        )
        if self._on_change is not None:
            self._on_change(check_result)

    def _log_failure_output(self, result: CommandResult) -> None:
        line = result.last_line
        if not line:
            return
        now = self._clock()
        previous = self._last_output_logged
        if (
            previous is not None
            and previous[0] == line
            and now - previous[1] < FAILURE_OUTPUT_LOG_INTERVAL
        ):
            return
        self._last_output_logged = (line, now)
        log.debug("check %s failed (%s): %s", self.name, result.describe(), line)


def _state_name(state: bool | None) -> str:
    return {None: "UNKNOWN", True: "OK", False: "KO"}[state]
