"""ServiceLevel of a node's OPC UA server: pure decisions from the HA state and the data.

OPC UA Part 4, 6.6.2.4.2 (Table 103): 0 maintenance, 1 no data, 2-199 degraded, 200-255
healthy; a client of a non-transparent redundant set uses the server with the highest level.
Both nodes run this same algorithm, as Part 4 requires of a redundant server set:

============================  ===============  ===============
node                          every tag good   some tag in error
============================  ===============  ===============
publishing master / single    255              199
master handing over           240              190
master taking over            230              180
hot standby with fresh data   200              150
no fresh data (cold or warm   1                1
standby, stopped pollers),
INIT, FAULT
stopping / STOPPED            0                0
============================  ===============  ===============

A handing-over master stays above the standby until the standby publishes, so a client
moves once, to a server that holds every slot the old one served.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from tandem.hub.model import slot_of

MAINTENANCE = 0
NO_DATA = 1
# A rise waits (at most this long) until the node has stored the current slot of every
# group, so a client that moves to it never reads a slot older than the one it just read.
RISE_WAIT_S = 0.5
STALE_MARGIN_S = 0.25


class LevelReason(enum.StrEnum):
    """Why the server has its ServiceLevel: one per row of the table above."""

    MAINTENANCE = "maintenance"
    NOT_READY = "not ready"
    FAULT = "fault"
    NO_DATA = "no fresh data"
    PUBLISHING = "publishing"
    HANDING_OVER = "handing over"
    TAKING_OVER = "taking over"
    HOT_STANDBY = "hot standby"


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the hub's role gate says (hub.gate) and whether the node is going down."""

    role: str  # SINGLE, INIT, BACKUP, MASTER, FAULT, STOPPED
    phase: str | None
    publishing: bool
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class DataState:
    fresh: bool  # every group has a recent sample
    degraded: bool  # some tag of a latest sample has an error
    caught_up: bool  # every group has its current slot


_LEVELS: dict[LevelReason, tuple[int, int]] = {
    LevelReason.PUBLISHING: (255, 199),
    LevelReason.HANDING_OVER: (240, 190),
    LevelReason.TAKING_OVER: (230, 180),
    LevelReason.HOT_STANDBY: (200, 150),
}


def service_level(node: NodeState, data: DataState) -> tuple[int, LevelReason]:
    """The level this node's server should show, and why."""
    if node.stopping or node.role == "STOPPED":
        return MAINTENANCE, LevelReason.MAINTENANCE
    if node.role == "FAULT":
        return NO_DATA, LevelReason.FAULT
    if node.role not in ("SINGLE", "MASTER", "BACKUP"):
        return NO_DATA, LevelReason.NOT_READY
    if not data.fresh:
        return NO_DATA, LevelReason.NO_DATA
    if node.role == "SINGLE" or (node.role == "MASTER" and node.publishing):
        reason = LevelReason.PUBLISHING
    elif node.role == "MASTER" and node.phase == "handing_over":
        reason = LevelReason.HANDING_OVER
    elif node.role == "MASTER":
        reason = LevelReason.TAKING_OVER
    else:
        reason = LevelReason.HOT_STANDBY
    healthy, degraded = _LEVELS[reason]
    return (degraded if data.degraded else healthy), reason


def level_to_show(current: int, target: int, caught_up: bool, rise_pending_s: float) -> int:
    """The level to write now: drops at once, rises once caught up (or after RISE_WAIT_S)."""
    if target <= current or caught_up or rise_pending_s >= RISE_WAIT_S:
        return target
    return current


@dataclass(frozen=True, slots=True)
class GroupData:
    """What the server knows of one group: its grid, its newest stored slot, its errors."""

    interval: float
    timeout: float
    latest_slot: int | None
    has_errors: bool
    phase: float = 0.0  # seconds after each grid point the group polls


def data_state(groups: Iterable[GroupData], now: float) -> DataState:
    """Fresh, degraded and caught up, over every group the node polls (none: nothing missing)."""
    fresh, degraded, caught_up = True, False, True
    for g in groups:
        if g.latest_slot is None:
            return DataState(fresh=False, degraded=False, caught_up=False)
        # A poll of slot k ends by k*interval + timeout; older than that plus one slot is stale.
        at = now - g.phase
        oldest_fresh = slot_of(at - g.interval - g.timeout - STALE_MARGIN_S, g.interval)
        fresh = fresh and g.latest_slot >= oldest_fresh
        caught_up = caught_up and g.latest_slot >= slot_of(at, g.interval)
        degraded = degraded or g.has_errors
    return DataState(fresh=fresh, degraded=degraded, caught_up=caught_up)
