"""Property tests for the other parsers of outside input, at any example count.

Broker payloads (data and control), the YAML config, REST and peer-link bodies, Modbus
replies (MBAP and RTU framing, then the decode into tag values), write and read requests,
write intents and the PLC's write confirmations: for any input each one gives
its typed result or its documented error, and nothing else escapes. Like tests/fuzz/properties.py,
each property is a function of the example count (the suite runs a few hundred, bench/fuzz.py
100,000).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.api.login import LoginRequest
from tandem.config.hub import TagConfig, load_config_text
from tandem.errors import ConfigError
from tandem.ha.peer import HandoverRequest, PeerState
from tandem.ha.wire import BrokerDrop, Control, DataIdentity, parse_control, parse_data
from tandem.ha.writes import IntentMessage
from tandem.hub.codec import BlockDecoder, plan_reads
from tandem.hub.modbus.frames import (
    Parsed,
    ReadRequest,
    ReplyKind,
    WriteRequest,
    parse_mbap,
    parse_rtu,
)
from tandem.hub.modbus.writer import WriteOutcome, judge
from tandem.writes.requests import ReadBody, WriteBody, readable_uuid
from tests.fuzz.properties import Property, _settings

# ---- JSON-shaped input: what a hostile broker client or HTTP client would send --------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
_data_fields = ("node", "group", "slot", "seq", "term", "source_node", "sig", "timestamp", "values")
_control_fields = ("node", "term", "kind", "sig", "ts", "cluster", "token", "publishing")


def _shaped(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Objects with the real field names and any values, as JSON (non-finite numbers too)."""
    objects = st.dictionaries(st.sampled_from(fields), _json_values, max_size=len(fields))
    return objects.map(lambda doc: json.dumps(doc, allow_nan=True).encode())


def _payloads(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    deep = st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * (n // 2))
    return st.one_of(st.binary(max_size=600), _shaped(fields), deep)


def broker_data_payloads_never_raise(examples: int) -> None:
    """Any bytes on a data topic: the message's identity or a typed drop reason."""

    @_settings(examples)
    @given(_payloads(_data_fields))
    def check(payload: bytes) -> None:
        assert isinstance(parse_data(payload), DataIdentity | BrokerDrop)

    check()


def broker_control_payloads_never_raise(examples: int) -> None:
    """Any bytes on the state, heartbeat or barrier topic: a Control or a typed drop reason."""

    @_settings(examples)
    @given(_payloads(_control_fields))
    def check(payload: bytes) -> None:
        assert isinstance(parse_control(payload), Control | BrokerDrop)

    check()


_bodies: tuple[type[Any], ...] = (LoginRequest, HandoverRequest, PeerState)


def rest_bodies_only_raise_validation_error(examples: int) -> None:
    """Any bytes as the body of POST /login, the peer handover or the peer state stream."""
    fields = tuple(f for model in _bodies for f in model.model_fields)

    @_settings(examples)
    @given(st.sampled_from(_bodies), _payloads(fields))
    def check(model: type[Any], body: bytes) -> None:
        try:
            parsed = model.model_validate_json(body)
        except ValidationError:
            return
        assert isinstance(parsed, model)

    check()


# ---- the YAML config ------------------------------------------------------------------------

VALID_CONFIG: dict[str, Any] = {
    "node": "edge-a",
    "data_dir": "/tmp/tandem-fuzz",
    "mqtt": {"host": "127.0.0.1", "port": 1883},
    "devices": [
        {
            "name": "plc1",
            "host": "127.0.0.1",
            "port": 502,
            "groups": [
                {
                    "name": "fast",
                    "interval": 0.1,
                    "tags": [
                        {"name": "t0", "address": 0},
                        {"name": "t1", "address": 1, "type": "float32", "word_order": "little"},
                    ],
                }
            ],
        }
    ],
}
_yaml_tokens = st.sampled_from(
    [
        "node:", "devices:", "groups:", "tags:", "- ", "  ", "\n", "name:", "address:", "type:",
        "interval:", "mqtt:", "port:", "host:", "ha:", "vrrp:", "{", "}", "[", "]", ",", ":",
        "&a", "*a", "!!python/object:os.system", "!!binary", "~", "null", "1e999", ".nan",
        "-1", "65536", "0x10", "'", '"', "#", "? ", "---", "...", "%YAML 1.1", "\t", "\x00",
        "\u00e9", "<<: *a", "2024-02-30", "0000-01-01", "2001-12-14t21:59:43.10+99:99", "&b [*b]",
    ]
)  # fmt: skip


def _mutated_config() -> st.SearchStrategy[str]:
    """The valid config with one field replaced by any JSON-shaped value, as YAML."""

    def mutate(doc_path: tuple[int, Any]) -> str:
        index, value = doc_path
        doc = json.loads(json.dumps(VALID_CONFIG))
        slots: list[tuple[dict[str, Any], str]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key in list(node):
                    slots.append((node, key))
                    walk(node[key])
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(doc)
        parent, key = slots[index % len(slots)]
        parent[key] = value
        return yaml.safe_dump(doc)

    return st.tuples(st.integers(min_value=0), _json_values).map(mutate)


def yaml_config_only_raises_config_error(examples: int) -> None:
    """Any text as the node's YAML config: a config, or ConfigError with file and line."""
    texts = st.one_of(
        st.lists(_yaml_tokens | st.text(max_size=6), max_size=40).map("".join),
        _mutated_config(),
    )

    @_settings(examples)
    @given(texts)
    def check(text: str) -> None:
        try:
            load_config_text(text, "fuzz.yaml")
        except ConfigError as exc:
            assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)

    check()


# ---- Modbus replies -------------------------------------------------------------------------

_TAGS = [
    TagConfig(name="u16", address=0),
    TagConfig(name="i32", address=1, type="int32", word_order="little"),
    TagConfig(name="f32", address=3, type="float32"),
    TagConfig(name="f64", address=5, type="float64", dword_order="little"),
    TagConfig(name="bit", address=9, type="bit", bit=3),
    TagConfig(name="text", address=10, type="string", length=4),
    TagConfig(name="scaled", address=12, type="int16", scale=0.1, offset=-5),
]
[_BLOCK] = plan_reads(_TAGS)
_DECODER = BlockDecoder.for_block(_BLOCK)
_REQUEST = ReadRequest(unit=1, function=3, start=_BLOCK.start, count=_BLOCK.count)


def _decode_if_data(parsed: Parsed) -> None:
    """What the poller does with a parsed reply: data into tag values, never an exception."""
    assert parsed.used >= 0
    reply = parsed.reply
    if reply is None or reply.kind is not ReplyKind.DATA:
        return
    words = [int.from_bytes(reply.data[i : i + 2], "big") for i in range(0, len(reply.data), 2)]
    values: dict[str, Any] = {}
    errors: dict[str, int] = {}
    _DECODER.decode(words, values, errors)
    assert set(values) | set(errors) == {t.name for t in _TAGS}


def _frames() -> st.SearchStrategy[bytes]:
    """Any bytes, and near-misses of a real reply (right header, wrong lengths or contents)."""
    data_len = _REQUEST.reply_bytes
    near = st.builds(
        lambda tid, length, unit, fc, count, body: (
            tid.to_bytes(2, "big") + b"\x00\x00" + length.to_bytes(2, "big")
            + bytes([unit, fc, count]) + body
        ),
        st.integers(0, 65535),
        st.integers(0, 300),
        st.sampled_from([0, 1, 2, 255]),
        st.sampled_from([3, 0x83, 4, 0]),
        st.sampled_from([0, data_len, data_len - 1, 255]),
        st.binary(max_size=data_len + 4),
    )  # fmt: skip
    return st.one_of(st.binary(max_size=300), near)


def modbus_replies_never_raise(examples: int) -> None:
    """Any bytes from a PLC, MBAP or RTU framed: a Parsed outcome, decoded without escaping."""

    @_settings(examples)
    @given(_frames(), st.integers(0, 65535))
    def check(buffer: bytes, tid: int) -> None:
        _decode_if_data(parse_mbap(buffer, _REQUEST, tid))
        _decode_if_data(parse_rtu(buffer[6:], _REQUEST))

    check()


# ---- tag writes: requests from MQTT/REST, intents over the peer link, the PLC's confirmations --

_WRITE_FIELDS = ("uuid", "node", "group", "tag", "value", "tags")
_WRITES = (
    WriteRequest(1, 5, 8, (1,)),
    WriteRequest(1, 6, 50, (0xBEEF,)),
    WriteRequest(1, 15, 8, (1, 0, 1)),
    WriteRequest(1, 16, 50, (1, 2, 3, 4)),
)


def write_requests_only_raise_validation_error(examples: int) -> None:
    """Any bytes as a write/read request or a peer's intent: the model, or ValidationError;
    the uuid salvage for an error answer never raises."""
    tags = st.lists(
        st.dictionaries(st.sampled_from(("tag", "value", "x")), _json_values, max_size=3),
        max_size=3,
    )
    shaped = st.fixed_dictionaries(
        {}, optional={f: tags if f == "tags" else _json_values for f in _WRITE_FIELDS}
    ).map(lambda doc: json.dumps(doc, allow_nan=True).encode())

    @_settings(examples)
    @given(
        st.sampled_from((WriteBody, ReadBody, IntentMessage)),
        st.one_of(_payloads(_WRITE_FIELDS), shaped),
    )
    def check(model: type[Any], body: bytes) -> None:
        uuid = readable_uuid(body)
        assert uuid is None or isinstance(uuid, str)
        try:
            parsed = model.model_validate_json(body)
        except ValidationError:
            return
        assert isinstance(parsed, model)
        if isinstance(parsed, WriteBody):
            assert parsed.items()

    check()


def modbus_write_replies_never_raise(examples: int) -> None:
    """Any bytes answering a write, MBAP or RTU framed: a Parsed outcome and a judged one."""

    @_settings(examples)
    @given(st.sampled_from(_WRITES), _frames(), st.integers(0, 65535))
    def check(request: WriteRequest, buffer: bytes, tid: int) -> None:
        for parsed in (parse_mbap(buffer, request, tid), parse_rtu(buffer[6:], request)):
            assert isinstance(parsed, Parsed)
            if parsed.reply is not None:
                kind, code = judge(parsed.reply)
                assert kind is not WriteOutcome.DONE or parsed.reply.data == request.echo()
                assert isinstance(code, int)

    check()


INPUT_PROPERTIES: tuple[Property, ...] = (
    broker_data_payloads_never_raise,
    broker_control_payloads_never_raise,
    rest_bodies_only_raise_validation_error,
    yaml_config_only_raises_config_error,
    modbus_replies_never_raise,
    write_requests_only_raise_validation_error,
    modbus_write_replies_never_raise,
)

__all__ = ["INPUT_PROPERTIES"]
