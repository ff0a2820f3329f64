"""Modbus southbound: TCP, RTU and RTU over TCP, shared lines, redundant device paths."""

from __future__ import annotations

from tandem.hub.modbus.link import Link, LinkPool
from tandem.hub.modbus.paths import PathSelector, PathSwitch, SwitchReason
from tandem.hub.modbus.poller import DevicePoller
from tandem.hub.modbus.schedule import CATCH_UP_S, PollScheduler, next_slot_after
from tandem.hub.modbus.status import (
    DeviceEvent,
    DeviceEventKind,
    DeviceListener,
    DeviceStatus,
    GroupStatus,
    PathStatus,
    resume_points,
)

__all__ = [
    "CATCH_UP_S",
    "DeviceEvent",
    "DeviceEventKind",
    "DeviceListener",
    "DevicePoller",
    "DeviceStatus",
    "GroupStatus",
    "Link",
    "LinkPool",
    "PathSelector",
    "PathStatus",
    "PollScheduler",
    "PathSwitch",
    "SwitchReason",
    "next_slot_after",
    "resume_points",
]
