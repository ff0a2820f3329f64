"""Write intents and their results, durable (SQLite next to the outbox), one row per uuid.

A row is committed with ``synchronous=FULL`` before its write is sent, so a crash, a kill or a
power cut after the commit still finds it: the uuid is then answered (outcome unknown, or the
recorded result) and never executed again. Rows the peer streamed in are kept the same way,
so a node that takes over knows what the old master started.

A store that cannot be opened or written (read-only or full data dir) raises
IntentStoreError, and nothing is sent for that request; it is opened again on the next one,
so writes come back by themselves once the disk does.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import TandemError
from tandem.writes.codes import WriteCode

log = logging.getLogger(__name__)

# Kept this long (and at most MAX_ROWS): a client retries within seconds, not days.
KEEP_S = 7 * 24 * 3600
MAX_ROWS = 200_000
PRUNE_EVERY = 1000


class IntentStoreError(TandemError):
    """The intent store cannot be read or written right now."""


@dataclass(frozen=True, slots=True)
class Intent:
    uuid: str
    term: int
    origin: str  # the node that took the request
    result: WriteCode | None  # None: started, no result known


class IntentStore:
    """uuid -> (term, origin, result); every change is committed before the call returns."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self.last_error: str | None = None
        try:
            self._connection()
        except IntentStoreError as exc:
            log.warning("write intents: %s; writes are refused until it opens", exc)

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS intents (uuid TEXT PRIMARY KEY,"
                    " term INTEGER NOT NULL, origin TEXT NOT NULL, result INTEGER,"
                    " created REAL NOT NULL)"
                )
            except sqlite3.Error:
                db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            self.last_error = f"cannot open {self._path}: {exc}"
            raise IntentStoreError(self.last_error) from exc
        self._db = db
        self.last_error = None
        return db

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        db = self._connection()
        try:
            return db.execute(sql, args)
        except sqlite3.Error as exc:
            self.last_error = f"{self._path}: {exc}"
            # Opened again on the next call: a disk that was full or read-only may be back.
            self.close()
            raise IntentStoreError(self.last_error) from exc

    def get(self, uuid: str) -> Intent | None:
        row = self._run(
            "SELECT uuid, term, origin, result FROM intents WHERE uuid = ?", (uuid,)
        ).fetchone()
        if row is None:
            return None
        return Intent(row[0], row[1], row[2], None if row[3] is None else WriteCode(row[3]))

    def begin(self, uuid: str, term: int, origin: str) -> bool:
        """Record that ``uuid`` is about to be executed; False if it was known already."""
        cursor = self._run(
            "INSERT OR IGNORE INTO intents (uuid, term, origin, result, created)"
            " VALUES (?, ?, ?, NULL, ?)",
            (uuid, term, origin, time.time()),
        )
        self._note_write()
        return cursor.rowcount == 1

    def finish(self, uuid: str, result: WriteCode) -> None:
        """The result of ``uuid``; a result already recorded is never replaced."""
        self._run(
            "UPDATE intents SET result = ? WHERE uuid = ? AND result IS NULL", (int(result), uuid)
        )

    def forget(self, uuid: str) -> None:
        """Drop an intent that was never sent (the peer did not confirm it): the uuid may be
        retried. A copy the peer may hold without a result only ever answers outcome unknown."""
        self._run("DELETE FROM intents WHERE uuid = ? AND result IS NULL", (uuid,))

    def merge(self, uuid: str, term: int, origin: str, result: WriteCode | None) -> None:
        """What the peer streamed: its intent (and later its result) for ``uuid``."""
        self.begin(uuid, term, origin)
        if result is not None:
            self.finish(uuid, result)

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM intents").fetchone()[0])

    def _note_write(self) -> None:
        self._writes += 1
        if self._writes % PRUNE_EVERY:
            return
        self._run("DELETE FROM intents WHERE created < ?", (time.time() - KEEP_S,))
        self._run(
            "DELETE FROM intents WHERE uuid IN (SELECT uuid FROM intents ORDER BY created DESC"
            " LIMIT -1 OFFSET ?)",
            (MAX_ROWS,),
        )

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()
