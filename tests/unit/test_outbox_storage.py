"""The outbox against bad files and failing storage, with real SQLite files.

Disk full is SQLite's own SQLITE_FULL (a `max_page_count` below what the next write needs);
an unopenable outbox is a directory where the file should be. The root-only tests with a real
full tmpfs and a read-only mount are in tests/integration/test_storage_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from tandem.api.metrics import render_metrics
from tandem.hub.model import Sample
from tandem.hub.outbox import RETRY_MAX_S, Outbox, OutboxError
from tandem.hub.outbox_file import SCHEMA_VERSION, move_aside
from tandem.hub.runtime import Hub
from tests.unit.test_runtime_view import FakePoller, FakePublisher, make_config, pollers, settle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(slot: int, *, node: str = "plc1", group: str = "fast", n: int = 3) -> Sample:
    values: dict[str, int | float | bool | str] = {f"t{i}": i for i in range(n)}
    return Sample(node, group, slot, 1_700_000_000_000 + slot, values, {}, 0)


def fill_up(ob: Outbox) -> None:
    """From now on the next growing write fails with SQLITE_FULL, as on a full disk."""
    assert ob._db is not None
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")


def free_space(ob: Outbox) -> None:
    assert ob._db is not None
    ob._db.execute("PRAGMA max_page_count = 1073741823")


def big(slot: int) -> Sample:
    return sample(slot, n=400)  # several pages each: a full database cannot take it


# --- migration from the unversioned layout ------------------------------------------------------

_OLD_SCHEMA = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    grp TEXT NOT NULL,
    slot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    source_node TEXT NOT NULL,
    value_count INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX outbox_grp_slot ON outbox (grp, slot);
CREATE TABLE group_seq (grp TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
"""


def old_payload(node: str, slot: int, seq: int, term: int = 2) -> bytes:
    return orjson.dumps(
        {
            "timestamp": 1_700_000_000_000 + slot,
            "node": node,
            "group": "fast",
            "values": {"slot": 1, "v": slot},  # a tag named like an identity field
            "errors": {},
            "slot": slot,
            "seq": seq,
            "term": term,
            "source_node": "edge-a",
        }
    )


def write_old_outbox(path: Path) -> None:
    """An outbox as the unversioned Tandem left it: one seq counter per group name."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_OLD_SCHEMA)
    rows = []
    for seq in range(1, 7):  # plc1 and plc2 share "fast": 1,3,5 and 2,4,6
        node = "plc1" if seq % 2 else "plc2"
        slot = 100 + seq
        rows.append((node, "fast", slot, seq, "edge-a", 2, old_payload(node, slot, seq)))
    rows.append(("plc1", "fast", 999, 7, "edge-a", 0, b"not a payload"))
    db.executemany(
        "INSERT INTO outbox (node, grp, slot, seq, source_node, value_count, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("DELETE FROM outbox WHERE seq = 1")  # acked already
    db.executemany(
        "INSERT INTO group_seq (grp, last_seq) VALUES (?, ?)", [("fast", 7), ("slow", 40)]
    )
    db.close()


def test_outbox_old_schema_file_keeps_rows_and_publishes_them_in_the_new_format(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    write_old_outbox(path)
    with caplog.at_level(logging.INFO, logger="tandem.hub"), Outbox(path) as ob:
        rows = ob.peek(100)
        assert ob._db is not None
        assert ob._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [(r.id, r.node, r.seq) for r in rows] == [
        (2, "plc2", 2),
        (3, "plc1", 3),
        (4, "plc2", 4),
        (5, "plc1", 5),
        (6, "plc2", 6),
    ]
    for row in rows:
        # the same bytes as before the upgrade, under the term of whoever sends them now
        assert row.payload(2) == old_payload(row.node, row.slot, row.seq)
        assert row.payload(9) == old_payload(row.node, row.slot, row.seq, term=9)
    assert "not Tandem payloads, dropped" in caplog.text  # the one unreadable row
    assert "migrated to schema" in caplog.text


def test_outbox_old_schema_file_continues_each_streams_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    write_old_outbox(path)
    with Outbox(path) as ob:
        assert ob.append(sample(200, node="plc1")).seq == 6  # highest plc1/fast had: 5
        assert ob.append(sample(200, node="plc2")).seq == 7  # highest plc2/fast had: 6
        # no rows left to tell: the group's old counter is the floor, so no seq comes twice
        assert ob.append(sample(200, node="plc1", group="slow")).seq == 41
        assert ob.append(sample(200, node="plc3")).seq == 8  # the unreadable row had seq 7
        newest = ob.peek(100)[-1]
    assert newest.id > 7  # ids are never reused, not even those deleted before the upgrade
    with Outbox(path) as ob:  # opened again: nothing migrates twice
        assert ob.depth() == 9
        assert ob.append(sample(201, node="plc1")).seq == 7


def test_outbox_newer_schema_refused_at_start_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(OutboxError, match=re.escape(str(path)) + ".*newer"):
        Outbox(path)
    assert path.exists()  # left as it was


# --- a corrupt file at start --------------------------------------------------------------------


def test_outbox_not_a_database_moved_aside_with_wal_and_shm_and_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is no database at all\n" * 200)
    path.with_name("outbox.sqlite3-wal").write_bytes(b"wal bytes")
    path.with_name("outbox.sqlite3-shm").write_bytes(b"shm bytes")
    with caplog.at_level(logging.ERROR, logger="tandem.hub"), Outbox(path) as ob:
        assert ob.depth() == 0
        assert ob.append(sample(1)).seq == 1
        recovered = ob.recovered
    assert recovered is not None
    moved = recovered.moved_to
    assert re.fullmatch(r"outbox\.sqlite3\.corrupt-\d{8}T\d{6}Z", moved.name)
    assert moved.read_bytes().startswith(b"this is no database")
    assert Path(f"{moved}-wal").read_bytes() == b"wal bytes"
    # moved along too; its content is only an index SQLite rebuilds from the WAL
    assert Path(f"{moved}-shm").exists()
    assert "not a database" in recovered.reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(moved) in errors[0].getMessage()


def test_outbox_failing_quick_check_moved_aside_and_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as ob:
        ob.append_many([sample(s, n=50) for s in range(300)])
    with path.open("r+b") as f:  # b-tree pages in the middle of the file overwritten
        f.seek(4096 * 5)
        f.write(b"\xff" * 8192)
    with Outbox(path) as ob:
        assert ob.recovered is not None
        assert ob.recovered.reason.startswith("quick_check")
        assert ob.depth() == 0
        assert ob.append(sample(1)).seq == 1
    assert ob.recovered.moved_to.stat().st_size > 8192


def test_outbox_move_aside_twice_in_one_second_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"first")
    first = move_aside(path, 1_800_000_000.0)
    path.write_bytes(b"second")
    second = move_aside(path, 1_800_000_000.0)
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")
    assert first.name == "outbox.sqlite3.corrupt-20270115T080000Z"


# --- storage faults while running ---------------------------------------------------------------


def test_outbox_append_disk_full_holds_samples_and_commits_them_in_order_later(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    faults: list[int] = []
    ob = Outbox(tmp_path / "o.db", clock=clock, on_fault=lambda: faults.append(1))
    with ob:
        ob.append_many([sample(s) for s in range(3)])
        fill_up(ob)
        assert ob.append_many([big(3), big(4)]) == []
        assert not ob.writable and ob.retry_queue == 2 and faults
        reason = ob.fault_reason()
        assert reason is not None and "database or disk is full" in reason
        assert "2 sample(s) held in memory" in reason
        assert ob.depth() == 3  # what was committed stays
        assert ob.append_many([big(5)]) == []  # within the retry delay: not even tried
        assert ob.faults.errors == 1
        free_space(ob)
        clock.now += ob.retry_in()
        stored = ob.append_many([big(6)])
        assert [(s.slot, s.seq) for s in stored] == [(3, 4), (4, 5), (5, 6), (6, 7)]
        assert ob.writable and ob.retry_queue == 0 and ob.fault_reason() is None
        assert [r.slot for r in ob.peek(100)] == list(range(7))


def test_outbox_retry_without_new_samples_commits_what_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", clock=clock) as ob:
        fill_up(ob)
        ob.append_many([big(1)])
        assert ob.retry_pending
        free_space(ob)
        clock.now += RETRY_MAX_S
        ob.retry()
        assert not ob.retry_pending and ob.depth() == 1


def test_outbox_retry_queue_full_drops_oldest_and_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", clock=clock, retry_limit=3) as ob:
        fill_up(ob)
        for slot in range(5):
            ob.append_many([big(slot)])
            clock.now += RETRY_MAX_S
        assert (ob.retry_queue, ob.retry_dropped) == (3, 2)
        free_space(ob)
        stored = ob.append_many([])
        assert [s.slot for s in stored] == [2, 3, 4]
        assert [s.seq for s in stored] == [1, 2, 3]  # seqs are given at commit: no gap


def test_outbox_retry_delay_backs_off_while_writes_keep_failing(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", clock=clock) as ob:
        fill_up(ob)
        delays = []
        for slot in range(8):
            ob.append_many([big(slot)])
            delays.append(ob.retry_in())
            clock.now += ob.retry_in()
        assert delays == sorted(delays)
        assert delays[0] < 0.2 and delays[-1] == RETRY_MAX_S
        assert ob.faults.errors == 8


def test_outbox_ack_and_trim_failing_kept_hidden_from_peek_and_written_later(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", clock=clock) as ob:
        ob.append_many([big(s) for s in range(6)])
        rows = ob.peek(100)
        assert ob._db is not None
        ob._db.execute("PRAGMA query_only = ON")  # every write now fails; reads still work
        ob.ack([rows[0].id, rows[1].id])
        assert ob.trim_through("fast", 3, node="plc1") == 0
        assert not ob.writable
        # a reconnecting publisher must not send them again
        assert [r.slot for r in ob.peek(100)] == [4, 5]
        assert ob.depth() == 4
        ob._db.execute("PRAGMA query_only = OFF")
        clock.now += RETRY_MAX_S
        ob.retry()
        assert ob.writable and [r.slot for r in ob.peek(100)] == [4, 5]
        assert ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2


def test_outbox_closed_while_acks_fail_sends_those_rows_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as ob:
        ob.append_many([sample(s) for s in range(3)])
        assert ob._db is not None
        ob._db.execute("PRAGMA query_only = ON")
        ob.ack(r.id for r in ob.peek(100))
        assert ob.depth() == 0
    with Outbox(path) as ob:  # at least once: not acked on disk means published again
        assert [r.slot for r in ob.peek(100)] == [0, 1, 2]


def test_outbox_unopenable_path_runs_holding_samples_then_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    path = tmp_path / "o.db"
    path.mkdir()  # a directory where the file should be: SQLITE_CANTOPEN
    with caplog.at_level(logging.ERROR, logger="tandem.hub"):
        ob = Outbox(path, clock=clock)
    with ob:
        assert not ob.writable and ob.peek(10) == []
        assert "cannot open" in (ob.fault_reason() or "")
        assert ob.append_many([sample(1)]) == []
        path.rmdir()
        clock.now += RETRY_MAX_S
        stored = ob.append_many([sample(2)])
        assert [s.slot for s in stored] == [1, 2]
        assert ob.writable and ob.depth() == 2
    assert "holding new samples in memory" in caplog.text


def test_outbox_append_single_failing_raises_and_keeps_the_sample(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", clock=clock) as ob:
        fill_up(ob)
        with pytest.raises(OutboxError, match="disk is full"):
            ob.append(big(1))
        free_space(ob)
        clock.now += RETRY_MAX_S
        assert [s.slot for s in ob.append_many([])] == [1]


# --- the hub on a failing outbox ----------------------------------------------------------------


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(make_config(tmp_path), poller_factory=FakePoller, publisher_factory=FakePublisher)
    try:
        yield h
    finally:
        h.outbox.close()


async def test_hub_outbox_disk_full_fails_health_with_reason_then_recovers_by_itself(
    hub: Hub,
) -> None:
    seen: list[Sample] = []
    hub.on_sample.append(seen.append)
    plc1 = pollers(hub)[0]
    plc1.sample("fast", 1, {"t1": 1}, {})
    await settle()
    fill_up(hub.outbox)
    plc1.sample("fast", 2, {"t1": "x" * 50_000}, {})
    await settle()

    assert hub.health_checks()["outbox"] is False
    health = hub.health()
    assert not health.ok and "database or disk is full" in health.reasons["outbox"]
    status = hub.status().outbox
    assert (status.writable, status.retry_queue, status.write_errors) == (False, 1, 1)
    assert status.fault is not None and status.depth == 1
    text = render_metrics(hub.status()).decode()
    assert "tandem_outbox_writable 0.0" in text
    assert "tandem_outbox_write_errors_total 1.0" in text
    assert "tandem_outbox_retry_queue 1.0" in text
    assert [s.slot for s in seen] == [1]  # hooks see a sample once it is committed

    free_space(hub.outbox)
    # no new sample arrives: the retry armed by the failure commits what waits
    await wait_for(lambda: hub.outbox.writable, timeout=5)
    assert [(s.slot, s.seq) for s in seen] == [(1, 1), (2, 2)]
    assert hub.health().reasons == {} and hub.health_checks()["outbox"] is True
    assert hub.status().outbox.depth == 2
    told = [e.message for e in reversed(hub.timeline(10)) if "outbox" in e.message]
    assert len(told) == 2
    assert told[0].startswith("outbox writes failing") and told[1] == "outbox writable again"


async def test_hub_corrupt_outbox_at_start_shown_in_status_and_metrics(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.data_dir.mkdir(parents=True)
    (cfg.data_dir / "outbox.sqlite3").write_bytes(b"\x00garbage" * 1000)
    hub = Hub(cfg, poller_factory=FakePoller, publisher_factory=FakePublisher)
    try:
        info = hub.status().outbox
        assert info.recovered == 1 and info.writable
        assert info.recovered_to is not None and ".corrupt-" in info.recovered_to
        assert Path(info.recovered_to).read_bytes().startswith(b"\x00garbage")
        assert "tandem_outbox_recovered_total 1.0" in render_metrics(hub.status()).decode()
        assert hub.health_checks()["outbox"] is True
        pollers(hub)[0].sample("fast", 1, {"t1": 1}, {})
        await settle()
        (event,) = [e for e in hub.timeline(10) if "corrupt" in e.message]
        assert info.recovered_to in event.message
    finally:
        hub.outbox.close()


def test_outbox_close_makes_one_last_attempt_at_what_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "o.db"
    ob = Outbox(path, clock=clock)
    fill_up(ob)
    ob.append_many([big(1)])
    assert ob.retry_in() > 0
    free_space(ob)  # space back, but the retry delay has not passed yet
    ob.close()
    with Outbox(path) as again:
        assert [r.slot for r in again.peek(10)] == [1]
