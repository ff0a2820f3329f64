"""Facts from the hub process to the warden: queued in order, merged per loop step.

Order matters (a barrier's result must follow every delivery the observer handled before it),
so this is one FIFO; consecutive facts of a mergeable kind (deliveries, acks, polls) become one
message, which keeps the channel to a few messages per loop step whatever the sample rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tandem.ha.types import Acked, Delivered, Fact, Polled


def _merge(last: Fact, new: Fact) -> Fact | None:
    """`last` and `new` as one fact, or None if they do not merge."""
    if isinstance(last, Delivered) and isinstance(new, Delivered):
        return Delivered(last.items + new.items)
    if isinstance(last, Acked) and isinstance(new, Acked):
        slots = dict(last.slots)
        for key, slot in new.slots.items():
            slots[key] = max(slot, slots.get(key, slot))
        return Acked(slots)
    if isinstance(last, Polled) and isinstance(new, Polled):
        merged = dict(last.slots)
        for key, (first, latest) in new.slots.items():
            old = merged.get(key)
            merged[key] = (
                (first, latest) if old is None else (min(old[0], first), max(old[1], latest))
            )
        return Polled(merged)
    return None


class FactQueue:
    """Collects facts and hands them to `send` at the end of the loop step, in order."""

    def __init__(self, send: Callable[[Fact], None]) -> None:
        self._send = send
        self._items: list[Fact] = []
        self._scheduled = False

    def add(self, fact: Fact) -> None:
        if self._items:
            merged = _merge(self._items[-1], fact)
            if merged is not None:
                self._items[-1] = merged
            else:
                self._items.append(fact)
        else:
            self._items.append(fact)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        items, self._items = self._items, []
        for fact in items:
            self._send(fact)
