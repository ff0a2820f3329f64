"""Reading delivered slots off the wire, restamping terms, and judging delivery."""

from __future__ import annotations

import pytest

from tandem.ha.audit import DeliveryAudit, StreamAudit
from tandem.ha.observer import Delivered, parse_delivered, restamp, wildcard
from tandem.hub.model import Sample
from tandem.hub.outbox import encode_payload


def payload(**kw: object) -> bytes:
    fields: dict[str, object] = {
        "node": "plc1",
        "group": "fast",
        "slot": 42,
        "timestamp_ms": 1700,
        "values": {"x": 1.5},
        "errors": {},
        "seq": 7,
        "source_node": "node-a",
        "term": 2,
    }
    fields.update(kw)
    return encode_payload(Sample(**fields))  # type: ignore[arg-type]


def test_parse_delivered_reads_identity_fields() -> None:
    assert parse_delivered(payload()) == Delivered("plc1", "fast", 42, 2, "node-a")


def test_parse_delivered_ignores_tags_named_like_identity_fields() -> None:
    tricky = payload(values={"slot": 3, "term": 9, "source_node": "evil", "node": "x"})
    assert parse_delivered(tricky) == Delivered("plc1", "fast", 42, 2, "node-a")


def test_parse_delivered_handles_escaped_names() -> None:
    d = parse_delivered(payload(node='pl"c', source_node="n\\1"))
    assert d is not None and (d.device, d.source_node) == ('pl"c', "n\\1")


@pytest.mark.parametrize("junk", [b"", b"{}", b"not json", b'{"slot":1}', payload()[:-1]])
def test_parse_delivered_returns_none_for_foreign_payloads(junk: bytes) -> None:
    assert parse_delivered(junk) is None


def test_restamp_replaces_only_the_term() -> None:
    original = payload(values={"term": 9})
    stamped = restamp(original, 15)
    d = parse_delivered(stamped)
    assert d is not None and d.term == 15 and d.slot == 42
    assert stamped.replace(b'"term":15,', b'"term":2,') == original


def test_wildcard_replaces_every_variable() -> None:
    assert wildcard("/neuron/{node}") == "/neuron/+"
    assert wildcard("site/{source_node}/{node}/{group}") == "site/+/+/+"


def test_stream_audit_counts_lost_duplicate_and_out_of_order() -> None:
    s = StreamAudit()
    for slot in (1, 2, 4, 4, 3, 6):
        s.add(slot)
    assert s.missing() == [5]
    assert (s.lost, s.duplicates, s.out_of_order) == (1, 1, 1)
    assert s.duplicate_slots == [4]


def test_delivery_audit_tracks_publishers_and_first_after() -> None:
    audit = DeliveryAudit()
    for at, slot, src in ((1.0, 1, "a"), (2.0, 2, "a"), (3.0, 3, "b"), (4.0, 4, "a")):
        audit.add(Delivered("plc1", "fast", slot, 1, src), at=at)
    assert audit.publishers() == ["a", "b", "a"]
    first = audit.first_after(2.5, "b")
    assert first is not None and first.delivered.slot == 3
    assert audit.first_after(4.5) is None
    assert (audit.messages, audit.lost, audit.duplicates) == (4, 0, 0)
