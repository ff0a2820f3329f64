"""The hub's device timeline comes from poller events, so it always agrees with the status."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tandem.hub.modbus import DeviceEvent, DeviceEventKind, DevicePoller
from tandem.hub.runtime import Hub
from tests.unit.test_runtime_view import FakePublisher, make_config


async def test_hub_device_events_reach_the_timeline_at_once_and_are_not_repeated(
    tmp_path: Path,
) -> None:
    hub = Hub(make_config(tmp_path), publisher_factory=FakePublisher)
    try:
        assert all(isinstance(p, DevicePoller) for p in hub.pollers)
        name = hub.pollers[0].status().name
        hub._on_device_event(
            DeviceEvent(name, DeviceEventKind.CONNECTED, f"{name} connected", {"path": "x:1"})
        )
        (event,) = hub.timeline(10)
        assert (event.kind, event.message, event.detail["device"]) == (
            "device",
            f"{name} connected",
            name,
        )
        # Sampling must not add a second line for what the event already said.
        hub.check_transitions()
        assert [e.message for e in hub.timeline(10) if e.kind == "device"] == [f"{name} connected"]
        switch = DeviceEvent(
            name, DeviceEventKind.PATH_SWITCH, f"{name} now via y:2: the active path failed", {}
        )
        hub._on_device_event(switch)
        assert hub.timeline(1)[0].message == switch.message
    finally:
        hub.outbox.close()
        await asyncio.sleep(0)
