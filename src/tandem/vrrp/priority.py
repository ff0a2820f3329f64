"""Effective VRRP priority and fault from tracked check results, with keepalived's weight rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tandem.vrrp.types import ChecksChanged

__all__ = ["OWNER_PRIORITY", "CheckState", "clamp_priority", "effective"]

OWNER_PRIORITY = 255  # RFC 3768 §5.3.4: the address owner, never changed by weights
MIN_TRACKED_PRIORITY = 1  # 0 is reserved for "master resigns" (RFC 3768 §5.3.4)
MAX_TRACKED_PRIORITY = 254  # weights must not turn a backup into a pretend owner


@dataclass(frozen=True, slots=True)
class CheckState:
    """One tracked check as the VRRP instance sees it; `ok` is None until its first run ends."""

    name: str
    ok: bool | None
    weight: int


def clamp_priority(base: int, delta: int) -> int:
    """keepalived's effective priority: an owner stays 255, everyone else stays within 1..254.

    The clamp is why track weights never produce a priority-0 advert.
    """
    if base == OWNER_PRIORITY:
        return OWNER_PRIORITY
    return max(MIN_TRACKED_PRIORITY, min(MAX_TRACKED_PRIORITY, base + delta))


def effective(base: int, checks: Iterable[CheckState]) -> ChecksChanged:
    """Fold check results into the one event the state machine understands.

    weight 0: failing or not yet run means FAULT (keepalived holds the instance in FAULT until a
    weight-0 script has succeeded once). weight > 0 adds while OK; weight < 0 subtracts while KO;
    a weighted check that has not run yet counts as neither. The delta is trimmed so that
    base + delta is the clamped effective priority.
    """
    fault = False
    raw_delta = 0
    for check in checks:
        if check.weight == 0:
            fault = fault or check.ok is not True
        elif (check.weight > 0 and check.ok is True) or (check.weight < 0 and check.ok is False):
            raw_delta += check.weight
    return ChecksChanged(fault=fault, priority_delta=clamp_priority(base, raw_delta) - base)
