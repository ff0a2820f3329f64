"""A node's recent tag history for trends: a few minutes per group, bounded in memory and CPU."""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from tandem.api.tagindex import GroupKey, TagCatalog
from tandem.hub.model import Sample

# How far back a trend can start when a page opens.
HISTORY_WINDOW_S = 120.0
# Values kept across all groups (8 bytes each): 8 MB whatever the tag count. With few tags
# every poll is kept; with many, groups are sampled more sparsely (10,000 tags: every 1.2 s).
HISTORY_BUDGET_VALUES = 1_000_000
NAN = math.nan


@dataclass(slots=True)
class _GroupRing:
    """One group's recorded polls: timestamps and one row of floats per recorded poll."""

    names: list[str]
    step_ms: int
    slack_ms: int  # polls arrive on the group's grid, a little early or late
    rows: deque[tuple[int, array[float]]]
    column: dict[str, int]
    next_ms: int = 0


def _row_of(values: dict[str, Any], names: list[str]) -> array[float]:
    """The group's numeric tags as floats, NaN where the poll has no value (an error)."""
    try:
        return array("d", map(values.get, names, repeat(NAN)))
    except TypeError:  # a value that is not a number: record it as a gap
        return array(
            "d", (v if isinstance(v, int | float) else NAN for v in map(values.get, names))
        )


class RecentHistory:
    """The last HISTORY_WINDOW_S of every numeric tag, at a resolution the budget allows.

    Recording costs a dict lookup per sample, and copying one row of floats per recorded poll:
    at most HISTORY_BUDGET_VALUES / HISTORY_WINDOW_S values a second (8,300) in total, however
    many tags the node has. No TagValue and no per-tag Python object is built until asked.
    """

    def __init__(
        self,
        catalog: TagCatalog,
        *,
        window_s: float = HISTORY_WINDOW_S,
        budget_values: int = HISTORY_BUDGET_VALUES,
        previous: RecentHistory | None = None,
    ) -> None:
        """`previous`: the history before a reconfiguration; groups whose tags and resolution
        are unchanged keep what they recorded."""
        self.window_s = window_s
        self._rings: dict[GroupKey, _GroupRing] = {}
        numeric = {key: catalog.numeric_tags(key) for key in catalog.by_group}
        total = sum(len(names) for names in numeric.values())
        for key, names in numeric.items():
            if not names:
                continue
            interval = catalog.intervals.get(key, 1.0)
            points = max(2, min(int(window_s / interval), budget_values // max(total, 1)))
            step_ms = max(int(interval * 1000), int(window_s * 1000 / points))
            old = previous._rings.get(key) if previous is not None else None
            if old is not None and (old.names, old.step_ms, old.rows.maxlen) == (
                names,
                step_ms,
                points,
            ):
                self._rings[key] = old
                continue
            self._rings[key] = _GroupRing(
                names=names,
                step_ms=step_ms,
                slack_ms=int(interval * 500),
                rows=deque(maxlen=points),
                column={name: i for i, name in enumerate(names)},
            )

    def record(self, sample: Sample) -> None:
        ring = self._rings.get((sample.node, sample.group))
        if ring is None or sample.timestamp_ms < ring.next_ms:
            return
        ring.next_ms = sample.timestamp_ms + ring.step_ms - ring.slack_ms
        ring.rows.append((sample.timestamp_ms, _row_of(sample.values, ring.names)))

    def series(
        self, group: GroupKey, tag: str, since_ms: int = 0
    ) -> tuple[list[int], list[float | None]]:
        """(timestamps, values) of one tag, oldest first; None where the poll had an error."""
        ring = self._rings.get(group)
        if ring is None or tag not in ring.column:
            return [], []
        col = ring.column[tag]
        times: list[int] = []
        values: list[float | None] = []
        for ts, row in ring.rows:
            if ts < since_ms:
                continue
            v = row[col]
            times.append(ts)
            values.append(None if math.isnan(v) else v)
        return times, values

    def resolution_ms(self, group: GroupKey) -> int | None:
        ring = self._rings.get(group)
        return None if ring is None else ring.step_ms

    def groups(self) -> Iterable[GroupKey]:
        return self._rings.keys()

    def values_held(self) -> int:
        return sum(len(r.rows) * len(r.names) for r in self._rings.values())
