"""Effective priority tests: keepalived's weight, fault and clamp rules."""

from __future__ import annotations

import pytest

from tandem.vrrp.priority import CheckState, clamp_priority, effective
from tandem.vrrp.types import ChecksChanged


def test_effective_no_checks_no_fault_no_delta() -> None:
    assert effective(100, []) == ChecksChanged(fault=False, priority_delta=0)


@pytest.mark.parametrize(("ok", "fault"), [(True, False), (False, True), (None, True)])
def test_effective_weight_zero_check_faults_unless_ok(ok: bool | None, fault: bool) -> None:
    result = effective(100, [CheckState("alive", ok, 0)])
    assert result == ChecksChanged(fault=fault, priority_delta=0)


def test_effective_positive_weight_adds_only_while_ok() -> None:
    assert effective(90, [CheckState("a", True, 20)]).priority_delta == 20
    assert effective(90, [CheckState("a", False, 20)]).priority_delta == 0
    assert effective(90, [CheckState("a", None, 20)]).priority_delta == 0


def test_effective_negative_weight_subtracts_only_while_ko() -> None:
    assert effective(100, [CheckState("a", False, -30)]).priority_delta == -30
    assert effective(100, [CheckState("a", True, -30)]).priority_delta == 0
    assert effective(100, [CheckState("a", None, -30)]).priority_delta == 0


def test_effective_mixed_checks_sum_weights_and_any_fault_wins() -> None:
    checks = [
        CheckState("up", True, 10),
        CheckState("down", False, -5),
        CheckState("hub", False, 0),
        CheckState("fine", True, 0),
    ]
    assert effective(100, checks) == ChecksChanged(fault=True, priority_delta=5)


@pytest.mark.parametrize(
    ("base", "weight", "expected_delta"),
    [(250, 50, 4), (10, -50, -9), (254, 1, 0), (1, -1, 0)],
)
def test_effective_delta_clamped_to_1_254(base: int, weight: int, expected_delta: int) -> None:
    ok = weight > 0  # the weight only counts while OK (positive) or KO (negative)
    result = effective(base, [CheckState("c", ok, weight)])
    assert result.priority_delta == expected_delta
    assert 1 <= base + result.priority_delta <= 254


def test_effective_owner_priority_ignores_weights() -> None:
    result = effective(255, [CheckState("c", False, -100), CheckState("d", True, 5)])
    assert result == ChecksChanged(fault=False, priority_delta=0)


@pytest.mark.parametrize(
    ("base", "delta", "expected"),
    [(100, 0, 100), (100, -200, 1), (100, 200, 254), (255, -50, 255), (90, 20, 110)],
)
def test_clamp_priority_bounds(base: int, delta: int, expected: int) -> None:
    assert clamp_priority(base, delta) == expected
