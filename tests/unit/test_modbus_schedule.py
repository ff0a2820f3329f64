"""next_slot_after: where a group's grid resumes after a poll, and how many slots it skipped."""

from __future__ import annotations

import pytest

from tandem.hub.modbus import next_slot_after
from tandem.hub.model import slot_of


def test_next_slot_after_poll_finished_within_its_slot_continues_with_next() -> None:
    # slot 100 of a 0.1 s grid starts at 10.0 s; the poll ended at 10.03 s
    assert next_slot_after(100, 10.03, 0.1) == (101, 0)


def test_next_slot_after_poll_finished_before_its_slot_began_continues_with_next() -> None:
    # a clock a hair behind the grid point still resumes on the following slot, never repeats
    assert next_slot_after(100, 9.999, 0.1) == (101, 0)


def test_next_slot_after_poll_ran_into_next_slot_skips_it() -> None:
    # ended at 10.15 s: slot 101 (10.1 s) has begun, so it is missed; resume on 102
    assert next_slot_after(100, 10.15, 0.1) == (102, 1)


def test_next_slot_after_long_overrun_counts_every_missed_slot() -> None:
    slot, skipped = next_slot_after(100, 10.55, 0.1)
    assert slot == 106
    assert skipped == 5
    # the slots polled plus the ones skipped cover the grid with no gap and no repeat
    assert slot - 100 - 1 == skipped


def test_next_slot_after_ended_exactly_on_next_grid_point_skips_it() -> None:
    # at exactly 10.1 s slot 101 is due now; it cannot be polled on time any more
    assert next_slot_after(100, 10.1, 0.1) == (102, 1)


@pytest.mark.parametrize("interval", [0.01, 0.1, 0.25, 1.0, 7.5])
def test_next_slot_after_resumes_on_a_grid_point_still_ahead(interval: float) -> None:
    start = slot_of(1_700_000_000.0, interval)
    for lateness in (0.0, 0.3, 1.0, 2.7, 10.2):
        now = (start + lateness) * interval
        slot, skipped = next_slot_after(start, now, interval)
        assert slot * interval > now - 1e-9
        assert skipped == max(0, slot - start - 1)


def test_next_slot_after_wall_clock_stepped_back_never_returns_an_old_slot() -> None:
    # a clock that jumped back an hour: the caller re-aligns; here no slot is reused
    assert next_slot_after(100, 10.0 - 3600, 0.1) == (101, 0)
