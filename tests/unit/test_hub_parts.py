"""Pure parts of the hub: the live reconfiguration plan, the timeline lines, the initial gate."""

from __future__ import annotations

from typing import Any

from tandem.config.hub import DeviceConfig, ModbusTcpDevice
from tandem.hub.contracts import RoleGate
from tandem.hub.modbus import DeviceEvent, DeviceEventKind, DeviceStatus
from tandem.hub.mqtt import PublisherStatus
from tandem.hub.reconfig import plan_devices
from tandem.hub.timeline import ConnectionsSeen, RoleChange, Timeline


def device(name: str, port: int = 502) -> DeviceConfig:
    tags = [{"name": "t", "address": 0}]
    return ModbusTcpDevice.model_validate(
        {"name": name, "host": "127.0.0.1", "port": port, "groups": [{"name": "g", "tags": tags}]}
    )


def test_plan_devices_unchanged_kept_changed_replaced_new_and_gone_apart() -> None:
    old = [device("a"), device("b"), device("gone")]
    new = [device("b", port=503), device("new"), device("a")]
    plan = plan_devices(old, new)
    assert plan.origin == (1, None, 0)
    assert plan.keep == {2: 0} and plan.replaced == {0: 1}


def status(name: str, connected: bool, error: str | None = None) -> DeviceStatus:
    return DeviceStatus(name=name, connected=connected, last_error=error, groups=[])


def broker(connected: bool, error: str | None = None) -> PublisherStatus:
    return PublisherStatus(connected, 0, 0.0, 0.0, error, 0, 0, 0)


def test_connections_seen_one_line_per_change_with_the_reason() -> None:
    seen = ConnectionsSeen()
    lines = seen.sampled([status("plc1", True)], broker(True), "127.0.0.1:1883")
    assert [m for _, m, _ in lines] == ["plc1 connected", "connected to 127.0.0.1:1883"]
    assert seen.sampled([status("plc1", True)], broker(True), "b") == []
    lines = seen.sampled([status("plc1", False, "timed out")], broker(False, "refused"), "b")
    assert [m for _, m, _ in lines] == [
        "plc1 disconnected: timed out",
        "disconnected from b: refused",
    ]
    # An event-reporting poller's change counts as seen: sampling it again adds nothing.
    event = DeviceEvent("plc1", DeviceEventKind.CONNECTED, "plc1 connected via x", {"path": 0})
    assert seen.device_event(event) == (
        "device",
        "plc1 connected via x",
        {"device": "plc1", "path": 0},
    )
    assert seen.sampled([status("plc1", True)], broker(False), "b") == []
    seen.keep_only(set())
    assert seen.devices == {}


def test_timeline_bounded_newest_first_every_event_pushed() -> None:
    pushed: list[Any] = []
    timeline = Timeline(3, pushed.append)
    for i in range(5):
        timeline.add("info", f"e{i}", None)
    assert [e.message for e in timeline.newest(10)] == ["e4", "e3", "e2"]
    assert [e.message for e in timeline.newest(1)] == ["e4"] and len(pushed) == 5


def test_role_change_names_the_term_or_the_detail() -> None:
    plain = RoleChange("BACKUP", "MASTER", 3, "peer lost", None, "")
    assert plain.said == "MASTER (term 3)"
    kind, message, detail = plain.line()
    assert (kind, message) == ("role", "became MASTER (term 3): peer lost")
    assert detail == {
        "from": "BACKUP",
        "role": "MASTER",
        "term": 3,
        "reason": "peer lost",
        "phase": None,
        "detail": "",
    }
    busy = RoleChange("BACKUP", "MASTER", 2, "vrrp", "acquiring", "acquiring term 2")
    assert busy.line()[1] == "MASTER, acquiring term 2 [vrrp]"


def test_role_gate_opens_a_single_node_and_closes_an_ha_node() -> None:
    assert RoleGate.initial(None) == RoleGate()
    assert RoleGate.initial("hot") == RoleGate(role="INIT", polling=True, publishing=False)
    assert RoleGate.initial("cold").polling is False
