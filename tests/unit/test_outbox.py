"""Unit tests for the SQLite outbox: seq, ordering, ack, trim, overflow, durability on reopen."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import orjson
import pytest

from tandem.hub.model import Sample
from tandem.hub.outbox import Outbox, OutboxRow
from tandem.hub.wire import encode_payload


def make_sample(group: str = "g1", slot: int = 0, *, node: str = "plc1", n: int = 2) -> Sample:
    return Sample(
        node=node,
        group=group,
        slot=slot,
        timestamp_ms=1_700_000_000_000 + slot,
        values={f"t{i}": i * 1.5 for i in range(n)},
        errors={"bad": 1002},
        seq=0,
        source_node="tandem-a",
        term=3,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def test_append_first_sample_gets_seq_one_and_payload_fields(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        stamped = ob.append(make_sample(slot=42))
        rows = ob.peek(10)
    assert stamped.seq == 1
    assert len(rows) == 1
    body = json.loads(rows[0].payload(5))
    assert body == {
        "timestamp": 1_700_000_000_042,
        "node": "plc1",
        "group": "g1",
        "values": {"t0": 0.0, "t1": 1.5},
        "errors": {"bad": 1002},
        "slot": 42,
        "seq": 1,
        "term": 5,  # the sender's term, not the one the sample was made with
        "source_node": "tandem-a",
    }
    assert b" " not in rows[0].payload(0)  # compact separators
    assert (rows[0].node, rows[0].group, rows[0].slot, rows[0].seq) == ("plc1", "g1", 42, 1)
    assert rows[0].source_node == "tandem-a"
    assert rows[0].value_count == 2


def test_outbox_row_payload_byte_identical_to_encoding_the_whole_message(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        stamped = ob.append(make_sample(slot=7, n=5))
        (row,) = ob.peek(1)
    for term in (0, 3, 12345):
        expected = orjson.dumps({**stamped.payload(), "term": term})
        assert row.payload(term) == expected
    assert row.payload(3) == encode_payload(stamped)
    # the stored body is the message up to the identity fields, without its closing brace
    assert list(json.loads(row.body + b"}")) == ["timestamp", "node", "group", "values", "errors"]


def test_outbox_row_payload_with_sig_before_closing_brace(db_path: Path) -> None:
    sig = "ab" * 32
    with Outbox(db_path) as ob:
        ob.append(make_sample(slot=1))
        (row,) = ob.peek(1)
    signed = row.payload(4, sig)
    assert signed.endswith(b',"source_node":"tandem-a","sig":"' + sig.encode() + b'"}')
    assert json.loads(signed)["sig"] == sig
    assert signed.replace(b',"sig":"' + sig.encode() + b'"', b"") == row.payload(4)


def test_append_seq_per_group_independent(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        seqs = [ob.append(make_sample(g, s)).seq for s in range(3) for g in ("a", "b")]
        assert seqs == [1, 1, 2, 2, 3, 3]
        assert ob.last_seq("a", "plc1") == 3
        assert ob.last_seq("unknown", "plc1") == 0


def test_append_same_group_name_on_two_devices_counts_seq_per_device(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        out = ob.append_many(
            [make_sample("fast", s, node=device) for s in range(3) for device in ("plc1", "plc2")]
        )
        assert [(s.node, s.seq) for s in out] == [
            ("plc1", 1),
            ("plc2", 1),
            ("plc1", 2),
            ("plc2", 2),
            ("plc1", 3),
            ("plc2", 3),
        ]
    with Outbox(db_path) as ob:  # and across a restart
        assert ob.append(make_sample("fast", 3, node="plc2")).seq == 4
        assert ob.last_seq("fast", "plc1") == 3


def test_seq_after_reopen_continues(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        for s in range(5):
            ob.append(make_sample(slot=s))
    with Outbox(db_path) as ob:
        assert ob.depth() == 5
        assert ob.append(make_sample(slot=5)).seq == 6


def test_seq_after_all_rows_acked_and_reopen_not_reset(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        for s in range(4):
            ob.append(make_sample(slot=s))
        ob.ack(r.id for r in ob.peek(100))
        assert ob.depth() == 0
    with Outbox(db_path) as ob:
        assert ob.last_seq("g1", "plc1") == 4
        assert ob.append(make_sample(slot=9)).seq == 5
        # ids keep growing too, so id order stays append order
        assert ob.peek(1)[0].id > 4


def test_append_many_one_transaction_assigns_consecutive_seqs(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        ob.append(make_sample("a", 0))
        out = ob.append_many([make_sample("a", 1), make_sample("b", 1), make_sample("a", 2)])
        assert [(s.group, s.seq) for s in out] == [("a", 2), ("b", 1), ("a", 3)]
        assert ob.depth() == 4
        assert ob.append_many([]) == []


def test_peek_returns_id_order_and_respects_after_id(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        for s in range(10):
            ob.append(make_sample("a" if s % 2 else "b", s))
        first = ob.peek(4)
        rest = ob.peek(100, after_id=first[-1].id)
        allrows = first + rest
    ids = [r.id for r in allrows]
    assert ids == sorted(ids)
    assert len(set(ids)) == 10
    assert [r.slot for r in allrows] == list(range(10))
    assert all(isinstance(r, OutboxRow) for r in allrows)


def test_ack_deletes_only_given_ids(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        for s in range(5):
            ob.append(make_sample(slot=s))
        rows = ob.peek(10)
        ob.ack([rows[1].id, rows[3].id, 999_999])  # unknown id ignored
        assert ob.depth() == 3
        assert [r.slot for r in ob.peek(10)] == [0, 2, 4]
        ob.ack([rows[1].id])  # acking twice is harmless
        ob.ack([])
        assert ob.depth() == 3


def test_trim_through_deletes_only_that_group_up_to_slot(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        for s in range(6):
            ob.append(make_sample("a", s))
            ob.append(make_sample("b", s))
        assert ob.trim_through("a", 3) == 4
        assert ob.depth() == 8
        left = [(r.group, r.slot) for r in ob.peek(100)]
        assert ("a", 3) not in left
        assert [s for g, s in left if g == "a"] == [4, 5]
        assert [s for g, s in left if g == "b"] == list(range(6))
        assert ob.trim_through("a", 3) == 0


def test_overflow_full_drops_oldest_and_counts(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="tandem.hub.outbox"),
        Outbox(db_path, max_rows=5) as ob,
    ):
        for s in range(8):
            ob.append(make_sample(slot=s))
        assert ob.depth() == 5
        assert ob.overflow_dropped == 3
        assert [r.slot for r in ob.peek(100)] == [3, 4, 5, 6, 7]
        # one batch larger than the limit keeps only the newest rows
        ob.append_many([make_sample(slot=100 + i) for i in range(7)])
        assert ob.depth() == 5
        assert ob.overflow_dropped == 3 + 7
        assert [r.slot for r in ob.peek(100)] == [102, 103, 104, 105, 106]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # rate-limited: many drops, one line
    assert len(warnings) == 1


def test_depth_after_reopen_counts_rows(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        ob.append_many([make_sample(slot=s) for s in range(7)])
        ob.ack([ob.peek(1)[0].id])
    with Outbox(db_path) as ob:
        assert ob.depth() == 6 == len(ob.peek(100))


def test_append_typical_sample_is_sub_millisecond(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        samples = [make_sample(slot=s, n=50) for s in range(500)]
        start = time.perf_counter()
        for s in samples:
            ob.append(s)
        per_append = (time.perf_counter() - start) / len(samples)
    # generous: the target is well under 1 ms on a quiet machine, the CPUs here are shared
    assert per_append < 0.005


def test_outbox_invalid_max_rows_rejected(db_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(db_path, max_rows=0)


def test_outbox_full_synchronous_option_works(db_path: Path) -> None:
    with Outbox(db_path, synchronous="FULL") as ob:
        ob.append(make_sample())
        assert ob._db is not None
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_overflow_drop_newest_keeps_oldest_and_burns_seq(db_path: Path) -> None:
    with Outbox(db_path, max_rows=3, overflow="drop_newest") as ob:
        stamped = ob.append_many([make_sample(slot=s) for s in range(5)])
        ob.append(make_sample(slot=5))
        assert ob.depth() == 3
        assert ob.overflow_dropped == 3
        assert [r.slot for r in ob.peek(10)] == [0, 1, 2]
        assert [s.seq for s in stamped] == [1, 2, 3, 4, 5]
        ob.ack([ob.peek(1)[0].id])
        # room again: the next sample is stored, and its seq shows the gap
        assert ob.append(make_sample(slot=6)).seq == 7
        assert [r.seq for r in ob.peek(10)] == [2, 3, 7]


def test_reopen_with_smaller_max_rows_drop_newest_refuses_all_new(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        ob.append_many([make_sample(slot=s) for s in range(6)])
    with Outbox(db_path, max_rows=4, overflow="drop_newest") as ob:
        ob.append_many([make_sample(slot=10), make_sample(slot=11)])
        assert ob.depth() == 6
        assert ob.overflow_dropped == 2
        assert [r.slot for r in ob.peek(10)] == list(range(6))


def test_outbox_trim_through_with_node_leaves_same_group_of_other_device(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        for device in ("plc1", "plc2"):
            for slot in range(5):
                box.append(Sample(device, "fast", slot, 0, {"x": 1}, {}, 0))
        assert box.trim_through("fast", 2, node="plc1") == 3
        left = [(r.node, r.slot) for r in box.peek(100)]
    assert left == [("plc1", 3), ("plc1", 4)] + [("plc2", s) for s in range(5)]
