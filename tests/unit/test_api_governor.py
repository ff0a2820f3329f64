"""The API's share of the event loop: a budget on fake clocks, then the line in a real loop."""

from __future__ import annotations

import asyncio

import pytest

from tandem.api.governor import Admission, LoopBudget, LoopGovernor


class Clocks:
    """The governor's request timer, moved by hand (what a handler spent in the loop)."""

    def __init__(self) -> None:
        self.cpu = 5.0

    def cpu_now(self) -> float:
        return self.cpu


def test_loop_budget_spent_time_refills_at_its_share_up_to_the_burst() -> None:
    budget = LoopBudget(share=0.25, burst=0.2)
    budget.updated = 0.0
    assert budget.available(0.0)
    budget.spend(0.3, 0.0)  # one request cost more than the bucket held: a debt
    assert not budget.available(0.0)
    assert budget.until_available(0.0) == pytest.approx(0.1 / 0.25, abs=1e-3)
    assert not budget.available(0.39)
    assert budget.available(0.41)
    budget.refill(1000.0)
    assert budget.balance == pytest.approx(0.2)  # never more than the burst


def test_loop_budget_debt_is_bounded_so_one_request_cannot_lock_the_api_out() -> None:
    budget = LoopBudget(share=0.5, burst=0.1)
    budget.updated = 0.0
    budget.spend(60.0, 0.0)
    assert budget.until_available(0.0) <= 4 * 0.1 / 0.5 + 0.01


async def test_loop_governor_requests_beyond_the_share_wait_in_arrival_order() -> None:
    clocks = Clocks()
    governor = LoopGovernor(share=0.5, burst=0.01, clock=time_in_loop, timer=clocks.cpu_now)
    order: list[int] = []

    async def request(n: int, cost: float) -> Admission:
        admission = await governor.admit()
        started = governor.started()
        clocks.cpu += cost  # what the handler spent in the loop
        order.append(n)
        governor.finished(started)
        return admission

    first = await request(0, 0.05)  # spends the bucket and 0.04 s more: 0.08 s to pay back
    assert first is Admission.NOW
    began = time_in_loop()
    rest = await asyncio.gather(*(request(n, 0.01) for n in range(1, 5)))
    took = time_in_loop() - began
    assert order == [0, 1, 2, 3, 4]
    assert all(a is Admission.WAITED for a in rest)
    # 0.04 s of debt then 3 x 0.01 s at 0.5 s per s: ~0.14 s of waiting in all.
    assert 0.1 <= took < 2.0
    assert governor.stats.waited == 4 and governor.stats.admitted == 5
    assert governor.stats.spent_s == pytest.approx(0.09)
    assert governor.waiting == 0


async def test_loop_governor_full_line_sheds_and_a_long_wait_sheds() -> None:
    clocks = Clocks()
    governor = LoopGovernor(
        share=0.01, burst=0.01, queue=2, max_wait=0.2, clock=time_in_loop, timer=clocks.cpu_now
    )
    started = governor.started()
    clocks.cpu += 0.05  # a debt of 0.04 s: 4 s to pay back at this share
    governor.finished(started)
    waiting = [asyncio.create_task(governor.admit()) for _ in range(2)]
    await asyncio.sleep(0)
    assert governor.waiting == 2
    assert await governor.admit() is Admission.SHED_QUEUE
    assert await asyncio.gather(*waiting) == [Admission.SHED_WAIT, Admission.SHED_WAIT]
    assert governor.stats.shed == {"queue_full": 1, "waited_too_long": 2}
    assert governor.waiting == 0


async def test_loop_governor_a_cancelled_waiter_passes_its_turn_on() -> None:
    clocks = Clocks()
    governor = LoopGovernor(share=1.0, burst=0.01, clock=time_in_loop, timer=clocks.cpu_now)
    started = governor.started()
    clocks.cpu += 0.06
    governor.finished(started)  # 0.05 s of debt
    gone = asyncio.create_task(governor.admit())
    stays = asyncio.create_task(governor.admit())
    await asyncio.sleep(0)
    gone.cancel()
    assert await asyncio.wait_for(stays, 2.0) is Admission.WAITED
    assert gone.cancelled()


def time_in_loop() -> float:
    return asyncio.get_running_loop().time()
