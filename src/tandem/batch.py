"""Batching per event-loop step: everything added in one step is handled in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopStepBatch(Generic[T]):
    """Collects items and hands them to `handle` together at the end of the loop step.

    One SQLite transaction per step instead of one per sample or per PUBACK is what keeps the
    outbox cheap at hundreds of samples per second. `flush()` hands over what is pending now
    (at shutdown, before a reconfiguration, when a connection ends).
    """

    def __init__(self, handle: Callable[[list[T]], None]) -> None:
        self._handle = handle
        self._items: list[T] = []
        self._scheduled = False

    def add(self, item: T) -> None:
        self._items.append(item)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._items:
            return
        items, self._items = self._items, []
        self._handle(items)

    def __len__(self) -> int:
        return len(self._items)
