"""next_slot_after: where a group's grid resumes after a poll, and how many slots it skipped."""

from __future__ import annotations

import pytest

from tandem.hub.modbus import CATCH_UP_S, DeviceStatus, GroupStatus, next_slot_after, resume_points
from tandem.hub.model import slot_of


def test_next_slot_after_poll_finished_within_its_slot_continues_with_next() -> None:
    # slot 100 of a 0.1 s grid starts at 10.0 s; the poll ended at 10.03 s
    assert next_slot_after(100, 10.03, 0.1) == (101, 0)


def test_next_slot_after_poll_finished_before_its_slot_began_continues_with_next() -> None:
    # a clock a hair behind the grid point still resumes on the following slot, never repeats
    assert next_slot_after(100, 9.999, 0.1) == (101, 0)


def test_next_slot_after_poll_ran_into_next_slot_polls_it_late() -> None:
    # ended at 10.15 s: slot 101 (10.1 s) has begun but not ended, so it is polled at once
    assert next_slot_after(100, 10.15, 0.1) == (101, 0)


def test_next_slot_after_short_stall_polls_every_covered_slot_late() -> None:
    # ended at 10.55 s, 0.55 s behind: within CATCH_UP_S, so 101..105 are all polled, late
    assert next_slot_after(100, 10.55, 0.1) == (101, 0)


def test_next_slot_after_long_overrun_counts_every_missed_slot() -> None:
    slot, skipped = next_slot_after(100, 12.55, 0.1)
    assert slot == 125
    assert skipped == 24
    # the slots polled plus the ones skipped cover the grid with no gap and no repeat
    assert slot - 100 - 1 == skipped


def test_next_slot_after_ended_exactly_on_next_grid_point_polls_it_now() -> None:
    # at exactly 10.1 s slot 101 is due now
    assert next_slot_after(100, 10.1, 0.1) == (101, 0)


@pytest.mark.parametrize("interval", [0.01, 0.1, 0.25, 1.0, 7.5])
def test_next_slot_after_resumes_on_the_slot_whose_window_is_open(interval: float) -> None:
    start = slot_of(1_700_000_000.0, interval)
    for lateness in (0.0, 0.3, 1.0, 2.7, 10.2):
        now = (start + lateness) * interval
        slot, skipped = next_slot_after(start, now, interval)
        # the next slot (caught up late), or the one whose window contains now
        assert slot == start + 1 or slot == slot_of(now, interval)
        if slot != start + 1:
            assert (slot - start) * interval > CATCH_UP_S
        assert skipped == slot - start - 1


def test_next_slot_after_wall_clock_stepped_back_never_returns_an_old_slot() -> None:
    # a clock that jumped back an hour: the caller re-aligns; here no slot is reused
    assert next_slot_after(100, 10.0 - 3600, 0.1) == (101, 0)


def test_resume_points_kept_groups_on_same_grid_continue_after_last_slot() -> None:
    old = DeviceStatus(
        name="plc1",
        connected=True,
        last_error=None,
        groups=[
            GroupStatus("fast", 0.1, None, 100, 1, 0, 0, None),
            GroupStatus("slow", 1.0, None, 7, 1, 0, 0, None),
            GroupStatus("idle", 0.1, None, None, 0, 0, 0, None),
            GroupStatus("gone", 0.1, None, 5, 1, 0, 0, None),
        ],
    )
    # "slow" changed its interval: slot 8 on a 0.5 s grid is another time; "idle" never polled.
    points = resume_points(old, {"fast": 0.1, "slow": 0.5, "idle": 0.1, "new": 0.1})
    assert points == {"fast": 101}
