"""The hub's pollers and the task running each, under the hub's TaskGroup.

Apart from the hub because starting, cancelling and handing over these tasks (a live config
change keeps some of them running) is one piece with one rule: the same poller never runs
twice. The hub's role gate decides whether pollers run; this only carries it out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence

from tandem.config.hub import DeviceConfig
from tandem.hub.contracts import Poller
from tandem.hub.modbus import DevicePoller, DeviceStatus, resume_points
from tandem.hub.reconfig import DevicePlan

log = logging.getLogger(__name__)


def _reachable(poller: Poller) -> bool:
    """Connected and answering, without building the whole status (1,000 devices, 10 Hz)."""
    if isinstance(poller, DevicePoller):
        return poller.reachable
    return poller.status().connected


class PollerTasks:
    """The running config's pollers, in device order; a crash is kept, it does not spread.

    `on_crash(device, exc)` hears a poller that raised (the hub puts it on the timeline);
    `crashed` holds those devices until their poller runs again.
    """

    def __init__(
        self,
        pollers: list[Poller],
        names: list[str],
        on_crash: Callable[[str, Exception], None],
    ) -> None:
        self.pollers = pollers
        self._names = names
        self._on_crash = on_crash
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.crashed: set[str] = set()

    def start(self, tasks: asyncio.TaskGroup) -> None:
        """A task for every poller that has no live one (a cancelled one is let go first)."""
        for index, poller in enumerate(self.pollers):
            previous = self._tasks.get(index)
            if previous is not None and not previous.cancelling() and not previous.done():
                continue
            name = self._names[index]
            self._tasks[index] = tasks.create_task(
                self._guarded(name, poller, previous), name=f"poller:{name}"
            )

    def cancel(self) -> None:
        """Cancel every poller task; returns at once."""
        for task in self._tasks.values():
            task.cancel()

    async def stop(self) -> None:
        """Cancel every poller task and wait until they all let go."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def pause(self, paused: bool) -> None:
        """A warm standby's pollers stay connected but do not poll."""
        for poller in self.pollers:
            poller.paused = paused

    async def stop_unkept(
        self,
        plan: DevicePlan,
        pollers: list[Poller],
        devices: Sequence[DeviceConfig],
        *,
        will_run: bool,
    ) -> None:
        """Stop the tasks of pollers the plan does not keep, before `pollers` take over.

        A changed device's kept groups go on from the slot after the last one emitted (read
        once the old poller has stopped), so a live change neither drops nor repeats a slot;
        when the new pollers `will_run` at once, its connections stay open across the change.
        """
        if will_run:
            for new_i in plan.replaced:
                replacing = pollers[new_i]
                if isinstance(replacing, DevicePoller):
                    replacing.hold_links()
        kept_old = set(plan.keep.values())
        stopping = [t for i, t in self._tasks.items() if i not in kept_old]
        for task in stopping:
            task.cancel()
        if stopping:
            await asyncio.wait(stopping)
        for new_i, old_i in plan.replaced.items():
            intervals = {g.name: g.interval for g in devices[new_i].groups}
            pollers[new_i].resume(resume_points(self.pollers[old_i].status(), intervals))

    def adopt(self, plan: DevicePlan, pollers: list[Poller], names: list[str]) -> None:
        """The new config's pollers; kept ones keep their running tasks, at their new index."""
        self._tasks = {
            new_i: self._tasks[old_i] for new_i, old_i in plan.keep.items() if old_i in self._tasks
        }
        self.pollers = pollers
        self._names = names

    def device_poller(self, device: str) -> DevicePoller | None:
        """The Modbus poller of `device`; None for an unknown device or another protocol."""
        for poller in self.pollers:
            if isinstance(poller, DevicePoller) and poller.device.name == device:
                return poller
        return None

    def all_reachable(self) -> bool:
        """Every device connected and answering: the HA health check's devices input."""
        return all(_reachable(p) for p in self.pollers)

    def sampled(self) -> Iterator[DeviceStatus]:
        """Statuses of the pollers that do not report their changes as events."""
        return (p.status() for p in self.pollers if not isinstance(p, DevicePoller))

    async def _guarded(
        self, name: str, poller: Poller, previous: asyncio.Task[None] | None
    ) -> None:
        """Run one poller; a crash is logged and shows in health, it does not stop the hub."""
        if previous is not None and not previous.done():
            # The same poller must not run twice: wait for the cancelled run to let go.
            await asyncio.wait([previous])
        self.crashed.discard(name)
        try:
            await poller.run()
        except Exception as exc:
            self.crashed.add(name)
            log.exception("poller of device %s crashed", name)
            self._on_crash(name, exc)


__all__ = ["PollerTasks"]
