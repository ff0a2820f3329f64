"""The API's share of the hub's event loop: requests wait their turn rather than starve polling.

The pollers, the outbox and the publisher run in the same event loop as the API. A loop has
no priorities, so without a bound an operator's dashboards, a Prometheus with a short scrape
interval or a script polling /api/v1/tags in a tight loop take whatever share of the CPU
they ask for, and the pollers fall behind the grid until slots are skipped (measured: 130
requests/s against a 10,000-tag master skipped 60% of its slots).

The bound is a budget of loop time: a bucket that fills at `share` seconds per second, up
to `burst` seconds. A request may start while the bucket holds time; what it spent in the
loop (wall time from start to end: a request preempted by another process on a busy machine
holds the loop just the same) is then taken out. A request that finds the bucket
empty waits, first come first served, until it fills again; more than `queue` waiting, or a
wait longer than `max_wait`, is answered 503 with Retry-After, counted. The data path gets
what it needs; the API gets the rest, up to its share, and never more than its share while
the data path is busy.

Only reads are governed: they are what dashboards, scrapers and scripts repeat. A change of
state needs an operator's or an admin's credential and often waits on a PLC or a worker
(whose wall time is not loop time); the peer link (the pair's control traffic) and event
streams (capped on their own) are outside it too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class Admission(Enum):
    """What the governor decided for one request."""

    NOW = "now"  # the bucket held time: no wait
    WAITED = "waited"  # started after a wait in line
    SHED_QUEUE = "queue_full"  # too many already waiting: 503
    SHED_WAIT = "waited_too_long"  # waited max_wait without a turn: 503


@dataclass(slots=True)
class LoopBudget:
    """The bucket itself: pure arithmetic on a clock the caller passes in."""

    share: float  # seconds of loop time per second of wall time
    burst: float  # the most the bucket holds, in seconds
    balance: float = field(init=False)
    updated: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.balance = self.burst

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.balance = min(self.burst, self.balance + elapsed * self.share)

    def available(self, now: float) -> bool:
        self.refill(now)
        return self.balance > 0

    def spend(self, seconds: float, now: float) -> None:
        self.refill(now)
        # A debt is allowed (one request can cost more than the bucket holds); it is paid back
        # before the next request starts. Bounded, so one pathological request cannot lock
        # the API out for longer than a few bursts.
        self.balance = max(-4 * self.burst, self.balance - max(0.0, seconds))

    def until_available(self, now: float) -> float:
        """Seconds from `now` until the bucket holds time again."""
        self.refill(now)
        if self.balance > 0:
            return 0.0
        return (-self.balance) / self.share + 1e-4


SHED = (Admission.SHED_QUEUE, Admission.SHED_WAIT)


@dataclass(slots=True)
class GovernorStats:
    admitted: int = 0
    waited: int = 0
    shed: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in SHED})
    spent_s: float = 0.0  # loop time the admitted requests used
    waited_s: float = 0.0  # time requests spent in line


class LoopGovernor:
    """Admits requests against a LoopBudget, in arrival order."""

    def __init__(
        self,
        share: float,
        burst: float = 0.02,
        queue: int = 256,
        max_wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.budget = LoopBudget(share, burst)
        self.queue = queue
        self.max_wait = max_wait
        self.clock = clock
        self.timer = timer
        self.stats = GovernorStats()
        self._line: deque[asyncio.Future[None]] = deque()
        self._waker: asyncio.TimerHandle | None = None
        self.budget.updated = clock()

    @property
    def waiting(self) -> int:
        return len(self._line)

    async def admit(self) -> Admission:
        """Wait for a turn; SHED_* means answer 503 now and do not run the request."""
        if not self._line and self.budget.available(self.clock()):
            self.stats.admitted += 1
            return Admission.NOW
        if len(self._line) >= self.queue:
            return self._shed(Admission.SHED_QUEUE)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        self._wake_later()
        queued = self.clock()
        admitted = False
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.max_wait)
            admitted = True
        except TimeoutError:
            return self._shed(Admission.SHED_WAIT)
        finally:
            self.stats.waited_s += self.clock() - queued
            if not admitted:
                # Timed out or cancelled (the client went away), perhaps just as our turn
                # came: out of the line, and the turn passes to the next.
                turn.cancel()
                if turn in self._line:
                    self._line.remove(turn)
                self._wake_later()
        self.stats.admitted += 1
        self.stats.waited += 1
        return Admission.WAITED

    def started(self) -> float:
        """The timer when an admitted request starts; pass it to `finished`."""
        return self.timer()

    def finished(self, started: float) -> None:
        spent = self.timer() - started
        self.stats.spent_s += spent
        self.budget.spend(spent, self.clock())
        self._wake_later()

    def _shed(self, why: Admission) -> Admission:
        self.stats.shed[why.value] += 1
        return why

    def _wake_later(self) -> None:
        """Give the head of the line its turn once the bucket holds time again."""
        if self._waker is not None:
            self._waker.cancel()
            self._waker = None
        while self._line and self._line[0].done():
            self._line.popleft()  # timed out or cancelled
        if not self._line:
            return
        delay = self.budget.until_available(self.clock())
        if delay <= 0:
            # One at a time: the next is woken when this one has spent its time.
            self._line.popleft().set_result(None)
            return
        self._waker = asyncio.get_running_loop().call_later(delay, self._wake_later)


__all__ = ["SHED", "Admission", "GovernorStats", "LoopBudget", "LoopGovernor"]
