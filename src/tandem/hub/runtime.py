"""The hub runtime: pollers, outbox, publisher and API composed under one role gate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from tandem.api.app import bound_port, create_app, serve
from tandem.api.auth import Security
from tandem.api.live import LiveFeed, tag_values
from tandem.api.tagindex import TagCatalog, warm_catalog
from tandem.api.view import (
    Health,
    LiveEvent,
    Status,
    TagValue,
    TimelineEvent,
    TimelineKind,
    WritesInfo,
)
from tandem.batch import LoopStepBatch
from tandem.config.hub import DeviceConfig, TandemConfig
from tandem.hub.contracts import (
    HaHooks,
    Poller,
    PollerFactory,
    Publisher,
    PublisherFactory,
    RoleGate,
    make_poller,
)
from tandem.hub.modbus import (
    DeviceEvent,
    LinkPool,
    PollScheduler,
)
from tandem.hub.model import Sample
from tandem.hub.mqtt import MqttPublisher, MqttSettings
from tandem.hub.outbox_watch import OutboxWatch, outbox_info
from tandem.hub.pollertasks import PollerTasks
from tandem.hub.reconfig import plan_devices
from tandem.hub.report import device_info, publisher_info
from tandem.hub.timeline import ConnectionsSeen, RoleChange, Timeline
from tandem.security.users import warm_up as warm_up_password_checks
from tandem.writes.mqtt import RequestListener, RequestTopics
from tandem.writes.routes import write_router
from tandem.writes.service import Writer, WriteService

if TYPE_CHECKING:
    from tandem.north.opcua_server import OpcUaNorth

log = logging.getLogger(__name__)


TIMELINE_SIZE = 500
# Device and broker state is sampled (the components have no callbacks) this often, so a device
# that drops and comes back within a second still leaves its two lines on the timeline.
TRANSITIONS_PERIOD_S = 0.1
# On stop, messages already handed to the broker get this long for their PUBACK, so the rows
# are deleted now rather than sent again on the next start.
PUBLISH_GRACE_S = 1.0


class Hub:
    """One node's data hub: poller -> outbox -> publisher, plus the API, in one TaskGroup.

    ``async with Hub(cfg) as hub:`` starts everything and returns once the API listens;
    leaving the block stops pollers first, gives the publisher a short grace for outstanding
    acks, then stops the API and closes the outbox. The role gate decides whether pollers run
    and whether the publisher may speak; it cancels and starts tasks, never reaching inside them.
    """

    def __init__(
        self,
        config: TandemConfig,
        *,
        poller_factory: PollerFactory | None = None,
        publisher_factory: PublisherFactory | None = None,
        ha: HaHooks | None = None,
    ) -> None:
        self.config = config
        self.ha = ha
        self.standby_mode: str | None = ha.standby if ha is not None else None
        self.gate = RoleGate.initial(self.standby_mode)
        self._publisher_factory = ha.make_publisher if ha is not None else publisher_factory
        self._poller_factory = poller_factory
        self.on_sample: list[Callable[[Sample], None]] = []
        self.on_gate: list[Callable[[], None]] = []  # after every role, polling, publishing change
        # The outbox keeps what it cannot write; the watch retries it and tells the timeline.
        self._outbox_watch = OutboxWatch(
            retry=lambda: self._store([]), tell=lambda m, d: self.add_timeline("info", m, d)
        )
        self.outbox = self._outbox_watch.open(config.data_dir / "outbox.sqlite3", config.outbox)
        # Devices on the same serial port or host:port share one link from this pool.
        self.links = LinkPool()
        self.scheduler = PollScheduler()  # one timer per poll interval for every device
        try:
            self._pollers = PollerTasks(
                [self._new_poller(device, config.node) for device in config.devices],
                [device.name for device in config.devices],
                self._on_poller_crash,
            )
            self._pause_idle_pollers()
            self.publisher: Publisher = self._make_publisher(config)
            self.app: FastAPI = create_app(
                self, title=f"Tandem {config.node}", security=Security.from_config(config)
            )
        except BaseException:
            self.outbox.close()
            raise
        self.started_at = time.monotonic()
        # Samples of one loop step are committed together, in one transaction.
        self._pending: LoopStepBatch[Sample] = LoopStepBatch(self._store)
        self.live = LiveFeed(self.status, TagCatalog.from_config(config))
        # Writes: REST and MQTT requests, at most once per uuid (docs/writes.md).
        self.writes = WriteService(
            lambda: self.config, self._writer_of, self.live, config.data_dir / "writes.sqlite3"
        )
        self.app.include_router(write_router(self.writes))
        self.requests = self._make_requests(config)
        self._requests_task: asyncio.Task[None] | None = None
        self._timeline = Timeline(
            TIMELINE_SIZE, lambda event: self.live.push(LiveEvent("timeline", event))
        )
        self._crashed: set[str] = set()
        self._publisher_task: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._seen = ConnectionsSeen()
        self.north = self._make_north() if config.opcua_server is not None else None

    @property
    def pollers(self) -> list[Poller]:
        """The running config's pollers, in device order."""
        return self._pollers.pollers

    def _writer_of(self, device: str) -> Writer | None:
        return self._pollers.device_poller(device)

    def _make_requests(self, config: TandemConfig) -> RequestListener | None:
        """The MQTT request listener; none in unit tests that fake the publisher."""
        if self._publisher_factory is not None and self.ha is None:
            return None
        return RequestListener(
            MqttSettings.from_config(config.mqtt), RequestTopics.of(config), self.writes
        )

    def _make_north(self) -> OpcUaNorth:
        """The OPC UA server: fed the stored samples and told of every gate change."""
        from tandem.north.opcua_server import OpcUaNorth  # asyncua only when it is used
        from tandem.north.service_level import NodeState

        def node_state() -> NodeState:
            gate = self.gate
            return NodeState(gate.role, gate.phase, gate.publishing, self._stop.is_set())

        north = OpcUaNorth(lambda: self.config, node_state)
        self.on_sample.append(north.on_sample)
        self.on_gate.append(north.wake)
        return north

    def _new_poller(self, device: DeviceConfig, source_node: str) -> Poller:
        """A poller feeding this hub: from the factory given (unit tests) or the real one."""
        if self._poller_factory is not None:
            return self._poller_factory(device, source_node, self._on_sample)
        return make_poller(
            device, source_node, self._on_sample, self.links, self._on_device_event, self.scheduler
        )

    def _on_device_event(self, event: DeviceEvent) -> None:
        """A poller's connect, disconnect or path switch, on the timeline as it happens.

        Sampling poller status (check_transitions) lagged the live status by up to a sampling
        period, so a reader could see a device connected while the timeline still ended in
        its disconnect; events make the two agree at every instant.
        """
        self.add_timeline(*self._seen.device_event(event))

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        self._runner = asyncio.create_task(self.run(), name=f"hub:{self.config.node}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._runner.done():
            await self._raise_runner_failure()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._runner is not None:
            await self._raise_runner_failure()

    async def _raise_runner_failure(self) -> None:
        """Await the runner; a lone failure inside the TaskGroup is raised as itself."""
        assert self._runner is not None
        try:
            await self._runner
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group
            raise

    def stop(self) -> None:
        """Ask run() to shut down in order; returns at once."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Until the hub has stopped, for whatever reason; re-raises a failure.

        Cancelling the waiter leaves the hub running: only stop() or leaving the block stops it.
        """
        if self._runner is not None:
            await asyncio.wait([self._runner])
            await self._raise_runner_failure()

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    @property
    def api_port(self) -> int:
        """The port the API listens on (useful when configured as 0)."""
        return bound_port(self.app)

    async def run(self) -> None:
        """Run until stop(); raises if the API cannot listen. Closes the outbox on the way out."""
        api_ready = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                api = tasks.create_task(
                    serve(self.app, self.config.api.host, self.config.api.port, ready=api_ready),
                    name="api",
                )
                self._publisher_task = tasks.create_task(self._guarded_publisher(), name="mqtt")
                watchers = [
                    tasks.create_task(self.live.run(), name="hub-live"),
                    tasks.create_task(self._watch_transitions(), name="hub-transitions"),
                ]
                if self.north is not None:
                    watchers.append(tasks.create_task(self.north.run(), name="opcua-server"))
                if self.requests is not None:
                    self._requests_task = tasks.create_task(
                        self.requests.run(), name="mqtt-requests"
                    )
                if self.gate.polling or self.standby_mode == "warm":
                    self._pollers.start(tasks)
                await api_ready.wait()
                if self.north is not None:
                    await self.north.ready.wait()
                self.add_timeline("info", f"node {self.config.node} started")
                self._ready.set()
                warm_up_password_checks()
                await self._stop.wait()
                await self._shutdown(api, watchers)
        finally:
            self._tasks = None
            self._pending.flush()
            self.outbox.close()
            self.writes.close()
            log.info("hub %s stopped", self.config.node)

    async def _shutdown(self, api: asyncio.Task[None], watchers: list[asyncio.Task[None]]) -> None:
        log.info("hub %s stopping", self.config.node)
        await self._pollers.stop()
        self._pending.flush()
        await self.drain_inflight()
        for task in (self._publisher_task, self._requests_task, api, *watchers):
            if task is None:
                continue
            task.cancel()
            # wait(), not await: it never raises, so a cancellation of run() itself still does.
            await asyncio.wait([task])

    # --- role gate ----------------------------------------------------------------------------

    def set_polling(self, on: bool) -> None:
        """Start or cancel the poller tasks; the outbox keeps everything already collected.

        A warm standby keeps its pollers running, connected but paused, so taking over costs
        no connection set-up; hot and cold start and stop them.
        """
        changed = on != self.gate.polling
        self.gate.polling = on
        if self.standby_mode == "warm":
            self._pause_idle_pollers()
            on = True
        if self._tasks is not None:  # before run(), run() starts them if the gate is open
            if on:
                self._pollers.start(self._tasks)
            else:
                self._pollers.cancel()
        if changed:
            log.info("polling %s", "on" if on else "off")
            self._gate_changed()

    def _gate_changed(self) -> None:
        for listener in self.on_gate:
            listener()

    def _pause_idle_pollers(self) -> None:
        if self.standby_mode == "warm":
            self._pollers.pause(not self.gate.polling)

    def _make_publisher(self, config: TandemConfig) -> Publisher:
        if self._publisher_factory is not None:
            return self._publisher_factory(self.outbox, lambda: self.gate.publishing)
        return MqttPublisher(
            MqttSettings.from_config(config.mqtt),
            self.outbox,
            may_publish=lambda: self.gate.publishing,
        )

    def set_publishing(self, on: bool) -> None:
        """Open or close the publisher's gate; the publisher re-checks it before every message."""
        if on == self.gate.publishing:
            return
        self.gate.publishing = on
        log.info("publishing %s", "on" if on else "off")
        self._gate_changed()
        if on:
            self.publisher.notify()

    async def drain_inflight(self, timeout: float = PUBLISH_GRACE_S) -> None:
        """Until every message handed to the broker got its PUBACK (or `timeout`), and the
        acks of the last loop step were committed: those rows are not sent again."""
        deadline = time.monotonic() + timeout
        while self.publisher.status().inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    def set_role(
        self, role: str, term: int, reason: str, *, phase: str | None = None, detail: str = ""
    ) -> None:
        """Record a role decision: one log line, one timeline event, one status push.

        `role` is one of a small fixed set (it labels metrics); `phase` and `detail` say what
        is happening within it ("MASTER, acquiring term 2: waiting for the broker barrier").
        """
        previous = self.gate.role
        self.gate.role, self.gate.term, self.gate.phase = role, term, phase
        change = RoleChange(previous, role, term, reason, phase, detail)
        log.info("role %s -> %s: %s (%s)", previous, change.said, reason, phase or "-")
        self.add_timeline(*change.line())
        self.live.push(LiveEvent("status", self.status()))
        self._gate_changed()

    def add_timeline(
        self, kind: TimelineKind, message: str, detail: dict[str, Any] | None = None
    ) -> TimelineEvent:
        return self._timeline.add(kind, message, detail)

    def _on_poller_crash(self, name: str, exc: Exception) -> None:
        self.add_timeline("device", f"{name} poller crashed: {exc!r}", {"device": name})

    async def _guarded_publisher(self) -> None:
        try:
            await self.publisher.run()
        except Exception as exc:
            self._crashed.add("publisher")
            log.exception("MQTT publisher crashed")
            self.add_timeline("broker", f"publisher crashed: {exc!r}")

    # --- data path ----------------------------------------------------------------------------

    def _on_sample(self, sample: Sample) -> None:
        """Poller callback: queued for the commit at the end of this loop step."""
        self._pending.add(sample)

    def _store(self, batch: list[Sample]) -> None:
        """Commit one loop step's samples; the term is not stored, the sender stamps its own.

        The outbox never raises here: what it cannot write now it keeps, and commits (with
        earlier leftovers first) on a later call; hooks see samples once they are committed.
        """
        node, ha = self.config.node, self.ha
        if ha is not None:
            batch = [s for s in batch if ha.admit(s)]
        stored = self.outbox.append_many(replace(s, source_node=node) for s in batch)
        self._outbox_watch.tell()
        if not stored:
            return
        self.publisher.notify()
        if ha is not None and stored:
            ha.stored(stored)
        for sample in stored:
            self.live.note_values(sample)
            for hook in self.on_sample:
                try:
                    hook(sample)
                except Exception:
                    log.exception("on_sample hook %r failed", hook)

    async def _watch_transitions(self) -> None:
        while True:
            await asyncio.sleep(TRANSITIONS_PERIOD_S)
            self.check_transitions()

    def check_transitions(self) -> None:
        """Turn device and broker connection changes into timeline events."""
        # A DevicePoller reports its changes as events (_on_device_event), as they happen.
        sampled = self._pollers.sampled()
        where = f"{self.config.mqtt.host}:{self.config.mqtt.port}"
        for line in self._seen.sampled(sampled, self.publisher.status(), where):
            self.add_timeline(*line)

    # --- live reconfiguration -----------------------------------------------------------------

    async def reconfigure(self, config: TandemConfig) -> None:
        """Apply new devices, mqtt and outbox sections without a restart or losing a row.

        Pollers of unchanged devices keep running (their slots have no gap); changed and removed
        devices stop, new ones start if the gate polls. The publisher is replaced only when the
        mqtt section changed; rows it had in flight stay in the outbox and are sent again by the
        new one (at least once, as after a reconnect). Outbox max_rows and overflow apply to the
        next append. Node-local sections (node, data_dir, api, ha) apply at restart only.
        """
        plan = plan_devices(self.config.devices, config.devices)
        # Everything new is built before anything old stops: a failure leaves the hub as it was.
        pollers: list[Poller] = [
            self.pollers[old_i]
            if old_i is not None and new_i in plan.keep
            else self._new_poller(config.devices[new_i], config.node)
            for new_i, old_i in enumerate(plan.origin)
        ]
        mqtt_changed = config.mqtt != self.config.mqtt
        new_publisher = self._make_publisher(config) if mqtt_changed else None
        # Built and sorted in a thread (~150 ms at 10,000 tags), which the GIL's switch interval
        # (modbus.schedule.prefer_the_loop) cuts into short slices: the grid keeps its time.
        catalog = await asyncio.to_thread(warm_catalog, config)

        will_run = self._tasks is not None and (self.gate.polling or self.standby_mode == "warm")
        await self._pollers.stop_unkept(plan, pollers, config.devices, will_run=will_run)
        self._pending.flush()  # samples of stopped pollers go in before the config changes
        self._pollers.adopt(plan, pollers, [d.name for d in config.devices])
        self.config = config
        self.outbox.max_rows = config.outbox.max_rows
        self.outbox.overflow = config.outbox.overflow

        # Latest values of tags that no longer exist would otherwise stay on the dashboard.
        self.live.set_catalog(catalog)
        self._seen.keep_only({d.name for d in config.devices})

        self._pause_idle_pollers()
        if will_run:
            assert self._tasks is not None
            self._pollers.start(self._tasks)
        if new_publisher is not None:
            await self._replace_publisher(new_publisher)
            await self._replace_requests(config)
        publisher = "replaced" if new_publisher is not None else "unchanged"
        outbox = f"{config.outbox.max_rows} {config.outbox.overflow}"
        log.info(
            "reconfigured: %s device(s) (%s unchanged), publisher %s, outbox max_rows %s",
            *(len(config.devices), len(plan.keep), publisher, outbox),
        )
        self.live.push(LiveEvent("status", self.status()))

    async def _replace_requests(self, config: TandemConfig) -> None:
        """New mqtt settings: the request listener reconnects with them (and its topics)."""
        if self.requests is None:
            return
        old_task = self._requests_task
        if old_task is not None and not old_task.done():
            old_task.cancel()
            await asyncio.wait([old_task])
        self.requests = self._make_requests(config)
        if self._tasks is not None and self.requests is not None:
            self._requests_task = self._tasks.create_task(self.requests.run(), name="mqtt-requests")

    async def _replace_publisher(self, publisher: Publisher) -> None:
        old_task = self._publisher_task
        if old_task is not None and not old_task.done():
            # Acks still on the way would otherwise make the new publisher send those rows again.
            await self.drain_inflight()
            old_task.cancel()
            await asyncio.wait([old_task])
        self.publisher = publisher
        self._crashed.discard("publisher")
        self._seen.broker = False
        if self._tasks is not None:
            self._publisher_task = self._tasks.create_task(self._guarded_publisher(), name="mqtt")
            publisher.notify()

    # --- HubView ------------------------------------------------------------------------------

    def health_checks(self) -> dict[str, bool]:
        """Loops alive, devices answering, broker connected: the inputs to VRRP priority.

        With polling off (a standby) devices are not expected to be connected, so that check
        passes rather than lowering a healthy standby's priority.
        """
        publisher_alive = self._publisher_task is not None and not self._publisher_task.done()
        loops = not self._crashed and not self._pollers.crashed and publisher_alive
        devices = not self.gate.polling or self._pollers.all_reachable()
        broker = self.publisher.status().connected
        # Fails from a failed write until one succeeds: this node cannot keep what it polls.
        outbox = self.outbox.writable
        if not outbox:
            self._outbox_watch.arm()
        return {"loops": loops, "devices": devices, "broker": broker, "outbox": outbox}

    def health(self) -> Health:
        checks = self.health_checks()
        reason = self.outbox.fault_reason()
        reasons = {"outbox": reason} if reason is not None else {}
        return Health(ok=all(checks.values()), checks=checks, reasons=reasons)

    def status(self) -> Status:
        pub = self.publisher.status()
        return Status(
            node=self.config.node,
            role=self.gate.role,
            phase=self.gate.phase,
            publishing=self.gate.publishing,
            term=self.gate.term,
            standby_mode=self.standby_mode,
            uptime_s=time.monotonic() - self.started_at,
            devices=[device_info(p.status()) for p in self.pollers],
            outbox=outbox_info(self.outbox),
            publisher=publisher_info(pub),
            ha=self.ha.ha_info() if self.ha is not None else None,
            vrrp=self.ha.vrrp_info() if self.ha is not None else None,
            opcua_server=self.north.info() if self.north is not None else None,
            writes=WritesInfo(
                answered={str(k): v for k, v in self.writes.counters.answered.items()},
                drops=dict(self.writes.counters.drops),
            ),
        )

    @property
    def live_dropped(self) -> int:
        """Live events a slow dashboard lost (its queue was full)."""
        return self.live.dropped

    def tags(self) -> list[TagValue]:
        return self.live.tags()

    def tags_json(self) -> bytes:
        return self.live.tags_json()

    def timeline(self, limit: int) -> list[TimelineEvent]:
        """Newest first."""
        return self._timeline.newest(limit)

    def subscribe(self) -> AsyncIterator[LiveEvent]:
        return self.live.subscribe()

    async def read_now(
        self, device: str, group: str
    ) -> tuple[dict[str, Any], dict[str, int], float] | None:
        """One read of a group (values, errors, milliseconds), not stored, not published.

        None when the running config has no such device or group; NotImplementedError for a
        device whose poller cannot read on request (OPC UA).
        """
        poller = self._pollers.device_poller(device)
        if poller is not None:
            started = time.monotonic()
            result = await poller.read_group(group)
            if result is None:
                return None
            return result[0], result[1], (time.monotonic() - started) * 1000
        if any(d.name == device for d in self.config.devices):
            raise NotImplementedError(f"device {device!r} cannot be read on request")
        return None

    async def switchover(self) -> dict[str, Any]:
        if self.ha is None:
            raise NotImplementedError("switchover needs an HA pair; this node runs alone")
        return await self.ha.switchover()


__all__ = [
    "Hub",
    "Poller",
    "PollerFactory",
    "Publisher",
    "PublisherFactory",
    "RoleGate",
    "device_info",
    "tag_values",
]
