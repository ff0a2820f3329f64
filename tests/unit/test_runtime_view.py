"""Hub as HubView: status, tags, timeline, live events and the role gate, with fake components."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tandem.api.live import TIMELINE_BACKLOG
from tandem.api.view import HaInfo, HubView, LiveEvent, TagQuery
from tandem.config.hub import DeviceConfig, TandemConfig
from tandem.errors import TandemError
from tandem.hub.modbus import DeviceStatus, GroupStatus
from tandem.hub.model import Sample
from tandem.hub.mqtt import PublisherStatus
from tandem.hub.outbox import Outbox
from tandem.hub.runtime import Hub


class FakePoller:
    """Stands in for DevicePoller: status is set by the test, samples are emitted by hand."""

    def __init__(self, device: DeviceConfig, source_node: str, emit: Callable[[Sample], None]):
        self.device = device
        self.emit = emit
        self.connected = False
        self.last_error: str | None = None
        self.runs = 0
        self.running = False
        self.crash_with: Exception | None = None

    def status(self) -> DeviceStatus:
        return DeviceStatus(
            name=self.device.name,
            connected=self.connected,
            last_error=self.last_error,
            groups=[
                GroupStatus(
                    name=g.name,
                    interval=g.interval,
                    last_poll_ms=1_700_000_000_000,
                    last_slot=17,
                    polls=5,
                    errors=1,
                    overruns=2,
                    last_latency_ms=1.5,
                )
                for g in self.device.groups
            ],
        )

    def resume(self, next_slots: Mapping[str, int]) -> None:
        pass

    async def run(self) -> None:
        self.runs += 1
        self.running = True
        try:
            if self.crash_with is not None:
                raise self.crash_with
            await asyncio.Event().wait()
        finally:
            self.running = False

    def sample(self, group: str, slot: int, values: dict[str, Any], errors: dict[str, int]) -> None:
        self.emit(
            Sample(
                node=self.device.name,
                group=group,
                slot=slot,
                timestamp_ms=slot * 100,
                values=values,
                errors=errors,
                seq=0,
                source_node="not-stamped-yet",
            )
        )


class FakePublisher:
    def __init__(self, outbox: Outbox, may_publish: Callable[[], bool]) -> None:
        self.outbox = outbox
        self.may_publish = may_publish
        self.connected = False
        self.notified = 0
        self.last_error: str | None = None

    def status(self) -> PublisherStatus:
        return PublisherStatus(
            connected=self.connected,
            published_total=42,
            publish_rate=10.0,
            values_rate=30.0,
            last_error=self.last_error,
            reconnects=3,
            inflight=0,
            outbox_depth=self.outbox.depth(),
        )

    def notify(self) -> None:
        self.notified += 1

    async def run(self) -> None:
        await asyncio.Event().wait()


def make_config(tmp_path: Path) -> TandemConfig:
    tags = [{"name": "t1", "address": 0}, {"name": "t2", "address": 1}]
    return TandemConfig.model_validate(
        {
            "node": "edge-a",
            "data_dir": str(tmp_path / "data"),
            "api": {"host": "127.0.0.1", "port": 0},
            "devices": [
                {"name": "plc1", "host": "127.0.0.1", "groups": [{"name": "fast", "tags": tags}]},
                {"name": "plc2", "host": "127.0.0.1", "groups": [{"name": "slow", "tags": tags}]},
            ],
        }
    )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(make_config(tmp_path), poller_factory=FakePoller, publisher_factory=FakePublisher)
    try:
        yield h
    finally:
        h.outbox.close()


def pollers(hub: Hub) -> list[FakePoller]:
    return [p for p in hub.pollers if isinstance(p, FakePoller)]


def publisher(hub: Hub) -> FakePublisher:
    assert isinstance(hub.publisher, FakePublisher)
    return hub.publisher


async def settle() -> None:
    """Let call_soon callbacks (the batched outbox append) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_hub_is_a_hub_view(hub: Hub) -> None:
    assert isinstance(hub, HubView)


async def test_hub_status_single_node_reports_devices_outbox_and_publisher(hub: Hub) -> None:
    plc1, plc2 = pollers(hub)
    plc1.connected = True
    plc2.last_error = "connection refused"
    plc1.sample("fast", 1, {"t1": 1, "t2": 2}, {})
    await settle()

    status = hub.status()

    assert (status.node, status.role, status.term) == ("edge-a", "SINGLE", 0)
    assert [(d.name, d.connected, d.last_error) for d in status.devices] == [
        ("plc1", True, None),
        ("plc2", False, "connection refused"),
    ]
    group = status.devices[0].groups[0]
    assert (group.name, group.polls, group.errors, group.overruns) == ("fast", 5, 1, 2)
    assert status.outbox.depth == 1
    assert status.publisher.published_total == 42
    assert status.publisher.reconnects == 3
    assert status.ha is None and status.vrrp is None
    assert status.uptime_s >= 0


class FakeHa:
    """The HA hooks a hub gets at construction; records what the hub hands it."""

    standby = "hot"

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.floor = -1

    def make_publisher(self, outbox: Outbox, may_publish: Callable[[], bool]) -> FakePublisher:
        return FakePublisher(outbox, may_publish)

    def admit(self, sample: Sample) -> bool:
        return sample.slot > self.floor

    def stored(self, samples: list[Sample]) -> None:
        self.batches.append(samples)

    def ha_info(self) -> HaInfo:
        return HaInfo(peer="edge-b", peer_state="BACKUP", watermark_lag=3)

    def vrrp_info(self) -> dict[str, Any]:
        return {"state": "MASTER", "priority": 150}

    async def switchover(self) -> dict[str, Any]:
        return {"accepted": True}


async def ha_hub(tmp_path: Path) -> tuple[Hub, FakeHa]:
    ha = FakeHa()
    return Hub(make_config(tmp_path), poller_factory=FakePoller, ha=ha), ha


async def test_hub_late_slots_dropped_before_the_append_and_stored_reported(
    tmp_path: Path,
) -> None:
    hub, ha = await ha_hub(tmp_path)
    try:
        ha.floor = 10
        plc1, _ = pollers(hub)
        for slot in (9, 10, 11, 12):
            plc1.sample("fast", slot, {"t1": slot}, {})
        await settle()
        assert [s.slot for batch in ha.batches for s in batch] == [11, 12]
        assert hub.outbox.depth() == 2
    finally:
        hub.outbox.close()


async def test_hub_status_with_ha_hooks_includes_their_answers(tmp_path: Path) -> None:
    hub, _ = await ha_hub(tmp_path)
    hub.outbox.close()
    status = hub.status()
    assert status.ha is not None and status.ha.peer == "edge-b" and status.ha.watermark_lag == 3
    assert status.vrrp == {"state": "MASTER", "priority": 150}
    assert status.standby_mode == "hot"


async def test_hub_samples_stamped_with_node_and_sequenced_term_left_to_sender(hub: Hub) -> None:
    seen: list[Sample] = []
    hub.on_sample.append(seen.append)
    hub.gate.term = 7
    plc1, _ = pollers(hub)
    plc1.sample("fast", 10, {"t1": 1}, {})
    plc1.sample("fast", 11, {"t1": 2}, {})
    await settle()

    assert [(s.slot, s.seq, s.source_node, s.term) for s in seen] == [
        (10, 1, "edge-a", 0),
        (11, 2, "edge-a", 0),
    ]
    assert hub.outbox.depth() == 2
    rows = hub.outbox.peek(10)
    assert [r.source_node for r in rows] == ["edge-a", "edge-a"]
    # the stored row carries no term: the sender's goes in at send time
    assert b'"term":7,' in rows[0].payload(7) and b'"term":' not in rows[0].body
    assert publisher(hub).notified >= 1


async def test_hub_tags_latest_value_or_error_per_tag(hub: Hub) -> None:
    plc1, plc2 = pollers(hub)
    plc1.sample("fast", 1, {"t1": 1, "t2": 2.5}, {})
    plc2.sample("slow", 1, {"t1": True}, {"t2": 2002})
    plc1.sample("fast", 2, {"t2": 3.5}, {"t1": 1001})
    await settle()

    tags = {(t.device, t.tag): t for t in hub.tags()}

    assert set(tags) == {("plc1", "t1"), ("plc1", "t2"), ("plc2", "t1"), ("plc2", "t2")}
    assert (tags["plc1", "t1"].value, tags["plc1", "t1"].error) == (None, 1001)
    assert (tags["plc1", "t2"].value, tags["plc1", "t2"].slot) == (3.5, 2)
    assert tags["plc2", "t1"].value is True
    assert (tags["plc2", "t2"].value, tags["plc2", "t2"].error) == (None, 2002)
    assert [t.device for t in hub.tags()] == sorted(t.device for t in hub.tags())


async def test_hub_timeline_device_and_broker_transitions_newest_first(hub: Hub) -> None:
    plc1, _ = pollers(hub)
    plc1.connected = True
    publisher(hub).connected = True
    hub.check_transitions()
    hub.check_transitions()  # nothing changed: no new events
    plc1.connected = False
    plc1.last_error = "connection lost"
    hub.check_transitions()

    events = hub.timeline(10)

    assert [e.kind for e in events] == ["device", "broker", "device"]
    assert events[0].message == "plc1 disconnected: connection lost"
    assert events[0].detail["device"] == "plc1"
    assert events[2].message == "plc1 connected"
    assert events[0].ts_ms >= events[-1].ts_ms
    assert len(hub.timeline(2)) == 2


async def test_hub_set_role_updates_gate_timeline_and_status(hub: Hub) -> None:
    hub.set_role("MASTER", 4, "peer silent for 3 adverts")

    status = hub.status()
    (event,) = hub.timeline(5)

    assert (hub.gate.role, hub.gate.term) == ("MASTER", 4)
    assert (status.role, status.term) == ("MASTER", 4)
    assert event.kind == "role"
    assert "MASTER" in event.message and "peer silent" in event.message
    assert event.detail == {
        "from": "SINGLE",
        "role": "MASTER",
        "term": 4,
        "reason": "peer silent for 3 adverts",
        "phase": None,
        "detail": "",
    }


async def test_hub_timeline_is_bounded(hub: Hub) -> None:
    for i in range(600):
        hub.add_timeline("info", f"event {i}")
    events = hub.timeline(10_000)
    assert len(events) == 500
    assert events[0].message == "event 599"


async def test_hub_subscribe_hello_then_status_then_timeline_events(hub: Hub) -> None:
    events = hub.subscribe()
    hello = await anext(events)
    first = await anext(events)
    hub.add_timeline("config", "config reloaded")
    second = await asyncio.wait_for(anext(events), 1)
    await events.aclose()

    assert hello.type == "hello" and len(hello.data["subscription"]) >= 16
    assert first.type == "status" and first.data.node == "edge-a"
    assert second.type == "timeline" and second.data.message == "config reloaded"


async def test_hub_subscribe_slow_client_loses_oldest_timeline_events(hub: Hub) -> None:
    events = hub.subscribe()
    await anext(events)  # the subscription is registered once the first event is taken
    await anext(events)  # status
    for i in range(TIMELINE_BACKLOG + 5):
        hub.add_timeline("info", f"event {i}")
    got: list[LiveEvent] = []
    for _ in range(TIMELINE_BACKLOG):
        got.append(await asyncio.wait_for(anext(events), 1))
    await events.aclose()

    assert got[0].data.message == "event 5"
    assert got[-1].data.message == f"event {TIMELINE_BACKLOG + 4}"
    assert hub.live_dropped == 5


async def test_hub_health_checks_follow_devices_and_broker(hub: Hub) -> None:
    assert set(hub.health_checks()) == {"loops", "devices", "broker", "outbox"}
    assert hub.health_checks()["outbox"] is True
    # not running: no publisher loop
    assert hub.health_checks()["loops"] is False
    plc1, plc2 = pollers(hub)
    plc1.connected = True
    assert hub.health_checks()["devices"] is False
    plc2.connected = True
    publisher(hub).connected = True
    checks = hub.health_checks()
    assert checks["devices"] is True and checks["broker"] is True


async def test_hub_health_devices_not_required_while_polling_is_off(hub: Hub) -> None:
    hub.set_polling(False)
    assert hub.health_checks()["devices"] is True
    assert hub.gate.polling is False


async def test_hub_switchover_without_handler_not_implemented(hub: Hub) -> None:
    with pytest.raises(NotImplementedError):
        await hub.switchover()


async def test_hub_switchover_goes_to_the_ha_hooks(tmp_path: Path) -> None:
    hub, _ = await ha_hub(tmp_path)
    hub.outbox.close()
    assert await hub.switchover() == {"accepted": True}
    assert (hub.gate.role, hub.gate.publishing) == ("INIT", False)  # an HA hub starts closed


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_hub_running_set_polling_cancels_and_restarts_pollers(hub: Hub) -> None:
    async with hub:
        plc1, plc2 = pollers(hub)
        await wait_for(lambda: plc1.running and plc2.running)
        assert hub.health_checks()["loops"] is True

        hub.set_polling(False)
        await wait_for(lambda: not plc1.running and not plc2.running)
        hub.set_polling(True)
        await wait_for(lambda: plc1.running and plc2.running)

        assert (plc1.runs, plc2.runs) == (2, 2)
        assert hub.timeline(10)[-1].message == "node edge-a started"
    assert not hub.running
    assert not plc1.running


async def test_hub_running_poller_crash_shows_in_health_not_a_hub_stop(tmp_path: Path) -> None:
    def crashing(device: DeviceConfig, node: str, emit: Callable[[Sample], None]) -> FakePoller:
        poller = FakePoller(device, node, emit)
        if device.name == "plc2":
            poller.crash_with = RuntimeError("boom")
        return poller

    hub = Hub(make_config(tmp_path), poller_factory=crashing, publisher_factory=FakePublisher)
    async with hub:
        await wait_for(lambda: hub.health_checks()["loops"] is False)
        assert hub.running
        assert not hub.health().ok
        assert any("crashed" in e.message for e in hub.timeline(10))


async def test_hub_api_port_taken_fails_to_start_and_closes_outbox(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = make_config(tmp_path).model_copy(
            update={"api": make_config(tmp_path).api.model_copy(update={"port": port})}
        )
        hub = Hub(cfg, poller_factory=FakePoller, publisher_factory=FakePublisher)
        with pytest.raises(TandemError, match="cannot listen"):
            async with hub:
                pass
    assert hub.outbox.closed


async def test_hub_live_view_pages_stored_samples_and_follows_reconfiguration(
    tmp_path: Path,
) -> None:
    hub = Hub(make_config(tmp_path), poller_factory=FakePoller, publisher_factory=FakePublisher)
    async with hub:
        plc1, plc2 = pollers(hub)
        plc1.sample("fast", 3, {"t1": 10, "t2": 20}, {})
        plc2.sample("slow", 3, {"t1": 1}, {"t2": 1001})
        await settle()
        page = hub.live.page(TagQuery(error="error"))
        assert [(r.key, r.error) for r in page.rows] == [("plc2/slow/t2", 1001)]
        assert hub.live.page(TagQuery()).catalog_total == 4

        doc = make_config(tmp_path).model_dump(mode="json")
        doc["devices"] = doc["devices"][:1]
        await hub.reconfigure(TandemConfig.model_validate(doc))

        after = hub.live.page(TagQuery())
        assert (after.catalog_total, after.devices) == (2, ["plc1"])
        assert [(r.key, r.value) for r in after.rows] == [
            ("plc1/fast/t1", 10),
            ("plc1/fast/t2", 20),
        ]
        assert {t.device for t in hub.tags()} == {"plc1"}
