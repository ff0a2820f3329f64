"""One wall-clock timer per poll interval, shared by every group polled at that interval.

A thousand devices on a 1 s grid are one timer and one loop step at each grid point, not a
thousand tasks waking one after another: the step starts every due poll (each sends its
first request at once), so the last poll of the tick starts within the time it takes to
write the others' requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from tandem.hub.model import slot_of

log = logging.getLogger(__name__)


class Scheduled(Protocol):
    """A group the scheduler starts: ``due(slot)`` at every grid point of its interval."""

    def due(self, slot: int) -> None: ...


class PollScheduler:
    """Calls ``due(slot)`` on every registered group at ``slot * interval`` wall-clock time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._groups: dict[float, list[Scheduled]] = {}
        self._tickers: dict[float, asyncio.Task[None]] = {}

    def add(self, interval: float, group: Scheduled) -> None:
        self._groups.setdefault(interval, []).append(group)
        ticker = self._tickers.get(interval)
        if ticker is None or ticker.done():
            self._tickers[interval] = asyncio.create_task(
                self._tick_forever(interval), name=f"grid:{interval:g}s"
            )

    def remove(self, interval: float, group: Scheduled) -> None:
        groups = self._groups.get(interval, [])
        with contextlib.suppress(ValueError):
            groups.remove(group)
        if not groups:
            self._groups.pop(interval, None)
            ticker = self._tickers.pop(interval, None)
            if ticker is not None:
                ticker.cancel()

    async def _tick_forever(self, interval: float) -> None:
        clock = self.clock
        slot = slot_of(clock(), interval) + 1
        while True:
            delay = slot * interval - clock()
            if delay > interval * 2:
                # The wall clock stepped back; re-align rather than sleep through the gap.
                slot = slot_of(clock(), interval) + 1
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            for group in list(self._groups.get(interval, ())):
                try:
                    group.due(slot)
                except Exception:
                    # One broken group must not stop the grid for every other device.
                    log.exception("starting a poll of %r failed", group)
            slot = max(slot + 1, slot_of(clock(), interval) + 1)
