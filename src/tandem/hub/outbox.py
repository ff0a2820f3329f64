"""The durable outbox: samples committed to SQLite before publishing, deleted after PUBACK."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Literal

import orjson

from tandem.errors import TandemError
from tandem.hub.model import Sample

log = logging.getLogger(__name__)

Synchronous = Literal["NORMAL", "FULL"]
Overflow = Literal["drop_oldest", "drop_newest"]

# One overflow warning per this many seconds; the counter keeps the exact total.
_OVERFLOW_LOG_INTERVAL_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    -- AUTOINCREMENT: ids are never reused after deletes, so id order is append order for good.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    grp TEXT NOT NULL,
    slot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    source_node TEXT NOT NULL,
    value_count INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_grp_slot ON outbox (grp, slot);
-- Kept apart from the rows so that acking or trimming every row never resets a group's seq.
CREATE TABLE IF NOT EXISTS group_seq (
    grp TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
"""

_INSERT = (
    "INSERT INTO outbox (node, grp, slot, seq, source_node, value_count, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_SEQ = (
    "INSERT INTO group_seq (grp, last_seq) VALUES (?, ?)"
    " ON CONFLICT (grp) DO UPDATE SET last_seq = excluded.last_seq"
)


class OutboxError(TandemError):
    """The outbox database could not be opened or written."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored sample, ready to publish: payload bytes were encoded once, at append."""

    id: int
    node: str  # device name, the {node} of the topic template
    group: str
    slot: int
    seq: int
    source_node: str
    value_count: int  # tag values in the payload, for the values/s rate
    payload: bytes


def encode_payload(sample: Sample) -> bytes:
    """The wire form of a sample: compact JSON of Sample.payload(), UTF-8.

    orjson writes the same bytes as json.dumps(separators=(",", ":"), ensure_ascii=False)
    about ten times faster, which is most of a sample's cost at hundreds of thousands of
    values per second. (Non-finite floats never reach here: the codec turns them into errors.)
    """
    return orjson.dumps(sample.payload())


class Outbox:
    """A durable FIFO of samples with a per-group sequence that survives restarts.

    WAL with synchronous=NORMAL (the default) makes every committed append survive a crash or
    kill -9 of the process: the commit is in the WAL file in the OS page cache. Only a power loss
    or kernel crash can lose the last transactions; synchronous="FULL" closes that gap at the cost
    of an fsync per commit (milliseconds on SD cards and eMMC).

    Synchronous calls on purpose: each is one short transaction, sub-millisecond for typical
    samples, and the event loop is the only caller.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 1_000_000,
        synchronous: Synchronous = "NORMAL",
        overflow: Overflow = "drop_oldest",
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest, got {overflow!r}")
        self.path = Path(path)
        self.overflow = overflow
        self.max_rows = max_rows
        self.overflow_dropped = 0
        self._overflow_unlogged = 0
        self._overflow_logged_at = float("-inf")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit, so one append is one commit.
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            self._depth: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self._last_seq: dict[str, int] = dict(
                self._db.execute("SELECT grp, last_seq FROM group_seq").fetchall()
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        self._closed = False
        log.info(
            "outbox %s opened: %s rows, %s groups", self.path, self._depth, len(self._last_seq)
        )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, sample: Sample) -> Sample:
        """Store one sample under the next seq of its group; returns the sample with that seq."""
        return self.append_many((sample,))[0]

    def append_many(self, samples: Iterable[Sample]) -> list[Sample]:
        """Store samples in one transaction (one commit), in the order given."""
        stamped: list[Sample] = []
        rows: list[tuple[str, str, int, int, str, int, bytes]] = []
        next_seq = dict(self._last_seq)
        for sample in samples:
            seq = next_seq.get(sample.group, 0) + 1
            next_seq[sample.group] = seq
            s = replace(sample, seq=seq)
            stamped.append(s)
            rows.append(
                (s.node, s.group, s.slot, seq, s.source_node, len(s.values), encode_payload(s))
            )
        if not rows:
            return stamped
        changed = [(g, q) for g, q in next_seq.items() if self._last_seq.get(g) != q]
        excess = max(0, self._depth + len(rows) - self.max_rows)
        if self.overflow == "drop_newest" and excess:
            # The refused samples still used their seq: the gap tells consumers data was lost.
            # Rows already stored stay even if a reopen lowered max_rows below the depth.
            excess = min(excess, len(rows))
            rows = rows[: len(rows) - excess]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(_INSERT, rows)
            self._db.executemany(_UPSERT_SEQ, changed)
            deleted = self._drop_oldest(excess) if self.overflow == "drop_oldest" and excess else 0
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"outbox append failed: {exc}") from exc
        # Memory follows the database only once the commit has succeeded.
        self._last_seq = next_seq
        self._depth += len(rows) - deleted
        if excess:
            self._count_overflow(excess)
        return stamped

    def ack(self, ids: Iterable[int]) -> None:
        """Delete rows the broker acknowledged; ids already gone are ignored."""
        params = [(i,) for i in ids]
        if not params:
            return
        try:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany("DELETE FROM outbox WHERE id = ?", params)
            deleted = self._db.total_changes - before
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"outbox ack failed: {exc}") from exc
        self._depth -= deleted

    def trim_through(self, group: str, slot: int, node: str | None = None) -> int:
        """Delete a group's rows up to and including slot: another node already delivered them.

        `node` (the device) narrows it to one device's group, as group names repeat per device.
        """
        try:
            if node is None:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE grp = ? AND slot <= ?", (group, slot)
                )
            else:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE node = ? AND grp = ? AND slot <= ?",
                    (node, group, slot),
                )
            deleted = cur.rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox trim failed: {exc}") from exc
        self._depth -= deleted
        return deleted

    # -- reading ---------------------------------------------------------------------------

    def peek(self, limit: int, after_id: int = 0) -> list[OutboxRow]:
        """Up to limit rows with id > after_id, oldest first; nothing is removed."""
        cur = self._db.execute(
            "SELECT id, node, grp, slot, seq, source_node, value_count, payload FROM outbox"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [OutboxRow(*r) for r in cur.fetchall()]

    def depth(self) -> int:
        """Rows waiting for a PUBACK; a counter, so this is free to call on every status poll."""
        return self._depth

    def last_seq(self, group: str) -> int:
        """The seq given to the group's latest sample, 0 if it never had one."""
        return self._last_seq.get(group, 0)

    # -- internals -------------------------------------------------------------------------

    def _drop_oldest(self, n: int) -> int:
        return self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (n,)
        ).rowcount

    def _count_overflow(self, dropped: int) -> None:
        self.overflow_dropped += dropped
        self._overflow_unlogged += dropped
        now = time.monotonic()
        if now - self._overflow_logged_at >= _OVERFLOW_LOG_INTERVAL_S:
            log.warning(
                "outbox full (%s rows): %s dropped %s rows (%s in total)",
                self.max_rows,
                self.overflow,
                self._overflow_unlogged,
                self.overflow_dropped,
            )
            self._overflow_logged_at = now
            self._overflow_unlogged = 0

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


__all__ = ["Outbox", "OutboxError", "OutboxRow", "Overflow", "Synchronous", "encode_payload"]
