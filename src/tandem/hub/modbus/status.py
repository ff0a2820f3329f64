"""What a device poller reports: status snapshots for the API, events for the timeline."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """What one group's polling looks like right now, for the API and metrics."""

    name: str
    interval: float
    last_poll_ms: int | None
    last_slot: int | None
    polls: int
    errors: int  # polls in which at least one tag had an error
    overruns: int  # grid slots skipped because a poll ran past its next slot
    last_latency_ms: float | None


def resume_points(old: DeviceStatus, new_intervals: Mapping[str, float]) -> dict[str, int]:
    """Where a replaced device's groups continue: the slot after the last one each emitted.

    Only for groups kept under the same name and interval (a slot number means the same poll
    time only on the same grid), so a live config change neither drops nor repeats a slot.
    """
    return {
        g.name: g.last_slot + 1
        for g in old.groups
        if g.last_slot is not None and new_intervals.get(g.name) == g.interval
    }


@dataclass(frozen=True, slots=True)
class PathStatus:
    """One path of a device: where it goes, whether its line is up, whether it is in use."""

    endpoint: str
    connected: bool
    active: bool
    healthy: bool


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device: connection state, the last error seen, its groups and its paths."""

    name: str
    connected: bool
    last_error: str | None
    groups: list[GroupStatus]
    active_path: str | None = None
    paths: list[PathStatus] = field(default_factory=list)
    path_switches: int = 0


class DeviceEventKind(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    PATH_SWITCH = "path switch"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A change worth a timeline line, reported the moment it happens (never sampled)."""

    device: str
    kind: DeviceEventKind
    message: str
    detail: dict[str, Any]


DeviceListener = Callable[[DeviceEvent], None]
