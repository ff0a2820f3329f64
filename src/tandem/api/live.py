"""The live view of one hub: latest tag values, and the events pushed to open dashboards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from tandem.api.view import LiveEvent, Status, TagValue
from tandem.hub.model import Sample

# The live status push period.
WATCH_PERIOD_S = 1.0
# At most ten "tags" events per second per client, whatever the poll rates.
TAGS_PERIOD_S = 0.1
# A slow browser loses its oldest events rather than holding memory or the hub back.
SUBSCRIBER_QUEUE_SIZE = 100

GroupKey = tuple[str, str]  # (device, group)

_MISSING = object()


def tag_values_of(sample: Sample, value_tags: list[str], error_tags: list[str]) -> list[TagValue]:
    """TagValues of the named tags of one sample (values first, then errors)."""
    values, errors = sample.values, sample.errors
    common: dict[str, Any] = {
        "device": sample.node,
        "group": sample.group,
        "timestamp_ms": sample.timestamp_ms,
        "slot": sample.slot,
    }
    return [TagValue(tag=t, value=values[t], **common) for t in value_tags] + [
        TagValue(tag=t, error=errors[t], **common) for t in error_tags
    ]


def tag_values(sample: Sample) -> list[TagValue]:
    """One sample as the latest value (or error) of each of its tags."""
    return tag_values_of(sample, list(sample.values), list(sample.errors))


class LiveFeed:
    """Latest sample per group, and the live events of every open dashboard.

    The hub hands every stored sample to note_values() and every status or timeline event to
    push(); run() turns changed tags into batched "tags" events and pushes the status once a
    second while anyone listens.
    """

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status
        # The newest stored sample per (device, group), and the one the last "tags" event was
        # diffed against. TagValues (pydantic) are built only when read: per tag and per sample
        # they cost more than polling, storing and publishing together (~1 us x 400k/s).
        self._latest: dict[GroupKey, Sample] = {}
        self._pushed: dict[GroupKey, Sample] = {}
        self._dirty: set[GroupKey] = set()
        self._subscribers: set[asyncio.Queue[LiveEvent]] = set()
        self.dropped = 0

    # --- data in ------------------------------------------------------------------------------

    def note_values(self, sample: Sample) -> None:
        key = (sample.node, sample.group)
        self._latest[key] = sample
        self._dirty.add(key)

    def forget_groups_except(self, known: Iterable[GroupKey]) -> None:
        """Drop the latest values of groups that no longer exist (after a reconfiguration)."""
        keep = set(known)
        for stale in [k for k in self._latest if k not in keep]:
            del self._latest[stale]
            self._pushed.pop(stale, None)
            self._dirty.discard(stale)

    # --- reads --------------------------------------------------------------------------------

    def tags(self) -> list[TagValue]:
        out = [tv for sample in self._latest.values() for tv in tag_values(sample)]
        out.sort(key=lambda tv: (tv.device, tv.group, tv.tag))
        return out

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield LiveEvent("status", self._status())
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # --- events out ---------------------------------------------------------------------------

    def push(self, event: LiveEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    def _changed_tags(self) -> list[TagValue]:
        """Tags whose value or error differs from what the previous "tags" event carried."""
        dirty, self._dirty = self._dirty, set()
        changed: list[TagValue] = []
        for key in dirty:
            sample = self._latest.get(key)
            if sample is None:
                continue
            before = self._pushed.get(key)
            self._pushed[key] = sample
            if before is None:
                changed += tag_values(sample)
                continue
            old_values, old_errors = before.values, before.errors
            changed += tag_values_of(
                sample,
                [
                    t
                    for t, v in sample.values.items()
                    if t in old_errors or old_values.get(t, _MISSING) != v
                ],
                [t for t, code in sample.errors.items() if old_errors.get(t) != code],
            )
        return changed

    async def push_tags(self) -> None:
        while True:
            await asyncio.sleep(TAGS_PERIOD_S)
            if not self._dirty:
                continue
            if not self._subscribers:
                # Nobody to tell: remember the baseline without building a single TagValue.
                self._pushed.update((k, self._latest[k]) for k in self._dirty if k in self._latest)
                self._dirty.clear()
                continue
            changed = self._changed_tags()
            if changed:
                self.push(LiveEvent("tags", changed))

    async def watch(self) -> None:
        while True:
            if self._subscribers:
                self.push(LiveEvent("status", self._status()))
            await asyncio.sleep(WATCH_PERIOD_S)


__all__ = ["LiveFeed", "SUBSCRIBER_QUEUE_SIZE", "tag_values", "tag_values_of"]
