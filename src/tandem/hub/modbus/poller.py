"""Polls one device: groups on the wall-clock grid through its active path, Samples out.

A device reaches the field through one or more paths (a Link each, shared with the other
devices on the same line). Each group runs on its own grid (polls at ``k * interval``
wall-clock seconds, slept on the loop's monotonic clock) so two nodes produce the same slot
for the same poll. While the device is unreachable every due poll still emits a Sample with
all tags marked disconnected: a slot is never lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.config.hub import GroupConfig, ModbusDevice
from tandem.hub.codec import ERR_DISCONNECTED, ERR_IO, ERR_TIMEOUT
from tandem.hub.modbus.frames import Reply
from tandem.hub.modbus.link import Guard, Link, LinkListener, LinkPool
from tandem.hub.modbus.paths import PathSelector, PathSwitch
from tandem.hub.modbus.reads import NO_ANSWER, BlockRead, decode_reply, plan_group
from tandem.hub.modbus.schedule import PollScheduler, next_slot_after
from tandem.hub.modbus.status import (
    DeviceEvent,
    DeviceEventKind,
    DeviceListener,
    DeviceStatus,
    GroupStatus,
    PathStatus,
)
from tandem.hub.modbus.writer import OpResult, WriteOp, execute
from tandem.hub.model import Sample, Value

log = logging.getLogger(__name__)

OVERRUN_LOG_S = 10.0  # the least time between two warnings about a group's skipped slots


@dataclass(slots=True, eq=False)
class _GroupRun:
    """Mutable per-group state: statistics, and where its polling stands on the grid."""

    config: GroupConfig
    reads: tuple[BlockRead, ...]
    owner: DevicePoller
    phase: float = 0.0  # seconds after each grid point this group polls
    next_slot: int | None = None  # None: take the next grid point that comes
    busy: bool = False
    last_poll_ms: int | None = None
    last_slot: int | None = None
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    overrun_logged_at: float = -OVERRUN_LOG_S  # monotonic
    last_latency_ms: float | None = None
    block_errors: dict[int, int] = field(default_factory=dict)

    def due(self, slot: int) -> None:
        try:
            self.owner._due(self, slot)
        except Exception as exc:
            self.busy = False
            self.owner._crash(exc)

    def status(self) -> GroupStatus:
        return GroupStatus(
            name=self.config.name,
            interval=self.config.interval,
            last_poll_ms=self.last_poll_ms,
            last_slot=self.last_slot,
            polls=self.polls,
            errors=self.errors,
            overruns=self.overruns,
            last_latency_ms=self.last_latency_ms,
        )


@dataclass(slots=True, eq=False)
class _Poll:
    """One poll of one group in flight: its slot, what it read so far, where it stands."""

    group: _GroupRun
    slot: int
    path: int
    link: Link
    generation: int
    started_wall: float
    started: float
    values: dict[str, Value] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    block: int = 0
    answered: bool = False
    silent: bool = False


@dataclass(slots=True)
class _Path:
    link: Link
    listener: Callable[[bool, str | None], None]


class DevicePoller:
    """Polls every group of one device through its active path.

    ``links`` is the hub's LinkPool, so devices on one line share its connection; a poller
    made alone gets a pool of its own. ``on_event`` hears connects, disconnects and path
    switches as they happen.
    """

    def __init__(
        self,
        device: ModbusDevice,
        *,
        source_node: str,
        emit: Callable[[Sample], None],
        clock: Callable[[], float] = time.time,
        links: LinkPool | None = None,
        on_event: DeviceListener | None = None,
        scheduler: PollScheduler | None = None,
    ) -> None:
        self.device = device
        self.source_node = source_node
        self._emit = emit
        self._clock = clock
        self._on_event = on_event
        self._groups = [
            _GroupRun(g, plan_group(device, g), self, g.phase_seconds(device.name))
            for g in device.groups
        ]
        pool = links if links is not None else LinkPool()
        self._scheduler = scheduler if scheduler is not None else PollScheduler(clock)
        self._generation = 0  # bumped at every start and stop: late callbacks see a stale one
        self._failed: asyncio.Future[None] | None = None
        self._paths = [
            _Path(
                pool.link_for(
                    endpoint,
                    device.framing,
                    reconnect_min=device.reconnect_min,
                    reconnect_max=device.reconnect_max,
                    connect_timeout=max(device.timeout, 1.0),
                ),
                self._listener_for(index),
            )
            for index, endpoint in enumerate(device.endpoints())
        ]
        self._selector = PathSelector(len(self._paths), device.redundancy, time.monotonic())
        self._heartbeat = device.redundancy.heartbeat if device.redundancy else None
        self._probe = self._probe_read()
        # Warm standby: keep the connection up but do not poll (set by the HA layer).
        self.paused = False
        self._resume: dict[str, int] = {}
        self._connected = False
        # The last finished poll got no answer at all (timeouts): the device path is dead even
        # while the TCP link waits for more timeouts before it reconnects (a gateway's other
        # units may still answer on it).
        self._unanswered = False
        self._last_error: str | None = None
        # Writes of this device one at a time: a bit tag's read-modify-write must not interleave.
        self._write_lock = asyncio.Lock()
        # Listeners that keep our links open until we run (see hold_links).
        self._holds: list[tuple[Link, LinkListener]] = []

    # --- writes -------------------------------------------------------------------------------

    async def write(self, ops: Sequence[WriteOp], guard: Guard) -> list[OpResult]:
        """Send planned writes through the active path, queued with the polls on that line."""
        async with self._write_lock:
            return await execute(self._active_link(), ops, self.device.timeout, guard)

    # --- status -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def reachable(self) -> bool:
        """Connected and answering: what the HA health check asks of a device path."""
        return self._connected and not self._unanswered

    def status(self) -> DeviceStatus:
        active = self._selector.active
        return DeviceStatus(
            name=self.device.name,
            connected=self._connected,
            last_error=self._last_error,
            groups=[g.status() for g in self._groups],
            active_path=self._paths[active].link.label,
            paths=[
                PathStatus(
                    endpoint=p.link.label,
                    connected=p.link.connected,
                    active=i == active,
                    healthy=self._selector.healthy(i),
                )
                for i, p in enumerate(self._paths)
            ],
            path_switches=self._selector.switches,
        )

    def _active_link(self) -> Link:
        return self._paths[self._selector.active].link

    def _listener_for(self, index: int) -> Callable[[bool, str | None], None]:
        def on_link(connected: bool, error: str | None) -> None:
            if not connected:
                self._apply(self._selector.on_link(index, connected))
            self._update_connected(error if index == self._selector.active else None)

        return on_link

    def _update_connected(self, error: str | None = None) -> None:
        """Connected while the device has a working path it may use.

        A device whose active path dropped but that may switch to a live one still counts as
        connected (health stays up while switch-on-trigger counts its bad polls); with
        primary-only or secondary-only only the pinned path counts.
        """
        link = self._active_link()
        usable = self._paths if self._selector.switching else [self._paths[self._selector.active]]
        connected = any(path.link.connected for path in usable)
        if error is None and not connected:
            error = link.last_error
        if error is not None and not connected:
            self._last_error = error
        if connected == self._connected:
            return
        self._connected = connected
        name = self.device.name
        if connected:
            via = link if link.connected else next(p.link for p in usable if p.link.connected)
            log.info("device %s connected via %s", name, via.label)
            self._tell(DeviceEventKind.CONNECTED, f"{name} connected", {"path": via.label})
        else:
            reason = self._last_error or "connection lost"
            log.warning("device %s disconnected: %s", name, reason)
            self._tell(
                DeviceEventKind.DISCONNECTED,
                f"{name} disconnected: {reason}",
                {"error": reason, "path": link.label},
            )

    def _tell(self, kind: DeviceEventKind, message: str, detail: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(DeviceEvent(self.device.name, kind, message, detail))

    def _apply(self, switch: PathSwitch | None) -> None:
        if switch is None:
            return
        old = self._paths[switch.from_index].link.label
        new = self._paths[switch.to_index].link.label
        reason = switch.reason.value
        log.warning("device %s: path %s -> %s: %s", self.device.name, old, new, reason)
        self._tell(
            DeviceEventKind.PATH_SWITCH,
            f"{self.device.name} now via {new}: {reason}",
            {"from": old, "to": new, "reason": switch.reason.name.lower()},
        )
        self._update_connected()

    # --- lifecycle ----------------------------------------------------------------------------

    def resume(self, next_slots: Mapping[str, int]) -> None:
        """Start the named groups at these slots (a replaced poller's), not at the next tick."""
        self._resume = dict(next_slots)

    def hold_links(self) -> None:
        """Keep this poller's links open from now until it runs.

        A live change replaces a device's poller: without a hold, the old one's exit closes
        the connection (it was the last user) and the new one opens another, and the first
        poll in between fails as disconnected: a valueless slot the master holds back, then
        hands over for (every edit of a device would move the role).
        """
        for path in self._paths:
            hold = _keep_open
            path.link.attach(hold)
            self._holds.append((path.link, hold))

    async def run(self) -> None:
        """Poll until cancelled; the device lets go of its links on the way out.

        Polls are driven by the shared grid scheduler and the links' callbacks, not by a task
        per group; this task only holds the device's place (and runs probes of spare paths).
        A poll that raises ends it with that exception, so the hub sees the crash.
        """
        loop = asyncio.get_running_loop()
        self._generation += 1
        self._failed = loop.create_future()
        for path in self._paths:
            path.link.attach(path.listener)
        while self._holds:
            link, hold = self._holds.pop()
            await link.detach(hold)  # ours is attached: it stays open
        self._update_connected()
        for group in self._groups:
            group.next_slot, group.busy = self._resume.pop(group.config.name, None), False
            self._scheduler.add(group.config.interval, group, group.phase)
        try:
            if self._selector.switching:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._probe_forever(), name=f"{self.device.name}:probe")
                    await self._failed
            else:
                await self._failed
        finally:
            self._generation += 1
            for group in self._groups:
                self._scheduler.remove(group.config.interval, group)
            for path in self._paths:
                await path.link.detach(path.listener)
            if self._connected:
                self._connected = False
                name = self.device.name
                self._tell(
                    DeviceEventKind.DISCONNECTED,
                    f"{name} disconnected: polling stopped",
                    {"error": "polling stopped"},
                )

    def _crash(self, exc: BaseException) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    async def __aenter__(self) -> DevicePoller:
        """Run in the background for the ``async with`` body (tests, small tools)."""
        self._task = asyncio.create_task(self.run(), name=f"poller:{self.device.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        # wait() never raises the task's CancelledError, so a cancel of *our* caller still does.
        await asyncio.wait([self._task])
        if not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]

    # --- polling ------------------------------------------------------------------------------

    def _due(self, group: _GroupRun, tick: int) -> None:
        """The grid reached slot ``tick`` of the group's interval."""
        if self.paused:
            group.next_slot = None  # re-align on the grid when polling resumes
            return
        if group.busy:
            return  # still polling; it catches up when that poll ends
        slot = tick if group.next_slot is None else group.next_slot
        if slot > tick:
            return
        if slot < tick:
            now = self._clock() - group.phase
            slot, skipped = next_slot_after(slot - 1, now, group.config.interval)
            if skipped:
                group.overruns += skipped
                self._note_overrun(group)
        self._start_poll(group, slot)

    def _start_poll(self, group: _GroupRun, slot: int) -> None:
        group.busy = True
        index = self._selector.active
        poll = _Poll(
            group=group,
            slot=slot,
            path=index,
            link=self._paths[index].link,
            generation=self._generation,
            started_wall=self._clock(),
            started=time.perf_counter(),
        )
        self._next_block(poll)

    def _next_block(self, poll: _Poll) -> None:
        """Ask for the next block of the poll, or finish it; a device that does not answer
        one request is not asked for the rest (each would hold the line for a timeout)."""
        reads = poll.group.reads
        while poll.block < len(reads):
            read = reads[poll.block]
            if poll.silent:
                self._fold(poll, ERR_TIMEOUT)
            elif not poll.link.connected:
                self._fold(poll, ERR_DISCONNECTED)
            else:
                poll.link.request(
                    read.request, self.device.timeout, lambda outcome: self._on_block(poll, outcome)
                )
                return
        self._finish(poll)

    def _on_block(self, poll: _Poll, outcome: Reply | int) -> None:
        if poll.generation != self._generation:
            return  # the poller stopped (or restarted) since this request was sent
        try:
            self._fold(poll, outcome)
            self._next_block(poll)
        except Exception as exc:
            poll.group.busy = False
            self._crash(exc)

    def _fold(self, poll: _Poll, outcome: Reply | int) -> None:
        read = poll.group.reads[poll.block]
        code, detail = decode_reply(read, outcome, poll.values, poll.errors)
        poll.answered = poll.answered or code not in NO_ANSWER
        poll.silent = code == ERR_TIMEOUT
        if code:
            self._last_error = self._describe(read, code, detail, poll.link)
        self._note_block_error(poll.group, poll.block, read, code)
        poll.block += 1

    def _finish(self, poll: _Poll) -> None:
        group = poll.group
        group.last_latency_ms = (time.perf_counter() - poll.started) * 1000
        group.last_poll_ms = int(poll.started_wall * 1000)
        group.last_slot = poll.slot
        group.polls += 1
        self._unanswered = not poll.answered
        if poll.errors:
            group.errors += 1
        self._emit(
            Sample(
                node=self.device.name,
                group=group.config.name,
                slot=poll.slot,
                timestamp_ms=group.last_poll_ms,
                values=poll.values,
                errors=poll.errors,
                seq=0,
                source_node=self.source_node,
            )
        )
        if self._selector.switching:
            self._apply(
                self._selector.on_poll(
                    poll.path,
                    failed=not poll.answered,
                    bad=bool(poll.errors),
                    beat=self._beat_of(poll.values),
                    now=time.monotonic(),
                )
            )
        group.busy = False
        interval = group.config.interval
        slot, skipped = next_slot_after(poll.slot, self._clock() - group.phase, interval)
        if skipped:
            group.overruns += skipped
            self._note_overrun(group)
        group.next_slot = slot
        if slot * interval + group.phase <= self._clock():
            # Behind the grid (a slow answer, a busy CPU): the missed slot is polled now.
            generation = self._generation
            asyncio.get_running_loop().call_soon(self._catch_up, group, generation)

    def _note_overrun(self, group: _GroupRun) -> None:
        """Skipped slots are data nobody will have: a warning, at most every OVERRUN_LOG_S."""
        now = time.monotonic()
        if now - group.overrun_logged_at < OVERRUN_LOG_S:
            return
        log.warning(
            "group %s/%s could not be polled in time: %s slot(s) skipped so far (a device or "
            "a machine slower than the interval; see the overruns metric)",
            self.device.name,
            group.config.name,
            group.overruns,
        )
        group.overrun_logged_at = now

    def _catch_up(self, group: _GroupRun, generation: int) -> None:
        if generation != self._generation or group.busy or self.paused:
            return
        try:
            if group.next_slot is not None:
                self._start_poll(group, group.next_slot)
        except Exception as exc:
            self._crash(exc)

    def _describe(self, read: BlockRead, code: int, detail: str | None, link: Link) -> str:
        block = read.decoder.block
        where = f"{block.area} {block.start}+{block.count}"
        if detail is None:
            detail = {
                ERR_DISCONNECTED: link.last_error or "not connected",
                ERR_TIMEOUT: f"no answer within {self.device.timeout:g} s",
                ERR_IO: "connection broke during the request",
            }.get(code, str(code))
        return f"{where}: {detail}"

    def _beat_of(self, values: dict[str, Value]) -> Value | None:
        return values.get(self._heartbeat.tag) if self._heartbeat is not None else None

    # --- one read on request ---------------------------------------------------------------------

    async def read_group(self, name: str) -> tuple[dict[str, Value], dict[str, int]] | None:
        """One read of a group through the active path, outside the grid (None: no such group).

        Nothing is emitted: no slot, no sample, no outbox row; the polls carry on as they were.
        """
        group = next((g for g in self._groups if g.config.name == name), None)
        if group is None:
            return None
        link = self._active_link()
        values: dict[str, Value] = {}
        errors: dict[str, int] = {}
        for read in group.reads:
            outcome = (
                await link.transact(read.request, self.device.timeout) if link.connected else None
            )
            decode_reply(read, ERR_DISCONNECTED if outcome is None else outcome, values, errors)
        return values, errors

    # --- redundant paths ----------------------------------------------------------------------

    def _probe_read(self) -> _GroupRun | None:
        """The group a probe reads: the heartbeat's if there is one, else the first one.

        The whole group, not one block: switch-on-trigger judges quality over every tag, so
        a probe of a fraction would clear a trigger the next poll sets again.
        """
        for group in self._groups:
            if self._heartbeat is None or any(
                t.name == self._heartbeat.tag for t in group.config.tags
            ):
                return group
        return None

    async def _probe_forever(self) -> None:
        assert self.device.redundancy is not None
        interval = self.device.redundancy.probe_interval
        while True:
            await asyncio.sleep(interval)
            for index in self._selector.probe_targets():
                await self._probe_path(index)

    async def _probe_path(self, index: int) -> None:
        if self._probe is None:
            return
        link = self._paths[index].link
        values: dict[str, Value] = {}
        errors: dict[str, int] = {}
        answered = False
        for read in self._probe.reads:
            outcome = (
                await link.transact(read.request, self.device.timeout) if link.connected else None
            )
            code, _ = decode_reply(
                read, ERR_DISCONNECTED if outcome is None else outcome, values, errors
            )
            if code == ERR_TIMEOUT or outcome is None:
                break
            answered = answered or code not in NO_ANSWER
        self._apply(
            self._selector.on_probe(
                index,
                ok=answered,
                bad=bool(errors) or not answered,
                beat=self._beat_of(values),
                now=time.monotonic(),
            )
        )

    def _note_block_error(self, group: _GroupRun, index: int, read: BlockRead, code: int) -> None:
        """Log a block's error when it changes, not on every poll of a failing device."""
        previous = group.block_errors.get(index, 0)
        if code == previous:
            return
        group.block_errors[index] = code
        block = read.decoder.block
        if code:
            log.warning(
                "device %s group %s: %s %s+%s failed with %s",
                self.device.name,
                group.config.name,
                block.area,
                block.start,
                block.count,
                code,
            )
        else:
            log.info(
                "device %s group %s: %s %s+%s reads again",
                self.device.name,
                group.config.name,
                block.area,
                block.start,
                block.count,
            )


def _keep_open(connected: bool, error: str | None) -> None:
    """A link listener that only keeps the link open (DevicePoller.hold_links)."""
