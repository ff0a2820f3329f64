"""The state bell: a config change wakes the peer-link state streams before their interval."""

from __future__ import annotations

import asyncio
import time

from tandem.ha.peer import StateBell


async def test_state_bell_ring_wakes_waiter_before_its_timeout() -> None:
    bell = StateBell()
    started = time.monotonic()
    waiter = asyncio.create_task(bell.wait(30.0))
    await asyncio.sleep(0.01)
    bell.ring()
    await asyncio.wait_for(waiter, 5.0)
    assert time.monotonic() - started < 5.0


async def test_state_bell_ring_before_wait_not_kept_waiter_times_out() -> None:
    bell = StateBell()
    bell.ring()
    started = time.monotonic()
    await bell.wait(0.05)
    assert time.monotonic() - started >= 0.04


async def test_state_bell_one_ring_wakes_every_stream() -> None:
    bell = StateBell()
    waiters = [asyncio.create_task(bell.wait(30.0)) for _ in range(3)]
    await asyncio.sleep(0.01)
    bell.ring()
    await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
