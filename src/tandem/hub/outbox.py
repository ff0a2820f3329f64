"""The durable outbox: samples committed to SQLite before publishing, deleted after PUBACK."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Literal

from tandem.hub.model import Sample
from tandem.hub.outbox_file import OutboxError, Recovered, is_storage_fault, open_or_recover
from tandem.hub.wire import data_tail, encode_body, encode_payload

log = logging.getLogger(__name__)

Synchronous = Literal["NORMAL", "FULL"]
Overflow = Literal["drop_oldest", "drop_newest"]
StreamKey = tuple[str, str]  # (device, group)

# One overflow warning per this many seconds; the counter keeps the exact total.
_OVERFLOW_LOG_INTERVAL_S = 10.0
# While writes fail, a reminder at most this often (the first failure and the recovery are
# always logged).
_FAULT_LOG_INTERVAL_S = 30.0
# Retry delays after a failed write: short enough that freed space is used within a second,
# long enough that a full disk does not cost a failing transaction on every loop step.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0
# Rows read per query while peek() skips rows whose delete is still waiting to be committed.
_PEEK_SCAN = 256

_INSERT = (
    "INSERT INTO outbox (node, grp, slot, seq, source_node, value_count, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_SEQ = (
    "INSERT INTO stream_seq (node, grp, last_seq) VALUES (?, ?, ?)"
    " ON CONFLICT (node, grp) DO UPDATE SET last_seq = excluded.last_seq"
)
_SELECT = "SELECT id, node, grp, slot, seq, source_node, value_count, body FROM outbox"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored sample: its body was encoded once, at append; the tail is added at send."""

    id: int
    node: str  # device name, the {node} of the topic template
    group: str
    slot: int
    seq: int
    source_node: str
    value_count: int  # tag values in the payload, for the values/s rate
    body: bytes

    def payload(self, term: int, sig: str | None = None) -> bytes:
        """The message as sent, under the sender's fencing term (and signature, if any)."""
        return self.body + data_tail(self.slot, self.seq, term, self.source_node, sig)


@dataclass(slots=True)
class WriteFaults:
    """Whether writes succeed, and when to try again after they failed; no I/O, time passed in."""

    errors: int = 0  # failed write transactions since start
    last_error: str | None = None
    failing_since: float | None = None  # monotonic
    failing_since_wall: float | None = None
    _delay: float = RETRY_MIN_S
    _retry_at: float = float("-inf")

    @property
    def writable(self) -> bool:
        return self.failing_since is None

    def may_try(self, now: float) -> bool:
        return now >= self._retry_at

    def retry_in(self, now: float) -> float:
        return max(0.0, self._retry_at - now)

    def failed(self, error: str, now: float, wall: float) -> bool:
        """Record a failure; True if writes were fine until now."""
        first = self.failing_since is None
        self.errors += 1
        self.last_error = error
        if first:
            self.failing_since, self.failing_since_wall = now, wall
            self._delay = RETRY_MIN_S
        else:
            self._delay = min(self._delay * 2, RETRY_MAX_S)
        self._retry_at = now + self._delay
        return first

    def retry_now(self) -> None:
        """Allow the next attempt at once (a last one before closing)."""
        self._retry_at = float("-inf")

    def succeeded(self) -> bool:
        """Record a success; True if writes were failing until now."""
        recovered = self.failing_since is not None
        self.failing_since = self.failing_since_wall = None
        self._retry_at = float("-inf")
        return recovered


class Outbox:
    """A durable FIFO of samples with a per-(device, group) seq that survives restarts.

    WAL with synchronous=NORMAL (the default) makes every committed append survive a crash or
    kill -9 of the process: the commit is in the WAL file in the OS page cache. Only a power loss
    or kernel crash can lose the last transactions; synchronous="FULL" closes that gap at the cost
    of an fsync per commit (milliseconds on SD cards and eMMC).

    Storage faults (disk full, read-only or vanished data dir) never raise out of append, ack,
    trim or peek: samples that could not be committed wait in a bounded in-memory retry queue
    (oldest dropped and counted past `retry_limit`), acks and trims wait in memory, and all of
    them go in with the next write that succeeds. What is committed stays committed.

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
        retry_limit: int = 10_000,
        on_fault: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_fault` is called after every failed write: the owner arms a retry() for later,
        so held samples, acks and trims go in even when nothing new arrives."""
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if retry_limit < 1:
            raise ValueError(f"retry_limit must be >= 1, got {retry_limit}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest, got {overflow!r}")
        self.path = Path(path)
        self.overflow = overflow
        self.max_rows = max_rows
        self.retry_limit = retry_limit
        self.synchronous: Synchronous = synchronous
        self.overflow_dropped = 0
        self.retry_dropped = 0  # samples the retry queue had to give up
        self.faults = WriteFaults()
        self.recovered: Recovered | None = None
        self._clock = clock
        self._on_fault: Callable[[], None] | None = None  # armed once construction is done
        self._overflow_unlogged = 0
        self._overflow_logged_at = float("-inf")
        self._fault_logged_at = float("-inf")
        self._queue: deque[Sample] = deque()  # not committed yet, oldest first
        self._unacked: set[int] = set()  # acked by the broker, delete not committed yet
        self._untrimmed: dict[tuple[str | None, str], int] = {}  # (device|None, group) -> slot
        self._depth = 0
        self._last_seq: dict[StreamKey, int] = {}
        self._legacy_seq: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self.last_trimmed = 0  # rows the latest committed transaction trimmed
        self._open(at_start=True)
        self._on_fault = on_fault

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self, *, at_start: bool = False) -> bool:
        """Open (or create) the file; True once open. A corrupt file is set aside first.

        A file that cannot be opened for a storage reason (read-only or missing data dir, no
        space) is a write fault: the node runs on, holding samples in memory and retrying. At
        start anything else (a file of a newer Tandem, ...) is an error: retrying cannot fix it.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db, recovered = open_or_recover(self.path, self.synchronous)
            self._adopt(db)
        except (OutboxError, sqlite3.Error, OSError) as exc:
            if at_start and not is_storage_fault(exc):
                if isinstance(exc, OutboxError):
                    raise
                raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
            self._write_failed(f"cannot open {self.path}: {exc}")
            return False
        if recovered is not None:
            self.recovered = recovered
        return True

    def _adopt(self, db: sqlite3.Connection) -> None:
        try:
            depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            seqs = db.execute("SELECT node, grp, last_seq FROM stream_seq").fetchall()
            legacy = db.execute("SELECT grp, last_seq FROM legacy_group_seq").fetchall()
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        self._depth = depth
        self._last_seq = {(node, grp): seq for node, grp, seq in seqs}
        self._legacy_seq = dict(legacy)
        log.info("outbox %s opened: %s rows, %s streams", self.path, depth, len(self._last_seq))

    def close(self) -> None:
        """Close the file, after one last try (whatever the retry delay) at what still waits."""
        if not self._closed:
            if self.retry_pending:
                self.faults.retry_now()
                self.append_many(())
            self._closed = True
            if self._queue or self._unacked or self._untrimmed:
                log.error(
                    "outbox %s closed while writes fail (%s): %s sample(s) never committed,"
                    " %s ack(s) not recorded (those rows are sent again)",
                    self.path,
                    self.faults.last_error,
                    len(self._queue),
                    len(self._unacked),
                )
            if self._db is not None:
                self._db.close()
                self._db = None

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
        """Store one sample under the next seq of its stream; returns it with that seq.

        Raises OutboxError when it could not be committed now; it then waits in the retry
        queue like any sample append_many could not write.
        """
        stored = self.append_many((sample,))
        if not stored:
            raise OutboxError(f"outbox append failed: {self.faults.last_error}")
        return stored[-1]

    def append_many(self, samples: Iterable[Sample]) -> list[Sample]:
        """Commit samples in one transaction, after any still waiting from failed writes.

        Returns the samples committed now, in order, each stamped with its seq: the queued
        ones first, then the given ones. On a failed write nothing is returned and everything
        waits in the retry queue for the next call (or retry()) after `retry_in()`.
        """
        fresh = list(samples)
        if not fresh and not self.retry_pending:
            return []
        # Checked inline first: this runs for every loop step's samples and every ack batch.
        healthy = self._db is not None and self.faults.failing_since is None
        if not healthy and not self._ready_to_write():
            self._hold(fresh)
            return []
        batch = [*self._queue, *fresh] if self._queue else fresh
        if not batch:  # only deletes (acks, trims) to write: the common ack path, kept short
            deleted = self._commit([], [], 0)
            if deleted is not None:
                self._depth -= deleted.total
                self.last_trimmed = deleted.trimmed
            return []
        stamped, next_seq = self._stamp(batch)
        rows = [
            (s.node, s.group, s.slot, s.seq, s.source_node, len(s.values), encode_body(s))
            for s in stamped
        ]
        changed = [(n, g, q) for (n, g), q in next_seq.items() if self._last_seq.get((n, g)) != q]
        excess = max(0, self._depth - len(self._unacked) + len(rows) - self.max_rows)
        if self.overflow == "drop_newest" and excess:
            # The refused samples still used their seq: the gap tells consumers data was lost.
            # Rows already stored stay even if a reopen lowered max_rows below the depth.
            excess = min(excess, len(rows))
            rows = rows[: len(rows) - excess]
        deleted = self._commit(rows, changed, excess)
        if deleted is None:
            self._hold(fresh)
            return []
        self._queue.clear()
        # Memory follows the database only once the commit has succeeded.
        self._last_seq = next_seq
        self._depth += len(rows) - deleted.total
        self.last_trimmed = deleted.trimmed
        if excess:
            self._count_overflow(excess)
        return stamped

    def retry(self) -> None:
        """Write what failed before (samples, acks, trims) if the retry delay has passed."""
        self.append_many(())

    def ack(self, ids: Iterable[int]) -> None:
        """Delete rows the broker acknowledged; ids already gone are ignored."""
        before = len(self._unacked)
        self._unacked.update(ids)
        if len(self._unacked) != before:
            self.append_many(())

    def trim_through(self, group: str, slot: int, node: str | None = None) -> int:
        """Delete a group's rows up to and including slot: another node already delivered them.

        `node` (the device) narrows it to one device's group, as group names repeat per device.
        Returns the rows deleted now (0 if the delete has to wait for the storage to recover).
        """
        key = (node, group)
        if slot <= self._untrimmed.get(key, slot - 1):
            return 0
        self._untrimmed[key] = slot
        self.last_trimmed = 0
        self.append_many(())
        return self.last_trimmed

    # -- reading ---------------------------------------------------------------------------

    def peek(self, limit: int, after_id: int = 0) -> list[OutboxRow]:
        """Up to limit rows with id > after_id, oldest first; nothing is removed.

        Rows acked or trimmed whose delete is not committed yet are skipped, so a reconnecting
        publisher never sends them again. A read error is logged and reads as no rows.
        """
        if self._db is None or self._closed:
            return []
        found: list[OutboxRow] = []
        scan = limit if not (self._unacked or self._untrimmed) else max(limit, _PEEK_SCAN)
        try:
            while len(found) < limit:
                raw = self._db.execute(
                    f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, scan)
                ).fetchall()
                rows = list(map(_row, raw))
                if self._unacked or self._untrimmed:
                    rows = [r for r in rows if not self._deleted_in_memory(r)]
                found += rows
                if len(raw) < scan:
                    break
                after_id = raw[-1][0]
        except sqlite3.Error as exc:
            self._log_fault(f"outbox read failed: {exc}")
            return found[:limit]
        return found[:limit]

    def depth(self) -> int:
        """Rows waiting for a PUBACK; a counter, so this is free to call on every status poll."""
        return max(0, self._depth - len(self._unacked))

    def last_seq(self, group: str, node: str) -> int:
        """The seq given to the stream's latest sample, 0 if it never had one."""
        return self._last_seq.get((node, group), self._legacy_seq.get(group, 0))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writable(self) -> bool:
        """False from a failed write until the next write that succeeds."""
        return self.faults.writable

    @property
    def retry_queue(self) -> int:
        """Samples collected but not committed, waiting for the storage to accept them."""
        return len(self._queue)

    @property
    def retry_pending(self) -> bool:
        """Something (samples, acks, trims) waits for a write to succeed."""
        if self._closed:
            return False
        return bool(self._queue or self._unacked or self._untrimmed or self._db is None)

    def retry_in(self) -> float:
        """Seconds until the next write attempt is allowed."""
        return self.faults.retry_in(self._clock())

    def fault_reason(self) -> str | None:
        """Why writes fail, for people (health, status); None while they succeed."""
        faults = self.faults
        if faults.writable or faults.failing_since_wall is None:
            return None
        since = time.strftime("%H:%M:%SZ", time.gmtime(faults.failing_since_wall))
        return (
            f"outbox writes failing since {since}: {faults.last_error};"
            f" {len(self._queue)} sample(s) held in memory"
            f" (limit {self.retry_limit}, {self.retry_dropped} dropped)"
        )

    # -- internals -------------------------------------------------------------------------

    def _ready_to_write(self) -> bool:
        if self._closed or not self.faults.may_try(self._clock()):
            return False
        return self._db is not None or self._open()

    def _stamp(self, batch: list[Sample]) -> tuple[list[Sample], dict[StreamKey, int]]:
        next_seq = dict(self._last_seq)
        stamped: list[Sample] = []
        for sample in batch:
            key = (sample.node, sample.group)
            seq = next_seq.get(key, self._legacy_seq.get(sample.group, 0)) + 1
            next_seq[key] = seq
            stamped.append(replace(sample, seq=seq))
        return stamped, next_seq

    def _commit(
        self,
        rows: list[tuple[str, str, int, int, str, int, bytes]],
        changed: list[tuple[str, str, int]],
        excess: int,
    ) -> _Deleted | None:
        """One transaction: inserts, seqs, waiting deletes, overflow; None if it failed.

        On a full disk the WAL is checkpointed and truncated and the transaction tried once
        more: below SQLite's 1000-page autocheckpoint the WAL only grows, so on a small or
        nearly full data partition it would otherwise fill the disk with pages already in
        the database.
        """
        db = self._db
        assert db is not None
        try:
            deleted = self._transaction(db, rows, changed, excess)
        except sqlite3.Error as exc:
            if not (_is_full(exc) and _truncate_wal(db)):
                self._write_failed(str(exc))
                return None
            try:
                deleted = self._transaction(db, rows, changed, excess)
            except sqlite3.Error as again:
                self._write_failed(str(again))
                return None
        self._unacked.clear()
        self._untrimmed.clear()
        if self.faults.failing_since is not None and self.faults.succeeded():
            log.warning("outbox %s writable again; waiting samples committed", self.path)
        return deleted

    def _transaction(
        self,
        db: sqlite3.Connection,
        rows: list[tuple[str, str, int, int, str, int, bytes]],
        changed: list[tuple[str, str, int]],
        excess: int,
    ) -> _Deleted:
        deleted = _Deleted()
        try:
            db.execute("BEGIN")
            if rows:
                db.executemany(_INSERT, rows)
                db.executemany(_UPSERT_SEQ, changed)
            # Deletes after the inserts: a trim that waited also covers samples that waited.
            if self._unacked:
                before = db.total_changes
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in self._unacked])
                deleted.acked = db.total_changes - before
            for (node, group), slot in self._untrimmed.items():
                deleted.trimmed += _delete_through(db, node, group, slot)
            if self.overflow == "drop_oldest" and excess:
                deleted.dropped = _drop_oldest(db, excess)
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return deleted

    def _deleted_in_memory(self, row: OutboxRow) -> bool:
        if row.id in self._unacked:
            return True
        if not self._untrimmed:
            return False
        through = max(
            self._untrimmed.get((row.node, row.group), -1),
            self._untrimmed.get((None, row.group), -1),
        )
        return row.slot <= through and through != -1

    def _hold(self, fresh: list[Sample]) -> None:
        """Keep uncommitted samples for the next attempt, the newest `retry_limit` of them."""
        self._queue.extend(fresh)
        overflow = len(self._queue) - self.retry_limit
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.retry_dropped += overflow
            self._log_fault(
                f"retry queue full ({self.retry_limit}): {self.retry_dropped} sample(s) dropped"
            )

    def _write_failed(self, error: str) -> None:
        if self.faults.failed(error, self._clock(), time.time()):
            log.error(
                "outbox %s: write failed (%s); holding new samples in memory, retrying",
                self.path,
                error,
            )
            self._fault_logged_at = self._clock()
        else:
            self._log_fault(f"outbox writes still failing: {error}")
        if self._on_fault is not None:
            self._on_fault()

    def _log_fault(self, message: str) -> None:
        now = self._clock()
        if now - self._fault_logged_at >= _FAULT_LOG_INTERVAL_S:
            self._fault_logged_at = now
            log.error("%s (%s sample(s) held in memory)", message, len(self._queue))

    def _count_overflow(self, dropped: int) -> None:
        self.overflow_dropped += dropped
        self._overflow_unlogged += dropped
        now = self._clock()
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


@dataclass(slots=True)
class _Deleted:
    """Rows one transaction deleted, by cause."""

    acked: int = 0
    trimmed: int = 0
    dropped: int = 0

    @property
    def total(self) -> int:
        return self.acked + self.trimmed + self.dropped


def _delete_through(db: sqlite3.Connection, node: str | None, group: str, slot: int) -> int:
    if node is None:
        cur = db.execute("DELETE FROM outbox WHERE grp = ? AND slot <= ?", (group, slot))
    else:
        cur = db.execute(
            "DELETE FROM outbox WHERE node = ? AND grp = ? AND slot <= ?", (node, group, slot)
        )
    return cur.rowcount


def _is_full(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL


def _truncate_wal(db: sqlite3.Connection) -> bool:
    """Checkpoint the WAL into the database and truncate it; True if that freed it all."""
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        return False
    return bool(busy == 0)


def _row(raw: tuple[int, str, str, int, int, str, int, bytes]) -> OutboxRow:
    return OutboxRow(*raw)


def _drop_oldest(db: sqlite3.Connection, n: int) -> int:
    return db.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (n,)
    ).rowcount


__all__ = [
    "Outbox",
    "OutboxError",
    "OutboxRow",
    "Overflow",
    "Recovered",
    "StreamKey",
    "Synchronous",
    "WriteFaults",
    "encode_payload",
]
