"""Facts from the hub process to the warden: queued in order, merged per loop step.

Order matters (a barrier's result must follow every delivery the observer handled before it),
so this is one FIFO; consecutive facts of a mergeable kind (deliveries, acks, polls) become one
message. Data facts wait up to DATA_DELAY_S for more to merge with: every message wakes the
warden (a real-time process) and costs both processes a context switch, and at 10,000 tags a
flush per loop step was ~200 messages/s. Any other fact flushes the queue at the end of the
loop step, so control (barriers, handovers, health) is never held back.
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


DATA_DELAY_S = 0.02
DATA_FACTS = (Delivered, Acked, Polled)


class FactQueue:
    """Collects facts and hands them to `send` in order: data facts within DATA_DELAY_S,
    anything else at the end of the loop step (with whatever data is queued before it)."""

    def __init__(self, send: Callable[[Fact], None], data_delay: float = DATA_DELAY_S) -> None:
        self._send = send
        self._data_delay = data_delay
        self._items: list[Fact] = []
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None

    def add(self, fact: Fact) -> None:
        merged = _merge(self._items[-1], fact) if self._items else None
        if merged is not None:
            self._items[-1] = merged
        else:
            self._items.append(fact)
        loop = asyncio.get_running_loop()
        if not isinstance(fact, DATA_FACTS):
            if self._soon is None:
                self._soon = loop.call_soon(self.flush)
        elif self._soon is None and self._later is None:
            self._later = loop.call_later(self._data_delay, self.flush)

    def flush(self) -> None:
        for handle in (self._soon, self._later):
            if handle is not None:
                handle.cancel()
        self._soon = self._later = None
        items, self._items = self._items, []
        for fact in items:
            self._send(fact)
