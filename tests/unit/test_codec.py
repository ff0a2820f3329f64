"""Register codec: every type, word and byte order, scaling, strings, and block decoding."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from tandem.config.hub import TagConfig
from tandem.hub.codec import (
    ERR_DECODE,
    ERR_DISCONNECTED,
    ERR_MODBUS_EXCEPTION_BASE,
    BlockDecoder,
    DecodeError,
    decode_value,
    encode_value,
    modbus_exception_error,
    plan_reads,
)
from tandem.hub.model import Value


def tag(**fields: Any) -> TagConfig:
    fields.setdefault("name", "t")
    fields.setdefault("address", 0)
    return TagConfig(**fields)


@pytest.mark.parametrize(
    ("words", "kind", "expected"),
    [
        ([0xFFFF], "int16", -1),
        ([0x8000], "int16", -32768),
        ([0xFFFF], "uint16", 65535),
        ([0x0001, 0x0000], "int32", 65536),
        ([0xFFFF, 0xFFFE], "int32", -2),
        ([0xFFFF, 0xFFFF], "uint32", 4294967295),
        ([0x4049, 0x0FDB], "float32", pytest.approx(math.pi, rel=1e-6)),
        ([0x4009, 0x21FB, 0x5444, 0x2D18], "float64", math.pi),
    ],
)
def test_decode_value_big_endian_types_decode(words: list[int], kind: str, expected: Value) -> None:
    value = decode_value(tag(type=kind), words)
    assert value == expected
    assert type(value) is (float if kind.startswith("float") else int)


def test_decode_value_little_word_order_swaps_words() -> None:
    words = [0x0FDB, 0x4049]
    assert decode_value(tag(type="float32", word_order="little"), words) == pytest.approx(math.pi)


def test_decode_value_little_byte_order_swaps_bytes_within_words() -> None:
    assert decode_value(tag(type="uint16", byte_order="little"), [0x3412]) == 0x1234
    words = [0x4940, 0xDB0F]
    assert decode_value(tag(type="float32", byte_order="little"), words) == pytest.approx(math.pi)


def test_decode_value_both_orders_little_is_full_reversal() -> None:
    raw = struct.pack("<i", -123456789)
    words = list(struct.unpack(">2H", raw))
    kind = tag(type="int32", word_order="little", byte_order="little")
    assert decode_value(kind, words) == -123456789


def test_decode_value_scale_and_offset_give_float() -> None:
    value = decode_value(tag(type="int16", scale=0.1, offset=-5.0), [250])
    assert isinstance(value, float)
    assert value == pytest.approx(20.0)


def test_decode_value_identity_scale_keeps_int() -> None:
    value = decode_value(tag(type="uint32", scale=1.0, offset=0.0), [0, 7])
    assert value == 7
    assert isinstance(value, int)


def test_decode_value_bool_in_holding_is_nonzero() -> None:
    assert decode_value(tag(type="bool"), [0]) is False
    assert decode_value(tag(type="bool"), [0x0100]) is True


def test_decode_value_bit_picks_one_bit() -> None:
    word = 0b1010_0000_0000_0101
    bits = [decode_value(tag(type="bit", bit=b), [word]) for b in range(16)]
    assert bits == [bool((word >> b) & 1) for b in range(16)]
    assert bits[0] is True and bits[1] is False and bits[15] is True


def test_decode_value_coil_is_bool() -> None:
    assert decode_value(tag(area="coil", type="bool"), [True]) is True
    assert decode_value(tag(area="discrete", type="bool"), [False]) is False


def test_decode_value_string_strips_nuls() -> None:
    words = list(struct.unpack(">4H", b"AB\x00\x00\x00\x00\x00\x00"))
    assert decode_value(tag(type="string", length=4), words) == "AB"
    odd = list(struct.unpack(">2H", b"ABC\x00"))
    assert decode_value(tag(type="string", length=2), odd) == "ABC"


def test_decode_value_string_little_byte_order() -> None:
    words = list(struct.unpack("<2H", b"ABCD"))
    assert decode_value(tag(type="string", length=2, byte_order="little"), words) == "ABCD"


def test_decode_value_invalid_utf8_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_value(tag(type="string", length=1), [0xFFFE])


def test_decode_value_nan_float_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_value(tag(type="float32"), [0x7FC0, 0x0000])


ROUND_TRIP = [
    (dict(type="int16"), -1234),
    (dict(type="uint16", byte_order="little"), 4660),
    (dict(type="int32", word_order="little"), -7),
    (dict(type="uint32", byte_order="little", word_order="little"), 3_000_000_000),
    (dict(type="float32"), 1.5),
    (dict(type="float64", word_order="little"), -2.25),
    (dict(type="int16", scale=0.1, offset=2.0), 12.5),
    (dict(type="string", length=5), "TANDEM-01"),
    (dict(type="bit", bit=7), True),
    (dict(type="bool"), True),
    (dict(area="coil", type="bool"), False),
]


@pytest.mark.parametrize(("fields", "value"), ROUND_TRIP)
def test_encode_value_round_trips_through_decode(fields: dict[str, Any], value: Value) -> None:
    t = tag(**fields)
    words = encode_value(t, value)
    assert len(words) == t.width
    assert all(0 <= w <= 0xFFFF for w in words)
    decoded = decode_value(t, words)
    assert decoded == pytest.approx(value) if isinstance(value, float) else decoded == value


def test_encode_value_string_truncates_to_length() -> None:
    t = tag(type="string", length=2)
    assert decode_value(t, encode_value(t, "ABCDEFG")) == "ABCD"


def test_modbus_exception_error_offsets_the_code() -> None:
    assert modbus_exception_error(2) == ERR_MODBUS_EXCEPTION_BASE + 2 == 2002


def _decode_block(
    tags: list[TagConfig], words: list[int]
) -> tuple[dict[str, Value], dict[str, int]]:
    (block,) = plan_reads(tags)
    values: dict[str, Value] = {}
    errors: dict[str, int] = {}
    BlockDecoder.for_block(block).decode(words, values, errors)
    return values, errors


def test_block_decoder_mixed_tags_decode_at_their_offsets() -> None:
    tags = [
        tag(name="a", address=10),
        tag(name="b", address=11, type="int16"),
        tag(name="c", address=12, type="float32"),
        tag(name="d", address=15),
        tag(name="e", address=14, type="bit", bit=2),
    ]
    words = [7, 0xFFFE, *encode_value(tags[2], 2.5), 0b100, 99]
    values, errors = _decode_block(tags, words)
    assert values == {"a": 7, "b": -2, "c": 2.5, "d": 99, "e": True}
    assert errors == {}


def test_block_decoder_single_plain_tag_decodes() -> None:
    values, _ = _decode_block([tag(name="only", address=3)], [42])
    assert values == {"only": 42}


def test_block_decoder_bad_tag_gets_decode_error_others_survive() -> None:
    tags = [tag(name="ok", address=0), tag(name="bad", address=1, type="float32")]
    values, errors = _decode_block(tags, [5, 0x7F80, 0x0000])  # +inf
    assert values == {"ok": 5}
    assert errors == {"bad": ERR_DECODE}


def test_block_decoder_fail_marks_every_tag() -> None:
    tags = [tag(name="a", address=0), tag(name="b", address=5, type="int32")]
    (block,) = plan_reads(tags)
    errors: dict[str, int] = {}
    BlockDecoder.for_block(block).fail(ERR_DISCONNECTED, errors)
    assert errors == {"a": ERR_DISCONNECTED, "b": ERR_DISCONNECTED}


def test_block_decoder_coils_read_bits_by_offset() -> None:
    tags = [tag(name=f"c{i}", area="coil", type="bool", address=100 + 3 * i) for i in range(3)]
    bits = [i % 3 == 0 and i != 3 for i in range(8)]  # padded like a Modbus bit response
    values, _ = _decode_block(tags, bits)
    assert values == {"c0": True, "c1": False, "c2": True}
