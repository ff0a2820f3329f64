"""The outbox file: opening it, its schema and migrations, and setting a corrupt one aside.

Schema versions live in `PRAGMA user_version`:

1. (user_version 0 with an `outbox` table) full payloads with the term in them, one seq counter
   per group name shared by every device with that group name.
2. the stored body (payload without the identity tail) and one seq counter per (device, group).

A file that is not an SQLite database, or fails `PRAGMA quick_check`, is renamed aside with its
-wal and -shm and replaced by an empty outbox: a node that crash-loops on its own buffer is
worse than one that starts empty and says loudly where the old file went.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import TandemError
from tandem.hub.wire import body_of_message

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_LEGACY_VERSION = 1
# Rows converted per statement during a migration: bounded memory for a million-row file.
_MIGRATE_CHUNK = 5_000
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

# Errors of the storage underneath (space, permissions, a read-only or vanished file system,
# another process holding a lock), as opposed to a damaged file or a bug.
_STORAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)

_CREATE_OUTBOX = (
    # AUTOINCREMENT: ids are never reused after deletes, so id order is append order for good.
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,"
    " grp TEXT NOT NULL, slot INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " source_node TEXT NOT NULL, value_count INTEGER NOT NULL, body BLOB NOT NULL)"
)
_CREATE_REST = (
    # Kept apart from the rows so that acking or trimming every row never resets a seq.
    "CREATE TABLE stream_seq (node TEXT NOT NULL, grp TEXT NOT NULL,"
    " last_seq INTEGER NOT NULL, PRIMARY KEY (node, grp)) WITHOUT ROWID",
    # What a version-1 file knew per group name: the floor for streams it had no rows of.
    "CREATE TABLE IF NOT EXISTS legacy_group_seq (grp TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
    "CREATE INDEX outbox_stream_slot ON outbox (node, grp, slot)",
)


def is_storage_fault(exc: BaseException) -> bool:
    """True for errors of the disk or file system under the outbox, not of the file itself."""
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _STORAGE_CODES


class OutboxError(TandemError):
    """The outbox database could not be opened or used."""


class CorruptOutbox(OutboxError):
    """The file is not an SQLite database, or its structure is damaged.

    Carries the connection still open: closing it deletes the -wal and -shm files, so the
    files are renamed aside first and the connection closed after.
    """

    def __init__(self, message: str, connection: sqlite3.Connection) -> None:
        super().__init__(message)
        self.connection = connection


@dataclass(frozen=True, slots=True)
class Recovered:
    """A corrupt outbox found at start and renamed aside."""

    moved_to: Path
    reason: str
    at_ms: int


def connect(path: Path, synchronous: str, *, check: bool) -> sqlite3.Connection:
    """An open connection with WAL, the given synchronous level and the current schema.

    `check` runs `PRAGMA quick_check` first (at start; it reads the whole file). Raises
    CorruptOutbox for a damaged file, OutboxError for a file of a newer Tandem, and
    sqlite3.Error for everything else (read-only directory, no space, locked).
    """
    # isolation_level=None: transactions are explicit, so one append is one commit.
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if check:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise CorruptOutbox("quick_check: " + "; ".join(problems), db)
        _prepare_schema(db, path)
    except CorruptOutbox:
        raise
    except sqlite3.DatabaseError as exc:
        if (exc.sqlite_errorcode & 0xFF) in _CORRUPTION_CODES:
            raise CorruptOutbox(str(exc), db) from exc
        db.close()
        raise
    except BaseException:
        db.close()
        raise
    return db


def open_or_recover(
    path: Path, synchronous: str, wall_clock: Callable[[], float] = time.time
) -> tuple[sqlite3.Connection, Recovered | None]:
    """Open the outbox at start; a corrupt one is moved aside and an empty one opened instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return connect(path, synchronous, check=True), None
    except CorruptOutbox as exc:
        now = wall_clock()
        try:
            moved_to = move_aside(path, now)
        finally:
            exc.connection.close()
        log.error(
            "outbox %s is corrupt (%s): moved to %s; starting with an empty outbox",
            path,
            exc,
            moved_to,
        )
        recovered = Recovered(moved_to=moved_to, reason=str(exc), at_ms=int(now * 1000))
    try:
        return connect(path, synchronous, check=False), recovered
    except CorruptOutbox as exc:  # a file just created cannot be corrupt: something else is
        exc.connection.close()
        raise OutboxError(f"cannot create outbox {path}: {exc}") from exc


def move_aside(path: Path, now: float) -> Path:
    """Rename the file and its -wal/-shm to `<name>.corrupt-<UTC time>`, never over another."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
        n += 1
    # The companions first: a crash in between leaves the main file where the next start
    # finds it again, rather than an outbox opened over a stray WAL.
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + suffix))
    os.replace(path, target)
    _fsync_dir(path.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- schema -------------------------------------------------------------------------------


def _prepare_schema(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise OutboxError(
            f"outbox {path} has schema version {version}, newer than this Tandem's"
            f" ({SCHEMA_VERSION}); run the newer version or move the file away"
        )
    tables = _tables(db)
    if "outbox" in tables:
        version = _LEGACY_VERSION
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == _LEGACY_VERSION:
            _migrate_from_v1(db, path, tables)
        else:
            db.execute(_CREATE_OUTBOX)
        for statement in _CREATE_REST:
            db.execute(statement)
        if version == _LEGACY_VERSION:
            db.execute(
                "INSERT INTO stream_seq (node, grp, last_seq)"
                " SELECT node, grp, MAX(seq) FROM outbox GROUP BY node, grp"
            )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _migrate_from_v1(db: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """Full payloads become bodies (the term is stamped at send now); seqs move per stream."""
    db.execute("ALTER TABLE outbox RENAME COLUMN payload TO body")
    db.execute("DROP INDEX IF EXISTS outbox_grp_slot")
    if "group_seq" in tables:
        db.execute("ALTER TABLE group_seq RENAME TO legacy_group_seq")
    converted, unreadable = 0, 0
    last_id = 0
    while True:
        rows = db.execute(
            "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, _MIGRATE_CHUNK),
        ).fetchall()
        if not rows:
            break
        last_id = rows[-1][0]
        updates, bad = [], []
        for row_id, payload in rows:
            body = body_of_message(bytes(payload))
            if body is None:
                bad.append((row_id,))
            else:
                updates.append((body, row_id))
        db.executemany("UPDATE outbox SET body = ? WHERE id = ?", updates)
        db.executemany("DELETE FROM outbox WHERE id = ?", bad)
        converted += len(updates)
        unreadable += len(bad)
    if unreadable:
        log.error("outbox %s: %s stored row(s) were not Tandem payloads, dropped", path, unreadable)
    log.info("outbox %s migrated to schema %s: %s row(s) kept", path, SCHEMA_VERSION, converted)


__all__ = [
    "SCHEMA_VERSION",
    "CorruptOutbox",
    "OutboxError",
    "Recovered",
    "connect",
    "is_storage_fault",
    "move_aside",
    "open_or_recover",
]
