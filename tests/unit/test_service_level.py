"""ServiceLevel decisions (OPC UA Part 4, 6.6.2.4.2): pure, so every row is checked here."""

from __future__ import annotations

import pytest

from tandem.north.service_level import (
    RISE_WAIT_S,
    DataState,
    GroupData,
    LevelReason,
    NodeState,
    data_state,
    level_to_show,
    service_level,
)

GOOD = DataState(fresh=True, degraded=False, caught_up=True)
ERRORS = DataState(fresh=True, degraded=True, caught_up=True)
STALE = DataState(fresh=False, degraded=False, caught_up=False)


@pytest.mark.parametrize(
    ("node", "data", "level", "reason"),
    [
        (NodeState("SINGLE", None, True), GOOD, 255, LevelReason.PUBLISHING),
        (NodeState("MASTER", "active", True), GOOD, 255, LevelReason.PUBLISHING),
        (NodeState("MASTER", "active", True), ERRORS, 199, LevelReason.PUBLISHING),
        (NodeState("MASTER", "handing_over", False), GOOD, 240, LevelReason.HANDING_OVER),
        (NodeState("MASTER", "acquiring", False), GOOD, 230, LevelReason.TAKING_OVER),
        (NodeState("MASTER", "barrier", False), ERRORS, 180, LevelReason.TAKING_OVER),
        (NodeState("BACKUP", "standby", False), GOOD, 200, LevelReason.HOT_STANDBY),
        (NodeState("BACKUP", "standby", False), ERRORS, 150, LevelReason.HOT_STANDBY),
        (NodeState("BACKUP", "standby", False), STALE, 1, LevelReason.NO_DATA),
        (NodeState("MASTER", "active", True), STALE, 1, LevelReason.NO_DATA),
        (NodeState("FAULT", "standby", False), GOOD, 1, LevelReason.FAULT),
        (NodeState("INIT", None, False), GOOD, 1, LevelReason.NOT_READY),
        (NodeState("STOPPED", None, False), GOOD, 0, LevelReason.MAINTENANCE),
        (NodeState("MASTER", "active", True, stopping=True), GOOD, 0, LevelReason.MAINTENANCE),
    ],
)
def test_service_level_each_state_has_its_level(
    node: NodeState, data: DataState, level: int, reason: LevelReason
) -> None:
    assert service_level(node, data) == (level, reason)


def test_service_level_order_master_above_handover_above_takeover_above_standby() -> None:
    def level(role: str, phase: str, publishing: bool, data: DataState = GOOD) -> int:
        return service_level(NodeState(role, phase, publishing), data)[0]

    healthy = [
        level("MASTER", "active", True),
        level("MASTER", "handing_over", False),
        level("MASTER", "acquiring", False),
        level("BACKUP", "standby", False),
    ]
    assert healthy == sorted(healthy, reverse=True) and len(set(healthy)) == 4
    assert all(200 <= x <= 255 for x in healthy)
    # Degraded master below a healthy standby: the client reads the better data.
    assert level("MASTER", "active", True, ERRORS) < level("BACKUP", "standby", False)
    assert 2 <= level("MASTER", "active", True, ERRORS) <= 199


def test_service_level_drops_at_once_rises_when_caught_up() -> None:
    assert level_to_show(255, 1, caught_up=False, rise_pending_s=0.0) == 1
    assert level_to_show(200, 255, caught_up=False, rise_pending_s=0.0) == 200
    assert level_to_show(200, 255, caught_up=True, rise_pending_s=0.0) == 255
    assert level_to_show(200, 255, caught_up=False, rise_pending_s=RISE_WAIT_S) == 255


def test_service_level_data_state_fresh_caught_up_and_degraded() -> None:
    now = 1000.05  # slot 10000 of a 0.1 s grid began 50 ms ago
    current = GroupData(0.1, 1.0, 10000, False)
    behind = GroupData(0.1, 1.0, 9999, False)
    assert data_state([current], now) == DataState(True, False, True)
    assert data_state([behind], now) == DataState(True, False, False)
    assert data_state([current, GroupData(1.0, 1.0, 1000, True)], now).degraded
    stale = GroupData(0.1, 1.0, 9980, False)  # 2 s old with a 1 s timeout
    assert not data_state([stale], now).fresh
    assert not data_state([GroupData(0.1, 1.0, None, False)], now).fresh
    assert data_state([], now) == DataState(True, False, True)
