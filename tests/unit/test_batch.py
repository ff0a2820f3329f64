"""LoopStepBatch: one hand-over per event-loop step, and flush() on demand."""

from __future__ import annotations

import asyncio

from tandem.batch import LoopStepBatch


async def test_loop_step_batch_hands_over_one_step_at_a_time() -> None:
    seen: list[list[int]] = []
    batch: LoopStepBatch[int] = LoopStepBatch(seen.append)
    for i in range(3):
        batch.add(i)
    assert seen == [] and len(batch) == 3
    await asyncio.sleep(0)
    batch.add(3)
    await asyncio.sleep(0)
    assert seen == [[0, 1, 2], [3]]


async def test_loop_step_batch_flush_now_and_nothing_twice() -> None:
    seen: list[list[str]] = []
    batch: LoopStepBatch[str] = LoopStepBatch(seen.append)
    batch.add("a")
    batch.flush()
    await asyncio.sleep(0)  # the scheduled call finds nothing left
    batch.flush()
    assert seen == [["a"]]
