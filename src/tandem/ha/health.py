"""The hub's health as the coordinator sees it: debounced checks folded into priority and fault.

A check counts as failed once it has failed for `fail_after` (connection set-up at start and
one-off blips must not move the role). `loops` (the hub's own tasks, and the hub answering at
all) is a fault, like a weight-0 keepalived script; every other check lowers the priority by
its weight, with keepalived's clamping rules (`vrrp.priority.effective`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem.vrrp.priority import CheckState, effective

LOOPS = "loops"
BROKER = "broker"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    base_priority: int
    broker_weight: int
    devices_weight: int  # also used for every other check but loops and broker
    fail_after: float

    def weight(self, check: str) -> int | None:
        """The keepalived-style weight of a check: 0 faults, negative lowers, None ignores."""
        if check == LOOPS:
            return 0
        w = self.broker_weight if check == BROKER else self.devices_weight
        return -w if w > 0 else None


@dataclass(slots=True)
class HealthState:
    """Debounced check results, and what they mean for the coordinator."""

    policy: HealthPolicy
    failing_since: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def update(self, raw: Mapping[str, bool], reasons: Mapping[str, str], now: float) -> None:
        for name, ok in raw.items():
            if ok:
                self.failing_since.pop(name, None)
            else:
                self.failing_since.setdefault(name, now)
        for gone in set(self.failing_since) - set(raw):
            del self.failing_since[gone]
        fail_after = self.policy.fail_after
        self.checks = {
            name: ok or (name != LOOPS and now - self.failing_since[name] < fail_after)
            for name, ok in raw.items()
        }
        self.reasons = {k: v for k, v in reasons.items() if not self.checks.get(k, True)}

    def force_fault(self, reason: str) -> None:
        """The hub is gone or silent: nothing it reported before still holds."""
        self.checks = {LOOPS: False}
        self.reasons = {LOOPS: reason}
        self.failing_since.clear()

    @property
    def healthy(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def priority(self) -> tuple[bool, int]:
        """(fault, priority delta) for the coordinator."""
        states = []
        for name, ok in self.checks.items():
            weight = self.policy.weight(name)
            if weight is not None:
                states.append(CheckState(name, ok, weight))
        change = effective(self.policy.base_priority, states)
        return change.fault, change.priority_delta
