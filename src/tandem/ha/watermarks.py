"""Per-stream delivery facts: what subscribers already have, what our own buffer covers.

A slot is delivered once it is on the broker, whoever sent it. Every node keeps, per stream
(device/group), the highest delivered slot (its *watermark*) from what it saw on the broker,
from its own PUBACKs and from the peer link, and the first slot its own buffer holds since it
last started polling. A node can continue a stream exactly from a watermark only if its buffer
starts at or before the slot after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem.ha.types import Key


def uncovered(buffer_from: Mapping[Key, int], watermarks: Mapping[Key, int]) -> list[Key]:
    """Streams whose next slot after the watermark is not in the buffer described."""
    return sorted(
        key
        for key, slot in watermarks.items()
        if key not in buffer_from or buffer_from[key] > slot + 1
    )


@dataclass(slots=True)
class Watermarks:
    delivered: dict[Key, int] = field(default_factory=dict)
    buffer_from: dict[Key, int] = field(default_factory=dict)
    latest: dict[Key, int] = field(default_factory=dict)  # newest slot we polled
    trimmed: dict[Key, int] = field(default_factory=dict)  # applied by the outbox
    trim_sent: dict[Key, int] = field(default_factory=dict)  # asked for, not yet applied

    def advance(self, key: Key, slot: int) -> bool:
        """Record a delivered slot; True if the watermark moved."""
        if slot > self.delivered.get(key, -1):
            self.delivered[key] = slot
            return True
        return False

    def merge(self, watermarks: Mapping[Key, int]) -> None:
        for key, slot in watermarks.items():
            self.advance(key, slot)

    def polled(self, key: Key, first: int, last: int) -> None:
        if key not in self.buffer_from or first < self.buffer_from[key]:
            self.buffer_from[key] = first
        if last > self.latest.get(key, -1):
            self.latest[key] = last

    def polling_stopped(self) -> None:
        """A gap in our own polling: the buffer no longer covers anything before now."""
        self.buffer_from.clear()

    def uncovered(self, watermarks: Mapping[Key, int]) -> list[Key]:
        return uncovered(self.buffer_from, watermarks)

    def lag(self) -> int | None:
        """How many slots the newest poll is ahead of delivery, at the worst stream."""
        lags = [slot - self.delivered[k] for k, slot in self.latest.items() if k in self.delivered]
        return max(lags) if lags else None

    def pending_trims(self) -> dict[Key, int]:
        """Delivered slots not yet trimmed (nor asked for): what the outbox should drop now."""
        return {
            key: slot
            for key, slot in self.delivered.items()
            if self.trimmed.get(key, -1) < slot and self.trim_sent.get(key) != slot
        }

    def untrimmed(self) -> dict[Key, int]:
        """Every delivered slot the outbox has not confirmed deleting yet."""
        return {k: s for k, s in self.delivered.items() if self.trimmed.get(k, -1) < s}

    def trims_requested(self, trims: Mapping[Key, int]) -> None:
        self.trim_sent.update(trims)

    def trims_applied(self, trims: Mapping[Key, int]) -> None:
        for key, slot in trims.items():
            if slot > self.trimmed.get(key, -1):
                self.trimmed[key] = slot
            if self.trim_sent.get(key, -1) <= slot:
                self.trim_sent.pop(key, None)

    def trims_lost(self) -> None:
        """The hub restarted: whatever it was asked for must be asked again."""
        self.trim_sent.clear()
        self.trimmed.clear()
