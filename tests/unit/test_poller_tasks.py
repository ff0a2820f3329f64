"""The hub's poller tasks: one task per poller, a crash kept apart, kept tasks survive a change."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tandem.hub.modbus import DeviceStatus
from tandem.hub.pollertasks import PollerTasks
from tandem.hub.reconfig import DevicePlan


class Poller:
    def __init__(self, name: str, crash: Exception | None = None) -> None:
        self.name = name
        self.paused = False
        self.crash = crash
        self.runs = 0
        self.running = 0  # how many runs are inside run() right now

    def status(self) -> DeviceStatus:
        return DeviceStatus(name=self.name, connected=False, last_error=None, groups=[])

    def resume(self, next_slots: Mapping[str, int]) -> None:
        pass

    async def run(self) -> None:
        self.runs += 1
        self.running += 1
        try:
            await asyncio.sleep(0)
            if self.crash is not None:
                raise self.crash
            await asyncio.Event().wait()
        finally:
            self.running -= 1


async def test_crash_is_told_and_kept_until_the_poller_runs_again() -> None:
    bad = Poller("bad", RuntimeError("boom"))
    told: list[tuple[str, str]] = []
    pollers = PollerTasks([bad], ["bad"], lambda name, exc: told.append((name, str(exc))))
    async with asyncio.TaskGroup() as group:
        pollers.start(group)
        await asyncio.sleep(0.01)
        assert told == [("bad", "boom")] and pollers.crashed == {"bad"}
        bad.crash = None
        pollers.start(group)  # the crashed task is done: a new one starts
        await asyncio.sleep(0.01)
        assert pollers.crashed == set() and bad.running == 1
        await pollers.stop()
    assert bad.running == 0


async def test_restart_after_cancel_never_runs_the_same_poller_twice() -> None:
    poller = Poller("a")
    pollers = PollerTasks([poller], ["a"], lambda name, exc: None)
    async with asyncio.TaskGroup() as group:
        pollers.start(group)
        await asyncio.sleep(0.01)
        pollers.cancel()
        pollers.start(group)  # the cancelled run is let go before the new one
        await asyncio.sleep(0.01)
        assert poller.runs == 2 and poller.running == 1
        pollers.start(group)  # a live task: nothing new
        await asyncio.sleep(0.01)
        assert poller.runs == 2
        await pollers.stop()


async def test_adopt_keeps_kept_tasks_under_their_new_index() -> None:
    a, b, c = Poller("a"), Poller("b"), Poller("c")
    pollers = PollerTasks([a, b], ["a", "b"], lambda name, exc: None)
    async with asyncio.TaskGroup() as group:
        pollers.start(group)
        await asyncio.sleep(0.01)
        plan = DevicePlan(origin=(None, 1), keep={1: 1}, replaced={})
        await pollers.stop_unkept(plan, [c, b], [], will_run=False)
        assert a.running == 0 and b.running == 1
        pollers.adopt(plan, [c, b], ["c", "b"])
        pollers.start(group)
        await asyncio.sleep(0.01)
        assert pollers.pollers == [c, b] and b.runs == 1 and c.running == 1
        pollers.pause(True)
        assert b.paused and c.paused
        await pollers.stop()
