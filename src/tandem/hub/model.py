"""The sample: what one poll of one group produced, and the identity that makes failover exact."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Value = int | float | bool | str


def slot_of(poll_time: float, interval: float) -> int:
    """A group's sample identity: the index of its poll on the wall-clock grid of its interval.

    Two nodes polling the same group on the same grid give the same slot for the same poll,
    which is what lets a backup resume exactly where the master's broker acknowledgements end.
    A small epsilon keeps a poll that fires a hair early on the slot it was scheduled for.
    """
    return math.floor(poll_time / interval + 1e-6)


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one group: values and per-tag errors, stamped with slot and sequence."""

    node: str  # Neuron's "node": the southbound device name
    group: str
    slot: int
    timestamp_ms: int
    values: dict[str, Value]
    errors: dict[str, int]
    seq: int  # per (device, group), given by the outbox when the sample is committed
    source_node: str = ""  # the Tandem node that collected it
    # The fencing term a message is sent under. The outbox never stores it: the publishing node
    # stamps its own term at send time (tandem.hub.wire), so this stays 0 on the data path.
    term: int = 0

    def payload(self) -> dict[str, Any]:
        """Neuron's "values" format plus the fields that make delivery exact across failover.

        The key order is the wire order; tandem.hub.wire writes the same object as bytes.
        """
        return {
            "timestamp": self.timestamp_ms,
            "node": self.node,
            "group": self.group,
            "values": self.values,
            "errors": self.errors,
            "slot": self.slot,
            "seq": self.seq,
            "term": self.term,
            "source_node": self.source_node,
        }


@dataclass(slots=True)
class Counter:
    """A small mutable counter keyed by reason, for drops and errors shown in status and metrics."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def total(self) -> int:
        return sum(self.counts.values())
