"""The wire form of a data message: stored body plus the tail stamped at send time."""

from __future__ import annotations

import json

import orjson
import pytest

from tandem.hub.model import Sample
from tandem.hub.wire import body_of_message, data_tail, encode_body, encode_payload

TRICKY_NAMES = ["edge-a", 'quo"te', "back\\slash", "tab\tand\nnewline", "\x00\x1f", "ünï😀", ""]


def make(source_node: str = "edge-a", **kw: object) -> Sample:
    fields: dict[str, object] = {
        "node": "plc1",
        "group": "fast",
        "slot": 42,
        "timestamp_ms": 1700,
        "values": {"x": 1.5, "s": 'a"b'},
        "errors": {"y": 1001},
        "seq": 7,
        "source_node": source_node,
        "term": 3,
    }
    fields.update(kw)
    return Sample(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_wire_data_tail_escapes_source_node_exactly_as_orjson(name: str) -> None:
    sample = make(name)
    assert encode_payload(sample) == orjson.dumps(sample.payload())
    assert json.loads(data_tail(1, 2, 3, name, None).replace(b",", b"{", 1))["source_node"] == name


def test_wire_body_plus_tail_is_the_whole_message_in_key_order() -> None:
    sample = make()
    message = encode_body(sample) + data_tail(42, 7, 9, "edge-a", None)
    assert list(json.loads(message)) == [
        "timestamp", "node", "group", "values", "errors", "slot", "seq", "term", "source_node",
    ]  # fmt: skip
    assert json.loads(message)["term"] == 9


def test_wire_data_tail_with_sig_ends_the_message() -> None:
    sig = "0123456789abcdef" * 4
    tail = data_tail(-1, 0, 0, "n", sig)
    assert tail == b',"slot":-1,"seq":0,"term":0,"source_node":"n","sig":"' + sig.encode() + b'"}'


@pytest.mark.parametrize(
    "sig", ["", "ab" * 31, "AB" * 32, "ab" * 33, "g" * 64, 'ab"' + "c" * 61, "é" * 64]
)
def test_wire_data_tail_bad_sig_rejected(sig: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        data_tail(1, 1, 1, "n", sig)


def test_wire_legacy_payload_body_found_even_with_identity_named_tags() -> None:
    sample = make(values={"slot": 1, "term": 2, "source_node": "x"}, source_node='e"v')
    payload = orjson.dumps(sample.payload())
    assert body_of_message(payload) == encode_body(sample)
    assert body_of_message(payload[:-1]) is None
    assert body_of_message(b'{"a":1,"slot":1,"seq":1,"term":1,"source_node":"x"}') is None
    signed = encode_payload(sample, "ab" * 32)
    assert body_of_message(signed) == encode_body(sample)
