"""Write encoding: every type and order round-trips through the decoder; bad values are refused."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.config.hub import TagConfig
from tandem.hub.codec import (
    DecodeError,
    ValueProblem,
    WriteValueError,
    decode_value,
    encode_write,
    with_bit,
)
from tandem.hub.modbus.frames import (
    ReplyKind,
    WriteRequest,
    encode_request,
    parse_mbap,
    parse_rtu,
)
from tandem.hub.modbus.writer import WriteItem, WriteOutcome, judge, plan_writes

WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4}
NUMBER_TYPES = [*WIDTH, "float32", "float64"]


def tag(**fields: Any) -> TagConfig:
    fields.setdefault("name", "t")
    fields.setdefault("address", 0)
    fields.setdefault("access", "write")
    return TagConfig(**fields)


layouts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(NUMBER_TYPES),
        "word_order": st.sampled_from(["big", "little"]),
        "byte_order": st.sampled_from(["big", "little"]),
    }
)


def _make(layout: dict[str, Any], **extra: Any) -> TagConfig:
    fields = dict(layout)
    dword = extra.pop("dword_order", None)
    if fields["type"] in ("int64", "uint64", "float64"):
        fields["dword_order"] = dword
    return tag(**fields, **extra)


@settings(max_examples=300)
@given(layouts, st.sampled_from([None, "big", "little"]), st.data())
def test_encode_write_any_raw_words_round_trip_through_decoder(
    layout: dict[str, Any], dword: str | None, data: st.DataObject
) -> None:
    t = _make(layout, dword_order=dword)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=t.width, max_size=t.width))
    try:
        value = decode_value(t, words)
    except DecodeError:
        return  # NaN/inf: never published, so never written back
    again = decode_value(t, list(encode_write(t, value)))
    assert again == value
    assert type(again) is type(value)


@settings(max_examples=300)
@given(
    st.sampled_from(["int16", "uint16", "int32", "uint32"]),
    st.sampled_from([0.1, 0.01, 2.0, 0.5, -0.25]),
    st.sampled_from([0.0, 10.0, -273.15]),
    st.data(),
)
def test_encode_write_scaled_integers_invert_scale_and_offset(
    kind: str, scale: float, offset: float, data: st.DataObject
) -> None:
    t = tag(type=kind, scale=scale, offset=offset, word_order="little")
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=t.width, max_size=t.width))
    value = decode_value(t, words)
    assert list(encode_write(t, value)) == words


def test_encode_write_64_bit_integers_stay_exact_in_all_orders() -> None:
    for dword in (None, "big", "little"):
        for order in ("big", "little"):
            t = tag(type="uint64", word_order=order, dword_order=dword)
            assert decode_value(t, list(encode_write(t, 2**64 - 1))) == 2**64 - 1
            t = tag(type="int64", word_order=order, dword_order=dword)
            assert decode_value(t, list(encode_write(t, -(2**63) + 1))) == -(2**63) + 1


def test_encode_write_little_word_order_puts_low_word_first() -> None:
    assert encode_write(tag(type="uint32", word_order="little"), 0x00010002) == (2, 1)
    assert encode_write(tag(type="uint32"), 0x00010002) == (1, 2)
    assert encode_write(tag(type="uint16", byte_order="little"), 0x1234) == (0x3412,)


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"type": "uint16"}, 65536),
        ({"type": "uint16"}, -1),
        ({"type": "int16"}, 32768),
        ({"type": "int32"}, 2**31),
        ({"type": "uint64"}, 2**64),
        ({"type": "int16", "scale": 0.1}, 3276.8),  # raw 32768
        ({"type": "uint16", "offset": 100.0}, 99),  # raw -1
        ({"type": "float32"}, 1e39),
        ({"type": "float64"}, math.inf),
        ({"type": "string", "length": 2}, "12345"),
        ({"type": "string", "length": 2, "string_bytes": "low"}, "abc"),
    ],
)
def test_encode_write_out_of_range_values_are_range_errors(
    fields: dict[str, Any], value: Any
) -> None:
    with pytest.raises(WriteValueError) as caught:
        encode_write(tag(**fields), value)
    assert caught.value.problem is ValueProblem.RANGE


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"type": "uint16"}, "12"),
        ({"type": "uint16"}, True),
        ({"type": "uint16"}, 1.5),  # unscaled integer: no silent rounding
        ({"type": "float32"}, None),
        ({"type": "string", "length": 2}, 12),
        ({"type": "bool"}, 2),
        ({"type": "bit", "bit": 3}, "on"),
        ({"area": "coil", "type": "bool"}, 0.5),
    ],
)
def test_encode_write_wrong_value_types_are_type_errors(fields: dict[str, Any], value: Any) -> None:
    with pytest.raises(WriteValueError) as caught:
        encode_write(tag(**fields), value)
    assert caught.value.problem is ValueProblem.TYPE


def test_encode_write_strings_and_bools_encode_like_the_decoder_reads() -> None:
    t = tag(type="string", length=4)
    assert decode_value(t, list(encode_write(t, "abc"))) == "abc"
    t = tag(type="string", length=4, string_bytes="low")
    assert decode_value(t, list(encode_write(t, "ab"))) == "ab"
    assert encode_write(tag(type="bool"), True) == (1,)
    assert encode_write(tag(area="coil", type="bool"), 0) == (0,)
    assert encode_write(tag(type="bit", bit=5), 1) == (1,)


@given(st.integers(0, 0xFFFF), st.integers(0, 15), st.booleans())
def test_with_bit_changes_only_that_bit(register: int, bit: int, on: bool) -> None:
    t = tag(type="bit", bit=bit)
    result = with_bit(register, bit, on)
    assert decode_value(t, [result]) is on
    assert result & ~(1 << bit) == register & ~(1 << bit)


def test_plan_writes_merges_adjacent_tags_into_multiple_writes() -> None:
    a = tag(name="a", address=50, type="uint32")
    b = tag(name="b", address=52, type="uint16")
    c = tag(name="c", address=60, type="uint16")
    bit = tag(name="bit", address=61, type="bit", bit=2)
    c1 = tag(name="c1", area="coil", type="bool", address=8)
    c2 = tag(name="c2", area="coil", type="bool", address=9)
    items = [
        WriteItem(a, encode_write(a, 70000)),
        WriteItem(b, encode_write(b, 7)),
        WriteItem(c, encode_write(c, 9)),
        WriteItem(bit, encode_write(bit, True)),
        WriteItem(c1, (1,)),
        WriteItem(c2, (0,)),
    ]
    ops = plan_writes(1, items)
    assert [(o.request.function, o.request.start, o.tags) for o in ops] == [
        (16, 50, ("a", "b")),
        (6, 60, ("c",)),
        (6, 61, ("bit",)),
        (15, 8, ("c1", "c2")),
    ]
    assert ops[0].request.values == (1, 4464, 7)
    assert ops[2].bit == 2
    lone = plan_writes(1, [WriteItem(c1, (1,))])
    assert lone[0].request.function == 5


@pytest.mark.parametrize("framing", ["mbap", "rtu"])
@pytest.mark.parametrize(
    "request_",
    [
        WriteRequest(1, 5, 8, (1,)),
        WriteRequest(1, 6, 50, (0xBEEF,)),
        WriteRequest(1, 15, 8, (1, 0, 1, 1, 0, 0, 0, 0, 1)),
        WriteRequest(1, 16, 50, (1, 2, 3)),
    ],
)
def test_write_frames_echo_reply_parses_as_done(framing: str, request_: WriteRequest) -> None:
    frame = encode_request(request_, framing, 7)  # type: ignore[arg-type]
    # A device's confirmation: the header (or unit) plus function and the four echo bytes.
    pdu = bytes((request_.function,)) + request_.echo()
    if framing == "mbap":
        reply = struct.pack(">HHHB", 7, 0, len(pdu) + 1, 1) + pdu
        parsed = parse_mbap(reply, request_, 7)
    else:
        from pymodbus.framer import FramerRTU

        head = bytes((1,)) + pdu
        parsed = parse_rtu(head + FramerRTU.compute_CRC(head).to_bytes(2, "big"), request_)
    assert parsed.reply is not None and parsed.reply.kind is ReplyKind.DATA
    assert judge(parsed.reply) == (WriteOutcome.DONE, 0)
    assert frame  # built without error


def test_write_frames_wrong_echo_is_outcome_unknown() -> None:
    request_ = WriteRequest(1, 6, 50, (5,))
    pdu = bytes((6,)) + struct.pack(">HH", 50, 6)
    reply = struct.pack(">HHHB", 3, 0, len(pdu) + 1, 1) + pdu
    parsed = parse_mbap(reply, request_, 3)
    assert parsed.reply is not None
    assert judge(parsed.reply)[0] is WriteOutcome.UNKNOWN
    exception = struct.pack(">HHHBBB", 3, 0, 3, 1, 0x86, 2)
    parsed = parse_mbap(exception, request_, 3)
    assert parsed.reply is not None
    assert judge(parsed.reply) == (WriteOutcome.REJECTED, 2002)
    assert judge(1002)[0] is WriteOutcome.UNKNOWN
    assert judge(1001)[0] is WriteOutcome.NOT_SENT
    assert judge(1006)[0] is WriteOutcome.REFUSED
