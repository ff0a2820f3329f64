"""Reading delivered slots off the wire, signing and checking them, and judging delivery."""

from __future__ import annotations

import orjson
import pytest

from tandem.ha.audit import Delivered, DeliveryAudit, StreamAudit, parse_delivered
from tandem.ha.hubside import wire_payload
from tandem.ha.wire import (
    MAX_INT,
    BrokerDrop,
    Control,
    DataIdentity,
    Signer,
    parse_control,
    parse_data,
    wildcard,
)
from tandem.hub.model import Sample
from tandem.hub.outbox import OutboxRow, encode_payload
from tandem.hub.wire import body_of_message

SIGNER = Signer(b"k" * 32, "line1")


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


def signed(term: int = 2, **kw: object) -> bytes:
    raw = payload(**kw)
    d = parse_data(raw)
    assert isinstance(d, DataIdentity)
    body = body_of_message(raw)
    assert body is not None
    row = OutboxRow(1, d.device, d.group, d.slot, d.seq, d.source_node, 1, body)
    return wire_payload(
        row, term, SIGNER.data(d.device, d.group, d.slot, d.seq, term, d.source_node)
    )


def test_parse_data_reads_identity_fields() -> None:
    assert parse_data(payload()) == DataIdentity("plc1", "fast", 42, 7, 2, "node-a")


def test_parse_data_ignores_tags_named_like_identity_fields() -> None:
    tricky = payload(values={"slot": 3, "term": 9, "source_node": "evil", "node": "x"})
    assert parse_data(tricky) == DataIdentity("plc1", "fast", 42, 7, 2, "node-a")


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        (b"", BrokerDrop.MALFORMED),
        (b"{}", BrokerDrop.MALFORMED),
        (b"not json", BrokerDrop.MALFORMED),
        (b'{"slot":1}', BrokerDrop.MALFORMED),
        (payload()[:-1], BrokerDrop.MALFORMED),
        (payload(node='pl"c'), BrokerDrop.MALFORMED),  # not a name a config can hold
        (payload().replace(b'"slot":42', b'"slot":' + b"9" * 19), BrokerDrop.OUT_OF_RANGE),
        (payload().replace(b'"slot":42', b'"slot":' + b"9" * 40), BrokerDrop.MALFORMED),
        (payload().replace(b'"slot":42', b'"slot":-1'), BrokerDrop.MALFORMED),
        (payload().replace(b'"term":2', b'"term":1e400'), BrokerDrop.MALFORMED),
    ],
)
def test_parse_data_refuses_foreign_and_hostile_payloads(junk: bytes, reason: BrokerDrop) -> None:
    assert parse_data(junk) == reason


def test_signed_payload_verifies_and_any_change_breaks_it() -> None:
    wire = signed(term=15)
    d = parse_data(wire)
    assert isinstance(d, DataIdentity) and d.term == 15 and d.sig is not None
    assert SIGNER.data_valid(d)
    assert wire.endswith(b'"source_node":"node-a","sig":"' + d.sig.encode() + b'"}')
    forged = parse_data(wire.replace(b'"term":15', b'"term":16'))
    assert isinstance(forged, DataIdentity) and not SIGNER.data_valid(forged)
    assert not Signer(b"x" * 32, "line1").data_valid(d)


def test_signed_payload_is_still_valid_json_for_consumers() -> None:
    doc = orjson.loads(signed(term=3))
    assert doc["term"] == 3 and doc["values"] == {"x": 1.5} and len(doc["sig"]) == 64


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"term": Infinity, "node": "x"}', BrokerDrop.MALFORMED),
        (b'{"term": NaN, "node": "x"}', BrokerDrop.MALFORMED),
        (b"[" * 5000, BrokerDrop.MALFORMED),
        (b'{"term": 1e30, "node": "x"}', BrokerDrop.MALFORMED),
        (b'{"term": true, "node": "x"}', BrokerDrop.MALFORMED),
        (b'{"term": "4", "node": "x"}', BrokerDrop.MALFORMED),
        (b'{"term": 4, "node": 5}', BrokerDrop.MALFORMED),
        (b'{"term": -1, "node": "x"}', BrokerDrop.OUT_OF_RANGE),
        (b'{"term": ' + str(MAX_INT + 1).encode() + b', "node": "x"}', BrokerDrop.OUT_OF_RANGE),
        (b'{"term": 4, "node": "a/b"}', BrokerDrop.BAD_NAME),
        (b'{"term": 4, "node": "x", "sig": 12}', BrokerDrop.MALFORMED),
        (b'"just a string"', BrokerDrop.MALFORMED),
        (b"\xff\xfe", BrokerDrop.MALFORMED),
    ],
)
def test_parse_control_refuses_hostile_messages(raw: bytes, reason: BrokerDrop) -> None:
    assert parse_control(raw) == reason


def test_control_signature_binds_kind_cluster_node_term_and_time() -> None:
    body = SIGNER.control_payload("heartbeat", "node-a", 4, 1000)
    c = parse_control(body)
    assert isinstance(c, Control) and SIGNER.control_valid("heartbeat", c)
    assert not SIGNER.control_valid("state", c)  # a heartbeat is not a state message
    assert not Signer(b"k" * 32, "line2").control_valid("heartbeat", c)
    for field, value in (("term", 5), ("node", "node-b"), ("ts_ms", 1001)):
        doc = orjson.loads(body)
        doc[field] = value
        changed = parse_control(orjson.dumps(doc))
        assert isinstance(changed, Control) and not SIGNER.control_valid("heartbeat", changed)


def test_parse_delivered_is_lenient_for_the_audit() -> None:
    assert parse_delivered(payload()) == Delivered("plc1", "fast", 42, 7, 2, "node-a")
    assert parse_delivered(b"junk") is None


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
        audit.add(Delivered("plc1", "fast", slot, 0, 1, src), at=at)
    assert audit.publishers() == ["a", "b", "a"]
    first = audit.first_after(2.5, "b")
    assert first is not None and first.delivered.slot == 3
    assert audit.first_after(4.5) is None
    assert (audit.messages, audit.lost, audit.duplicates) == (4, 0, 0)
