"""PathSelector: which path a redundant device uses, decided from observations and a fake clock."""

from __future__ import annotations

from typing import Any

from tandem.config.hub import RedundancyConfig
from tandem.hub.modbus.paths import PathSelector, SwitchReason


def selector(mode: str, now: float = 0.0, **trigger: Any) -> PathSelector:
    return PathSelector(2, RedundancyConfig.model_validate({"mode": mode, **trigger}), now)


def test_path_selector_failure_mode_switches_on_a_failed_poll_and_returns_on_probe() -> None:
    s = selector("switch-on-failure")
    assert s.probe_targets() == [1]
    switch = s.on_poll(0, failed=True, bad=True, beat=None, now=1.0)
    assert switch is not None and (switch.to_index, switch.reason) == (1, SwitchReason.PATH_FAILED)
    assert s.active == 1 and s.probe_targets() == [0]
    assert s.on_probe(0, ok=False, bad=True, beat=None, now=2.0) is None
    back = s.on_probe(0, ok=True, bad=False, beat=None, now=3.0)
    assert back is not None and back.reason is SwitchReason.PRIMARY_BACK and s.active == 0
    assert s.switches == 2


def test_path_selector_failure_mode_link_down_switches_at_once() -> None:
    s = selector("switch-on-failure")
    switch = s.on_link(0, connected=False)
    assert switch is not None and s.active == 1


def test_path_selector_failure_mode_modbus_exception_is_not_a_path_failure() -> None:
    s = selector("switch-on-failure")
    assert s.on_poll(0, failed=False, bad=True, beat=None, now=1.0) is None
    assert s.active == 0


def test_path_selector_failure_mode_both_down_stays_then_takes_whichever_answers() -> None:
    s = selector("switch-on-failure")
    s.on_link(1, connected=False)
    assert s.on_poll(0, failed=True, bad=True, beat=None, now=1.0) is None  # nowhere to go
    switch = s.on_probe(1, ok=True, bad=False, beat=None, now=2.0)
    assert switch is not None and switch.reason is SwitchReason.ACTIVE_DOWN_OTHER_UP


def test_path_selector_trigger_bad_polls_needs_n_in_a_row() -> None:
    s = selector("switch-on-trigger", bad_polls=3)
    assert s.on_poll(0, failed=False, bad=True, beat=None, now=1.0) is None
    assert s.on_poll(0, failed=False, bad=False, beat=None, now=2.0) is None  # resets
    assert s.on_poll(0, failed=False, bad=True, beat=None, now=3.0) is None
    assert s.on_poll(0, failed=True, bad=True, beat=None, now=4.0) is None
    switch = s.on_poll(0, failed=False, bad=True, beat=None, now=5.0)
    assert switch is not None and switch.reason is SwitchReason.BAD_QUALITY
    # Back once the primary reads cleanly again.
    assert s.probe_targets() == [0]
    back = s.on_probe(0, ok=True, bad=False, beat=None, now=6.0)
    assert back is not None and back.reason is SwitchReason.TRIGGER_CLEARED


def test_path_selector_trigger_heartbeat_unchanged_switches_and_moving_beat_returns() -> None:
    s = selector("switch-on-trigger", heartbeat={"tag": "beat", "unchanged_for": 5})
    for t, beat in [(1.0, 1), (2.0, 2), (3.0, 3)]:
        assert s.on_poll(0, failed=False, bad=False, beat=beat, now=t) is None
    assert s.on_poll(0, failed=False, bad=False, beat=3, now=7.9) is None  # 4.9 s unchanged
    switch = s.on_poll(0, failed=False, bad=False, beat=3, now=8.0)
    assert switch is not None and switch.reason is SwitchReason.HEARTBEAT_STALE
    assert s.on_probe(0, ok=True, bad=False, beat=3, now=9.0) is None  # still frozen
    back = s.on_probe(0, ok=True, bad=False, beat=4, now=10.0)
    assert back is not None and back.reason is SwitchReason.TRIGGER_CLEARED and s.active == 0


def test_path_selector_trigger_mode_ignores_a_plain_failure_of_the_secondary() -> None:
    s = selector("switch-on-trigger", bad_polls=1)
    s.on_poll(0, failed=True, bad=True, beat=None, now=1.0)
    assert s.active == 1
    assert s.on_poll(1, failed=True, bad=True, beat=None, now=2.0) is None
    assert s.active == 1


def test_path_selector_pinned_modes_never_move_or_probe() -> None:
    primary = selector("primary-only")
    secondary = selector("secondary-only")
    assert (primary.active, secondary.active) == (0, 1)
    for s in (primary, secondary):
        assert s.probe_targets() == []
        assert s.on_link(s.active, connected=False) is None
        assert s.on_poll(s.active, failed=True, bad=True, beat=None, now=1.0) is None


def test_path_selector_single_path_device_is_primary_only() -> None:
    s = PathSelector(1, None, 0.0)
    assert not s.switching and s.active == 0 and s.probe_targets() == []
