"""One wall-clock timer per poll interval, shared by every group polled at that interval.

A thousand devices on a 1 s grid are one timer, not a thousand tasks waking one after
another. Each group polls at ``slot * interval + phase``: with phase 0 (the default) every
group of the interval starts in the same loop step at the grid point; groups with a phase
are started in phase order as their moment comes, so a node with many devices can spread
them over the interval instead of bursting.

next_slot_after is the grid's rule for a poll that finishes late (catch up or skip); it lives
with the timer so the poller and its tests read one definition of the grid.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol

from tandem.hub.model import slot_of

log = logging.getLogger(__name__)

# Groups due within this much of each other are started in one loop step.
BATCH_S = 0.001

CATCH_UP_S = 1.0  # the longest stall whose slots are still polled late rather than skipped

GIL_SWITCH_INTERVAL_S = 0.0005


def prefer_the_loop() -> None:
    """Shorten the GIL's switch interval in a process that runs a hub.

    The loop makes a system call per Modbus request and reply; each gives up the GIL, and
    while a worker thread computes (a config change of 10,000 tags: parsing, hashing,
    diffing) taking it back waits out the switch interval. At the default 5 ms that is a
    convoy: polls fell a second behind during every large change. At 0.5 ms the wait is
    short and the thread still runs.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def next_slot_after(slot: int, now: float, interval: float) -> tuple[int, int]:
    """The slot to poll after ``slot`` finished at wall time ``now``, and how many were skipped.

    A late poll keeps its slot: after a stall of up to CATCH_UP_S the missed slots are polled
    at once, one after the other (their timestamps say when they were really read), so a
    standby and a master that were slowed at different moments still hold the same slots.
    A longer stall skips to the current slot and counts the skipped ones as overruns, so a
    device that is slower than its interval is never driven into an endless burst.
    """
    current = slot_of(now, interval)
    if current <= slot:
        return slot + 1, 0
    if (current - slot) * interval <= CATCH_UP_S:
        # A short stall (a busy CPU, a slow answer): poll every slot it covered, back to back.
        return slot + 1, 0
    return current, current - slot - 1


class Scheduled(Protocol):
    """A group the scheduler starts: ``due(slot)`` at every grid point of its interval."""

    def due(self, slot: int) -> None: ...


class PollScheduler:
    """Calls ``due(slot)`` on every registered group at ``slot * interval + phase``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._groups: dict[float, dict[Scheduled, float]] = {}  # interval -> group -> phase
        self._tickers: dict[float, asyncio.Task[None]] = {}

    def add(self, interval: float, group: Scheduled, phase: float = 0.0) -> None:
        self._groups.setdefault(interval, {})[group] = phase
        ticker = self._tickers.get(interval)
        if ticker is None or ticker.done():
            self._tickers[interval] = asyncio.create_task(
                self._tick_forever(interval), name=f"grid:{interval:g}s"
            )

    def remove(self, interval: float, group: Scheduled) -> None:
        groups = self._groups.get(interval, {})
        groups.pop(group, None)
        if not groups:
            self._groups.pop(interval, None)
            ticker = self._tickers.pop(interval, None)
            if ticker is not None:
                ticker.cancel()

    async def _tick_forever(self, interval: float) -> None:
        clock = self.clock
        slot = slot_of(clock(), interval) + 1
        while True:
            if slot * interval - clock() > interval * 2:
                # The wall clock stepped back; re-align rather than sleep through the gap.
                slot = slot_of(clock(), interval) + 1
                continue
            groups = self._groups.get(interval, {})
            for phase, group in sorted(((p, g) for g, p in groups.items()), key=_by_phase):
                delay = slot * interval + phase - clock()
                if delay > BATCH_S:
                    await asyncio.sleep(delay)
                if group in groups:  # it may have left while we slept
                    self._start(group, slot)
            slot += 1
            behind = clock() - slot * interval
            if behind > interval * 2:
                # Stalled for whole intervals: the groups catch up from their own next slot.
                slot = slot_of(clock(), interval)

    @staticmethod
    def _start(group: Scheduled, slot: int) -> None:
        try:
            group.due(slot)
        except Exception:
            # One broken group must not stop the grid for every other device.
            log.exception("starting a poll of %r failed", group)


def _by_phase(entry: tuple[float, Scheduled]) -> float:
    return entry[0]
