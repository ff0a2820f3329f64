"""The live view: catalogue order and filters, per-page views, coalescing queues, history."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.api.history import RecentHistory
from tandem.api.live import (
    TAGS_JSON_MAX_AGE_S,
    TIMELINE_BACKLOG,
    LiveFeed,
    PendingEvents,
    json_safe,
)
from tandem.api.tagindex import NameFilter, SortColumn, TagCatalog, TagEntry, TagKind, natural_key
from tandem.api.view import LiveEvent, LiveViewRequest, Status, TagQuery
from tandem.hub.model import Sample

N = TagKind.NUMBER


def catalog(n: int = 12) -> TagCatalog:
    """Two devices, one group each, n tags r0..r(n-1), plus a bool and a text tag on plc1."""
    entries = [TagEntry(d, "fast", f"r{i}") for d in ("plc2", "plc1") for i in range(n)]
    entries += [
        TagEntry("plc1", "fast", "alarm", TagKind.BOOL),
        TagEntry("plc1", "fast", "name", TagKind.TEXT),
    ]
    return TagCatalog(entries, {("plc1", "fast"): 0.1, ("plc2", "fast"): 0.1})


def sample(
    device: str, slot: int, values: dict[str, Any], errors: dict[str, int] | None = None
) -> Sample:
    return Sample(
        node=device,
        group="fast",
        slot=slot,
        timestamp_ms=slot * 100,
        values=values,
        errors=errors or {},
        seq=slot,
    )


def feed(n: int = 12) -> LiveFeed:
    return LiveFeed(lambda: Status(node="edge-a", role="SINGLE"), catalog(n))


async def open_page(live: LiveFeed) -> tuple[AsyncIterator[LiveEvent], str]:
    events = live.subscribe()
    hello = await anext(events)
    assert (await anext(events)).type == "status"
    return events, hello.data["subscription"]


def drain(live: LiveFeed) -> list[LiveEvent]:
    (sub,) = live._subscribers.values()
    out = []
    while (event := sub.pending.pop()) is not None:
        out.append(event)
    return out


# ---- natural order and filters ----


def test_natural_key_numbers_by_value_case_ignored() -> None:
    names = ["r10", "r2", "R3", "r1", "r100", "a", "r02x", "r2a"]
    assert sorted(names, key=natural_key) == ["a", "r1", "r2", "r2a", "r02x", "R3", "r10", "r100"]


def test_catalog_default_order_device_then_natural_tag() -> None:
    keys = [e.key for e in catalog(12).filter(NameFilter())]
    assert keys[:4] == ["plc1/fast/alarm", "plc1/fast/name", "plc1/fast/r0", "plc1/fast/r1"]
    assert keys.index("plc1/fast/r2") < keys.index("plc1/fast/r10")
    assert keys[-1] == "plc2/fast/r11"


def test_catalog_sort_by_tag_descending_interleaves_devices() -> None:
    keys = [e.key for e in catalog(3).filter(NameFilter(sort=SortColumn.TAG, desc=True))]
    assert keys[:4] == ["plc2/fast/r2", "plc1/fast/r2", "plc2/fast/r1", "plc1/fast/r1"]


def test_catalog_filter_search_words_device_and_group_all_apply() -> None:
    cat = catalog(120)
    found = cat.filter(NameFilter(search="R11 plc2", device=None))
    assert [e.key for e in found] == [
        f"plc2/fast/r{i}" for i in (11, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119)
    ]
    assert cat.filter(NameFilter(search="r11", device="plc1", group="slow")) == []
    assert len(cat.filter(NameFilter(device="plc1"))) == 122


def test_catalog_default_trend_first_numeric_not_bool() -> None:
    assert catalog().default_trend == "plc1/fast/r0"  # alarm (bool) and name (text) come first
    assert TagCatalog([TagEntry("d", "g", "b", TagKind.BOOL)]).default_trend is None


# ---- pages and per-page views ----


async def test_feed_page_window_values_and_total() -> None:
    live = feed()
    live.note_values(sample("plc1", 5, {"r0": 1, "r1": 2.5, "alarm": True}, {"name": 1004}))

    page = live.page(TagQuery(device="plc1", offset=1, limit=3))

    assert (page.total, page.catalog_total, page.offset) == (14, 26, 1)
    assert [(r.tag, r.value, r.error, r.slot) for r in page.rows] == [
        ("name", None, 1004, 5),
        ("r0", 1, None, 5),
        ("r1", 2.5, None, 5),
    ]
    assert page.devices == ["plc1", "plc2"] and page.default_trend == "plc1/fast/r0"
    assert live.page(TagQuery(device="plc2")).rows[0].timestamp_ms is None  # never polled


async def test_feed_page_error_filter_follows_latest_sample() -> None:
    live = feed(3)
    live.note_values(sample("plc1", 1, {"r0": 1, "r1": 1, "r2": 1, "alarm": 0, "name": "x"}))
    live.note_values(sample("plc2", 1, {}, {"r0": 1001, "r1": 1001, "r2": 1001}))

    errors = live.page(TagQuery(error="error"))
    ok = live.page(TagQuery(error="ok"))

    assert [r.key for r in errors.rows] == ["plc2/fast/r0", "plc2/fast/r1", "plc2/fast/r2"]
    assert ok.total == 5 and all(r.device == "plc1" for r in ok.rows)


async def test_feed_view_sends_only_changed_watched_rows_once_per_tick() -> None:
    live = feed()
    live.note_values(sample("plc1", 1, {"r0": 1, "r1": 1}))
    events, sid = await open_page(live)
    page = live.set_view(sid, LiveViewRequest(device="plc1", offset=2, limit=2, seq=7))
    assert page is not None and [r.tag for r in page.rows] == ["r0", "r1"]

    live.note_values(sample("plc1", 2, {"r0": 2, "r1": 1}))
    live.note_values(sample("plc1", 3, {"r0": 3, "r1": 1}))  # between ticks: the newest wins
    live.note_values(sample("plc2", 3, {"r0": 99}))  # a group nobody watches
    live.tick(status=False)
    (rows,) = drain(live)
    live.tick(status=False)  # nothing new since
    later = drain(live)
    await events.aclose()

    assert rows.type == "rows" and rows.data["seq"] == 7
    assert rows.data["rows"] == [
        {"key": "plc1/fast/r0", "value": 3, "error": None, "timestamp_ms": 300}
    ]
    assert rows.data["groups"] == [
        {"device": "plc1", "group": "fast", "timestamp_ms": 300, "slot": 3}
    ]
    assert later == []


async def test_feed_view_trend_tags_watched_outside_the_window() -> None:
    live = feed()
    events, sid = await open_page(live)
    live.set_view(
        sid, LiveViewRequest(device="plc1", limit=1, trend=["plc2/fast/r5", "no/such/tag"])
    )
    live.note_values(sample("plc2", 1, {"r5": 4.5}))
    live.tick(status=False)
    (rows,) = drain(live)
    await events.aclose()
    assert [r["key"] for r in rows.data["rows"]] == ["plc2/fast/r5"]


async def test_feed_view_error_filter_rematched_when_device_fails() -> None:
    live = feed(2)
    live.note_values(sample("plc2", 1, {"r0": 1, "r1": 1}))
    events, sid = await open_page(live)
    first = live.set_view(sid, LiveViewRequest(error="error", seq=3))
    assert first is not None and first.total == 0

    live.note_values(sample("plc2", 2, {}, {"r0": 1001, "r1": 1001}))
    live.tick(status=True)
    got = {e.type: e for e in drain(live)}
    await events.aclose()

    page = got["page"].data
    assert (page.seq, page.total) == (3, 2)
    assert [(r.key, r.error) for r in page.rows] == [("plc2/fast/r0", 1001), ("plc2/fast/r1", 1001)]
    assert "status" in got


async def test_feed_set_view_unknown_subscription_returns_none() -> None:
    assert feed().set_view("nope", LiveViewRequest()) is None


async def test_feed_closed_page_stops_costing_anything() -> None:
    live = feed()
    events, sid = await open_page(live)
    live.set_view(sid, LiveViewRequest())
    await events.aclose()
    assert live.subscribers == 0
    assert live.set_view(sid, LiveViewRequest()) is None


async def test_feed_set_catalog_forgets_removed_groups_and_repages() -> None:
    live = feed(2)
    live.note_values(sample("plc2", 1, {"r0": 1}))
    events, sid = await open_page(live)
    live.set_view(sid, LiveViewRequest())
    live.set_catalog(TagCatalog([TagEntry("plc1", "fast", "r0")], {("plc1", "fast"): 0.1}))
    (page,) = drain(live)
    await events.aclose()
    assert page.type == "page" and page.data.total == 1
    assert live.tags() == []


# ---- the per-page queue ----


def test_pending_events_states_coalesce_timeline_queues() -> None:
    pending = PendingEvents()
    pending.replace(LiveEvent("status", {"n": 1}))
    pending.add_rows(1, [{"key": "a", "value": 1}, {"key": "b", "value": 1}], [])
    pending.append(LiveEvent("timeline", {"m": "first"}))
    pending.replace(LiveEvent("status", {"n": 2}))
    pending.add_rows(1, [{"key": "a", "value": 2}], [{"device": "d", "group": "g", "slot": 9}])

    out = []
    while (event := pending.pop()) is not None:
        out.append(event)

    assert [e.type for e in out] == ["rows", "timeline", "status"]
    assert out[0].data["rows"] == [{"key": "a", "value": 2}, {"key": "b", "value": 1}]
    assert out[0].data["groups"] == [{"device": "d", "group": "g", "slot": 9}]
    assert out[2].data == {"n": 2}
    assert pending.dropped == 0


def test_pending_events_rows_of_an_older_view_discarded() -> None:
    pending = PendingEvents()
    pending.add_rows(1, [{"key": "a", "value": 1}], [])
    pending.add_rows(2, [{"key": "b", "value": 1}], [])
    event = pending.pop()
    assert event is not None and event.data["seq"] == 2
    assert event.data["rows"] == [{"key": "b", "value": 1}]


def test_pending_events_timeline_backlog_bounded_oldest_dropped() -> None:
    pending = PendingEvents()
    for i in range(TIMELINE_BACKLOG + 3):
        pending.append(LiveEvent("timeline", i))
    assert len(pending) == TIMELINE_BACKLOG and pending.dropped == 3
    first = pending.pop()
    assert first is not None and first.data == 3


async def test_pending_events_get_waits_for_news() -> None:
    pending = PendingEvents()
    waiter = asyncio.create_task(pending.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    pending.replace(LiveEvent("status", "x"))
    assert (await asyncio.wait_for(waiter, 1)).data == "x"


# ---- recent history ----


def test_history_few_tags_keeps_every_poll_errors_as_gaps() -> None:
    history = RecentHistory(catalog(2), window_s=10.0)
    for slot in range(1, 6):
        errors = {"r1": 1002} if slot == 3 else {}
        values = {"r0": slot, "alarm": slot % 2 == 0} | ({} if errors else {"r1": slot / 2})
        history.record(sample("plc1", slot, values, errors))

    times, r1 = history.series(("plc1", "fast"), "r1")
    _, alarm = history.series(("plc1", "fast"), "alarm")

    assert times == [100, 200, 300, 400, 500]
    assert r1 == [0.5, 1.0, None, 2.0, 2.5]
    assert alarm == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert history.series(("plc1", "fast"), "name") == ([], [])  # text is not charted
    assert history.series(("plc1", "fast"), "r0", since_ms=400)[1] == [4.0, 5.0]


def test_history_many_tags_decimated_within_budget() -> None:
    cat = catalog(500)  # 1,001 numeric tags
    history = RecentHistory(cat, window_s=60.0, budget_values=20_000)
    values = {f"r{i}": i for i in range(500)}
    for slot in range(1, 1201):  # two minutes of 100 ms polls
        history.record(sample("plc2", slot, values))

    times, r7 = history.series(("plc2", "fast"), "r7")

    assert history.values_held() <= 20_000
    assert len(times) == 19  # 20,000 // 1,001 points per tag over the window
    step = history.resolution_ms(("plc2", "fast"))
    assert step == 3157 and all(b - a == 3200 for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == 118_500  # recorded at 100 + k * 3,200 ms
    assert set(r7) == {7.0}


def test_history_non_numeric_value_recorded_as_gap() -> None:
    history = RecentHistory(catalog(1))
    history.record(sample("plc1", 1, {"r0": "oops", "alarm": True}))
    _, r0 = history.series(("plc1", "fast"), "r0")
    assert r0 == [None]


async def test_feed_history_of_known_keys_only() -> None:
    live = feed(2)
    live.note_values(sample("plc1", 1, {"r0": 1.5}))
    series = live.history_of(["plc1/fast/r0", "nope/x/y", "plc1/fast/r0"])
    assert [(s.key, s.t, s.v) for s in series] == [("plc1/fast/r0", [100], [1.5])]
    assert series[0].resolution_ms == 100


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_history_float_specials_kept_as_numbers_or_gaps(value: float) -> None:
    history = RecentHistory(catalog(1))
    history.record(sample("plc1", 1, {"r0": value}))
    _, r0 = history.series(("plc1", "fast"), "r0")
    assert r0 == ([None] if math.isnan(value) else [value])


@pytest.mark.parametrize(("value", "shown"), [(math.nan, "NaN"), (-math.inf, "-Infinity")])
async def test_feed_non_finite_float_sent_as_text_json_can_carry(value: float, shown: str) -> None:
    live = feed(1)
    events, sid = await open_page(live)
    live.set_view(sid, LiveViewRequest(device="plc1"))
    live.note_values(sample("plc1", 1, {"r0": value}))
    live.tick(status=False)
    (rows,) = drain(live)
    await events.aclose()
    assert [r["value"] for r in rows.data["rows"] if r["key"] == "plc1/fast/r0"] == [shown]
    assert live.page(TagQuery(search="plc1 r0")).rows[0].value == shown


def test_history_reconfiguration_keeps_unchanged_groups() -> None:
    before = RecentHistory(catalog(2))
    before.record(sample("plc1", 1, {"r0": 1.0}))
    before.record(sample("plc2", 1, {"r0": 2.0}))
    # plc2 gains a tag; plc1 is as it was.
    changed = TagCatalog(
        [*catalog(2).entries, TagEntry("plc2", "fast", "extra")],
        {("plc1", "fast"): 0.1, ("plc2", "fast"): 0.1},
    )
    after = RecentHistory(changed, previous=before)
    assert after.series(("plc1", "fast"), "r0")[1] == [1.0]
    assert after.series(("plc2", "fast"), "r0") == ([], [])


def test_feed_tags_json_same_rows_as_tags_built_at_most_every_max_age() -> None:
    live = feed(3)
    live.note_values(sample("plc2", 1, {"r0": 1, "r1": 2.5}, {"r2": 2}))
    live.note_values(sample("plc1", 1, {"r0": True, "name": "x"}))
    first = live.tags_json(now=100.0)
    assert json.loads(first) == [t.model_dump() for t in live.tags()]
    # A newer poll within the max age: the same body, built once for every client.
    live.note_values(sample("plc2", 2, {"r0": 9}))
    assert live.tags_json(now=100.0 + TAGS_JSON_MAX_AGE_S / 2) is first
    later = json.loads(live.tags_json(now=100.0 + TAGS_JSON_MAX_AGE_S))
    assert {"device": "plc2", "group": "fast", "tag": "r0", "value": 9, "error": None,
            "timestamp_ms": 200, "slot": 2} in later  # fmt: skip
    # A new configuration is never answered from the old body.
    live.set_catalog(catalog(1))
    live.note_values(sample("plc1", 3, {"r0": 5}))
    rows = json.loads(live.tags_json(now=100.0 + TAGS_JSON_MAX_AGE_S))
    assert [r["slot"] for r in rows] == [3, 2]


values_st = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.one_of(st.integers(-(2**40), 2**40), st.floats(), st.booleans(), st.text(max_size=8)),
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(
    groups=st.dictionaries(
        st.sampled_from(["plc1", "plc2", "plc10", 'q"x', "ü"]),
        st.tuples(values_st, st.dictionaries(st.text(min_size=1, max_size=6), st.integers(1, 99))),
        max_size=4,
    ),
    slot=st.integers(0, 2**40),
)
def test_feed_tags_json_any_values_and_errors_read_back_as_tags(
    groups: dict[str, tuple[dict[str, Any], dict[str, int]]], slot: int
) -> None:
    live = feed(1)
    for round_ in range(2):  # the second round reuses each group's row layout
        for device, (values, errors) in groups.items():
            live.note_values(sample(device, slot + round_, values, errors))
        body = live.tags_json(now=1000.0 * (round_ + 1))
        expected = [{**t.model_dump(), "value": json_safe(t.value)} for t in live.tags()]
        assert json.loads(body) == expected
