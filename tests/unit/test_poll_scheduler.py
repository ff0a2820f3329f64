"""PollScheduler: groups start at slot * interval + phase, in phase order, until removed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tandem.hub.modbus import PollScheduler


@dataclass(eq=False)
class Recorder:
    name: str
    calls: list[tuple[int, float]] = field(default_factory=list)

    def due(self, slot: int) -> None:
        self.calls.append((slot, time.time()))


async def test_poll_scheduler_phases_start_in_order_after_the_grid_point() -> None:
    interval = 0.2
    scheduler = PollScheduler()
    groups = {phase: Recorder(f"p{phase}") for phase in (0.1, 0.0, 0.05)}
    for phase, group in groups.items():
        scheduler.add(interval, group, phase)
    await asyncio.sleep(1.1)
    late = groups[0.1]
    scheduler.remove(interval, late)
    seen = len(late.calls)
    await asyncio.sleep(0.5)
    for group in groups.values():
        scheduler.remove(interval, group)

    assert len(late.calls) == seen, "a removed group kept being started"
    for phase, group in groups.items():
        assert len(group.calls) >= 4
        slots = [slot for slot, _ in group.calls]
        assert slots == list(range(slots[0], slots[0] + len(slots)))
        for slot, at in group.calls:
            offset = at - slot * interval
            assert phase - 0.002 <= offset <= phase + 0.05, (phase, offset)
    # Within one slot the groups start in phase order.
    common = {s for s, _ in groups[0.0].calls} & {s for s, _ in groups[0.05].calls}
    for slot in common:
        first = dict(groups[0.0].calls)[slot]
        second = dict(groups[0.05].calls)[slot]
        assert first < second


async def test_poll_scheduler_broken_group_does_not_stop_the_grid() -> None:
    class Broken:
        def due(self, slot: int) -> None:
            raise RuntimeError("boom")

    scheduler = PollScheduler()
    good, broken = Recorder("good"), Broken()
    scheduler.add(0.05, broken)
    scheduler.add(0.05, good, 0.01)
    await asyncio.sleep(0.3)
    scheduler.remove(0.05, good)
    scheduler.remove(0.05, broken)
    assert len(good.calls) >= 3
