"""The live view of one hub: latest values, per-page views, and the events pushed to them.

Every page subscribes to what it shows (a window of the filtered tag table and the tags on
its trend); the feed sends it only changes of those rows, at most LIVE_PERIOD_S apart, into
a per-page queue where a newer value of a row replaces the queued one. A tag no page shows
costs nothing beyond keeping its group's latest sample (and the bounded recent history).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tandem.api.history import RecentHistory
from tandem.api.tagindex import GroupKey, NameFilter, TagCatalog, TagEntry
from tandem.api.view import (
    LiveEvent,
    LiveViewRequest,
    Status,
    TagPage,
    TagQuery,
    TagRow,
    TagSeries,
    TagValue,
)
from tandem.hub.model import Sample

log = logging.getLogger(__name__)

# Row updates per page: at most four a second, what a person can read.
LIVE_PERIOD_S = 0.25
# The status push period, and how often views filtered on live state (errors) are re-matched.
STATUS_PERIOD_S = 1.0
# Timeline events are distinct facts, not states: a page that does not read keeps this many.
TIMELINE_BACKLOG = 100
MAX_TREND_TAGS = 8

_NO_VALUE = object()


def tag_values(sample: Sample) -> list[TagValue]:
    """One sample as the latest value (or error) of each of its tags."""
    common: dict[str, Any] = {
        "device": sample.node,
        "group": sample.group,
        "timestamp_ms": sample.timestamp_ms,
        "slot": sample.slot,
    }
    return [TagValue(tag=t, value=v, **common) for t, v in sample.values.items()] + [
        TagValue(tag=t, error=code, **common) for t, code in sample.errors.items()
    ]


class PendingEvents:
    """One page's outgoing events: states coalesce (newest wins), timeline events queue.

    Memory is bounded by what the page shows, never by how slowly it reads: "status" and
    "page" keep only the newest, "rows" merges per row and per group, and the timeline keeps
    its last TIMELINE_BACKLOG events (older ones are counted as dropped).
    """

    def __init__(self) -> None:
        # Insertion-ordered; "rows" holds None: its event is built from _rows when popped.
        self._items: dict[str, LiveEvent | None] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._groups: dict[GroupKey, dict[str, Any]] = {}
        self._rows_seq = 0
        self._timeline = 0
        self._wake = asyncio.Event()
        self.dropped = 0

    def replace(self, event: LiveEvent) -> None:
        self._items.pop(event.type, None)  # re-queued at the end: it is the newest news
        self._items[event.type] = event
        self._wake.set()

    def add_rows(
        self, seq: int, rows: Iterable[dict[str, Any]], groups: Iterable[dict[str, Any]]
    ) -> None:
        if seq != self._rows_seq:  # rows of an older view are of no use to the page
            self._rows.clear()
            self._groups.clear()
            self._rows_seq = seq
        for row in rows:
            self._rows[row["key"]] = row
        for g in groups:
            self._groups[(g["device"], g["group"])] = g
        if self._rows or self._groups:
            self._items.setdefault("rows", None)
            self._wake.set()

    def append(self, event: LiveEvent) -> None:
        self._timeline += 1
        self._items[f"timeline:{self._timeline}"] = event
        timeline = [k for k in self._items if k.startswith("timeline:")]
        for stale in timeline[: max(0, len(timeline) - TIMELINE_BACKLOG)]:
            del self._items[stale]
            self.dropped += 1
        self._wake.set()

    def __len__(self) -> int:
        return len(self._items)

    def pop(self) -> LiveEvent | None:
        if not self._items:
            return None
        key = next(iter(self._items))
        event = self._items.pop(key)
        if key == "rows":
            event = LiveEvent(
                "rows",
                {
                    "seq": self._rows_seq,
                    "rows": list(self._rows.values()),
                    "groups": list(self._groups.values()),
                },
            )
            self._rows = {}
            self._groups = {}
        return event

    async def get(self) -> LiveEvent:
        while True:
            event = self.pop()
            if event is not None:
                return event
            self._wake.clear()
            await self._wake.wait()


@dataclass
class Subscriber:
    """One open page: what it shows and what it was last sent."""

    id: str
    pending: PendingEvents = field(default_factory=PendingEvents)
    view: LiveViewRequest | None = None
    window: list[str] = field(default_factory=list)  # keys of the rows in the page's window
    total: int = 0
    watched: dict[GroupKey, list[TagEntry]] = field(default_factory=dict)
    seen: dict[GroupKey, Sample] = field(default_factory=dict)
    sent: dict[str, tuple[Any, int | None]] = field(default_factory=dict)


def json_safe(value: Any) -> Any:
    """A tag value JSON can carry: a PLC's NaN or infinity is sent as its name, as JS spells it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _state(sample: Sample | None, tag: str) -> tuple[Any, int | None]:
    if sample is None:
        return (_NO_VALUE, None)
    error = sample.errors.get(tag)
    return (None if error is not None else json_safe(sample.values.get(tag)), error)


_RowHead = tuple[bytes, str, bool]  # '{"device":..,"tag":..,"value":', the tag, is an error


def _row_heads(sample: Sample) -> list[_RowHead]:
    """The rows of a group in GET /api/v1/tags order: by tag, a value before an error."""
    rows = sorted([(t, False) for t in sample.values] + [(t, True) for t in sample.errors])
    named = {"device": sample.node, "group": sample.group}
    return [(orjson.dumps({**named, "tag": t})[:-1] + b',"value":', t, e) for t, e in rows]


TAGS_JSON_MAX_AGE_S = 0.25
"""How stale GET /api/v1/tags may be: its body is built at most 4 times a second, however
many clients ask (at 10,000 tags one build costs tens of milliseconds of the hub's loop, the
loop the pollers need; 200 requests/s made the pollers skip slots before)."""


class LiveFeed:
    """Latest sample per group, recent history, and the live events of every open page."""

    def __init__(self, status: Callable[[], Status], catalog: TagCatalog | None = None) -> None:
        self._status = status
        self.catalog = catalog or TagCatalog([])
        self.history = RecentHistory(self.catalog)
        # The newest stored sample per (device, group). TagValues (pydantic) are built only
        # when read: per tag and per sample they cost more than polling, storing and
        # publishing together (~1 us x 400k/s).
        self._latest: dict[GroupKey, Sample] = {}
        self._subscribers: dict[str, Subscriber] = {}
        self._dropped_closed = 0  # by pages that have gone since
        self._tags_body: tuple[float, bytes] | None = None  # (monotonic time built, JSON)
        # Per group: (its tag names, the head of each row up to its value) for tags_json.
        self._layouts: dict[GroupKey, tuple[tuple[tuple[str, ...], ...], list[_RowHead]]] = {}

    @property
    def dropped(self) -> int:
        """Timeline events slow pages lost (states are replaced, never dropped)."""
        return self._dropped_closed + sum(s.pending.dropped for s in self._subscribers.values())

    # --- data in ------------------------------------------------------------------------------

    def note_values(self, sample: Sample) -> None:
        self._latest[(sample.node, sample.group)] = sample
        self.history.record(sample)

    def set_catalog(self, catalog: TagCatalog) -> None:
        """A new configuration: forget groups that are gone, re-match every open view."""
        self.catalog = catalog
        self.history = RecentHistory(catalog, previous=self.history)
        catalog.warm()
        self._tags_body = None
        self._layouts.clear()
        for stale in [k for k in self._latest if k not in catalog.by_group]:
            del self._latest[stale]
        for sub in self._subscribers.values():
            if sub.view is not None:
                sub.pending.replace(LiveEvent("page", self._bind(sub, sub.view)))

    # --- reads --------------------------------------------------------------------------------

    def latest(self, device: str, group: str) -> Sample | None:
        """The newest stored sample of one group (MQTT read requests answer from it)."""
        return self._latest.get((device, group))

    def tags(self) -> list[TagValue]:
        out = [tv for sample in self._latest.values() for tv in tag_values(sample)]
        out.sort(key=lambda tv: (tv.device, tv.group, tv.tag))
        return out

    def tags_json(self, now: float | None = None) -> bytes:
        """tags() as the JSON body of GET /api/v1/tags, rebuilt at most every
        TAGS_JSON_MAX_AGE_S, from plain dicts (pydantic per tag is ten times the cost)."""
        now = time.monotonic() if now is None else now
        cached = self._tags_body
        if cached is not None and now - cached[0] < TAGS_JSON_MAX_AGE_S:
            return cached[1]
        parts = [self._rows_json(key, self._latest[key]) for key in sorted(self._latest)]
        body = b"[" + b",".join(p for p in parts if p) + b"]"
        self._tags_body = (now, body)
        return body

    def _rows_json(self, key: GroupKey, sample: Sample) -> bytes:
        """One group's rows, sorted by tag, as orjson would write them but ~10x cheaper: the
        part of each row that names it is made once per group layout, not once per poll."""
        layout = self._layouts.get(key)
        signature = (tuple(sample.values), tuple(sample.errors))
        if layout is None or layout[0] != signature:
            layout = (signature, _row_heads(sample))
            self._layouts[key] = layout
        stamp = orjson.dumps({"timestamp_ms": sample.timestamp_ms, "slot": sample.slot})[1:]
        good, bad = b',"error":null,' + stamp, b"," + stamp
        values, errors, dumps = sample.values, sample.errors, orjson.dumps
        return b",".join(
            head + b'null,"error":' + dumps(errors[tag]) + bad
            if failed
            else head + dumps(json_safe(values[tag])) + good
            for head, tag, failed in layout[1]
        )

    def _matches(self, query: TagQuery) -> list[TagEntry]:
        named = self.catalog.filter(
            NameFilter(query.search.strip(), query.device, query.group, query.sort, query.desc)
        )
        if query.error == "any":
            return named
        want_error = query.error == "error"
        latest = self._latest
        out = []
        for entry in named:
            sample = latest.get(entry.group_key)
            has_error = sample is not None and entry.tag in sample.errors
            if has_error == want_error:
                out.append(entry)
        return out

    def _row(self, entry: TagEntry) -> TagRow:
        sample = self._latest.get(entry.group_key)
        return TagRow(
            key=entry.key,
            device=entry.device,
            group=entry.group,
            tag=entry.tag,
            kind=entry.kind,
            value=None if sample is None else json_safe(sample.values.get(entry.tag)),
            error=None if sample is None else sample.errors.get(entry.tag),
            timestamp_ms=None if sample is None else sample.timestamp_ms,
            slot=None if sample is None else sample.slot,
        )

    def _page(self, query: TagQuery, matches: list[TagEntry], seq: int) -> TagPage:
        window = matches[query.offset : query.offset + query.limit]
        return TagPage(
            seq=seq,
            total=len(matches),
            catalog_total=len(self.catalog.entries),
            offset=query.offset,
            rows=[self._row(e) for e in window],
            devices=self.catalog.devices,
            groups=self.catalog.groups,
            default_trend=self.catalog.default_trend,
        )

    def page(self, query: TagQuery) -> TagPage:
        """One window of the tag table, for a page that has no live view (yet)."""
        return self._page(query, self._matches(query), 0)

    def history_of(self, keys: Iterable[str], since_ms: int = 0) -> list[TagSeries]:
        """The recent buffer of each known key (unknown keys are left out)."""
        out = []
        for key in list(dict.fromkeys(keys))[:MAX_TREND_TAGS]:
            entry = self.catalog.by_key.get(key)
            if entry is None:
                continue
            times, values = self.history.series(entry.group_key, entry.tag, since_ms)
            out.append(
                TagSeries(
                    key=key,
                    resolution_ms=self.history.resolution_ms(entry.group_key),
                    t=times,
                    v=values,
                )
            )
        return out

    # --- per-page views -----------------------------------------------------------------------

    def set_view(self, subscription: str, request: LiveViewRequest) -> TagPage | None:
        """Point one open page at a new window/filter/trend; None if no such subscription."""
        sub = self._subscribers.get(subscription)
        if sub is None:
            return None
        return self._bind(sub, request)

    def _bind(self, sub: Subscriber, request: LiveViewRequest) -> TagPage:
        matches = self._matches(request)
        page = self._page(request, matches, request.seq)
        sub.view = request
        sub.total = page.total
        sub.window = [row.key for row in page.rows]
        trend = [self.catalog.by_key[k] for k in request.trend if k in self.catalog.by_key]
        watched: dict[GroupKey, dict[str, TagEntry]] = {}
        for entry in [*matches[request.offset : request.offset + request.limit], *trend]:
            watched.setdefault(entry.group_key, {})[entry.key] = entry
        sub.watched = {g: list(entries.values()) for g, entries in watched.items()}
        sub.seen = {}
        sub.sent = {
            e.key: _state(self._latest.get(g), e.tag)
            for g, entries in sub.watched.items()
            for e in entries
        }
        return page

    def _row_updates(self, sub: Subscriber) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Changed values of the rows one page watches, and the fresh polls of their groups."""
        rows: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        for group_key, entries in sub.watched.items():
            sample = self._latest.get(group_key)
            if sample is None or sub.seen.get(group_key) is sample:
                continue
            sub.seen[group_key] = sample
            groups.append(
                {
                    "device": sample.node,
                    "group": sample.group,
                    "timestamp_ms": sample.timestamp_ms,
                    "slot": sample.slot,
                }
            )
            for entry in entries:
                state = _state(sample, entry.tag)
                if sub.sent.get(entry.key) == state:
                    continue
                sub.sent[entry.key] = state
                rows.append(
                    {
                        "key": entry.key,
                        "value": state[0],
                        "error": state[1],
                        "timestamp_ms": sample.timestamp_ms,
                    }
                )
        return rows, groups

    def _rematch(self, sub: Subscriber) -> None:
        """Views filtered on errors: rows enter and leave the filter as devices fail."""
        view = sub.view
        if view is None or view.error == "any":
            return
        matches = self._matches(view)
        window = [e.key for e in matches[view.offset : view.offset + view.limit]]
        if window != sub.window or len(matches) != sub.total:
            sub.pending.replace(LiveEvent("page", self._bind(sub, view)))

    # --- events out ---------------------------------------------------------------------------

    def push(self, event: LiveEvent) -> None:
        """A status or timeline event for every open page."""
        for sub in self._subscribers.values():
            if event.type == "timeline":
                sub.pending.append(event)
            else:
                sub.pending.replace(event)

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        sub = Subscriber(id=secrets.token_urlsafe(16))
        self._subscribers[sub.id] = sub
        try:
            yield LiveEvent("hello", {"subscription": sub.id})
            yield LiveEvent("status", self._status())
            while True:
                yield await sub.pending.get()
        finally:
            self._subscribers.pop(sub.id, None)
            self._dropped_closed += sub.pending.dropped

    def tick(self, *, status: bool) -> None:
        """One live period: row updates for every page; status and re-matching when asked."""
        if not self._subscribers:
            return
        for sub in self._subscribers.values():
            if status:
                self._rematch(sub)
            rows, groups = self._row_updates(sub)
            if rows or groups:
                sub.pending.add_rows(sub.view.seq if sub.view else 0, rows, groups)
        if status:
            self.push(LiveEvent("status", self._status()))

    async def run(self) -> None:
        """Row updates every LIVE_PERIOD_S, status and re-matching every STATUS_PERIOD_S."""
        ticks_per_status = max(1, round(STATUS_PERIOD_S / LIVE_PERIOD_S))
        n = 0
        self.catalog.warm()
        while True:
            await asyncio.sleep(LIVE_PERIOD_S)
            n += 1
            try:
                self.tick(status=n % ticks_per_status == 0)
            except Exception:  # a bug here must not end the live view for every page
                log.exception("live view update failed")

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


__all__ = ["LIVE_PERIOD_S", "LiveFeed", "PendingEvents", "tag_values"]
