"""Register layouts beyond the basic orders: 64-bit integers and word orders, one-character
registers, rounding, and the access field's validation."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.config.hub import TagConfig
from tandem.hub.codec import decode_value, encode_value, word_permutation

WORDS = [0x0102, 0x0304, 0x0506, 0x0708]


def tag(**fields: Any) -> TagConfig:
    fields.setdefault("name", "t")
    fields.setdefault("address", 0)
    return TagConfig(**fields)


@pytest.mark.parametrize(
    ("kind", "words", "expected"),
    [
        ("int64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
        ("uint64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 2**64 - 1),
        ("uint64", WORDS, 0x0102030405060708),
        ("int64", [0x8000, 0, 0, 0], -(2**63)),
    ],
)
def test_decode_value_64_bit_integers_decode_exactly(
    kind: str, words: list[int], expected: int
) -> None:
    value = decode_value(tag(type=kind), words)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    ("word_order", "dword_order", "expected"),
    [
        ("big", None, 0x0102030405060708),
        ("little", None, 0x0708050603040102),  # full reversal, as before dword_order existed
        ("big", "big", 0x0102030405060708),
        ("little", "little", 0x0708050603040102),
        ("little", "big", 0x0304010207080506),  # words swapped within each half
        ("big", "little", 0x0506070801020304),  # halves swapped
    ],
)
def test_decode_value_64_bit_word_orders_place_words(
    word_order: str, dword_order: str | None, expected: int
) -> None:
    t = tag(type="uint64", word_order=word_order, dword_order=dword_order)
    assert decode_value(t, WORDS) == expected


def test_decode_value_dword_order_with_little_bytes_swaps_bytes_too() -> None:
    t = tag(type="uint64", word_order="big", dword_order="little", byte_order="little")
    assert decode_value(t, WORDS) == 0x0605080702010403


def test_word_permutation_float32_little_ignores_dword_default() -> None:
    assert word_permutation(tag(type="float32", word_order="little")) == [1, 0]


def test_decode_value_float64_with_dword_order_decodes() -> None:
    words = list(struct.unpack(">4H", struct.pack(">d", 1234.5678)))
    swapped = [words[2], words[3], words[0], words[1]]
    assert decode_value(tag(type="float64", dword_order="little"), swapped) == 1234.5678


@pytest.mark.parametrize(
    ("layout", "words", "expected"),
    [
        ("low", [0x0041, 0x0042, 0x0043, 0x0000], "ABC"),
        ("high", [0x4100, 0x4200, 0x4300, 0x0000], "ABC"),
        ("low", [0xFF41, 0x7742], "AB"),  # the other byte of each register is not read
    ],
)
def test_decode_value_one_character_per_register_reads_its_byte(
    layout: str, words: list[int], expected: str
) -> None:
    t = tag(type="string", length=len(words), string_bytes=layout)
    assert decode_value(t, words) == expected


@pytest.mark.parametrize("layout", ["low", "high"])
def test_encode_value_one_character_per_register_round_trips(layout: str) -> None:
    t = tag(type="string", length=6, string_bytes=layout)
    words = encode_value(t, "PUMP")
    assert len(words) == 6
    assert decode_value(t, words) == "PUMP"


def test_decode_value_precision_rounds_floats() -> None:
    words = list(struct.unpack(">2H", struct.pack(">f", 1.1)))
    assert decode_value(tag(type="float32"), words) != 1.1
    assert decode_value(tag(type="float32", precision=2), words) == 1.1


def test_decode_value_precision_rounds_scaled_integers() -> None:
    assert decode_value(tag(type="int16", scale=0.1, precision=1), [123]) == 12.3
    assert decode_value(tag(type="int16", scale=1 / 3, precision=3), [1]) == 0.333


def test_decode_value_precision_leaves_plain_integers_alone() -> None:
    value = decode_value(tag(type="uint16", precision=2), [7])
    assert value == 7
    assert type(value) is int


def test_decode_value_huge_scaled_integer_raises_decode_error() -> None:
    from tandem.hub.codec import DecodeError

    t = tag(type="uint64", scale=1e300)
    with pytest.raises(DecodeError):
        decode_value(t, [0xFFFF] * 4)


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
    st.sampled_from([None, "big", "little"]),
)
def test_encode_value_int64_round_trips_in_every_order(
    value: int, word_order: str, byte_order: str, dword_order: str | None
) -> None:
    t = tag(type="int64", word_order=word_order, byte_order=byte_order, dword_order=dword_order)
    assert decode_value(t, encode_value(t, value)) == value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "int32", "dword_order": "big"}, "dword_order"),
        ({"type": "uint16", "string_bytes": "low"}, "string_bytes"),
        (
            {"type": "string", "length": 2, "string_bytes": "low", "byte_order": "little"},
            "byte_order",
        ),
        ({"type": "string", "length": 2, "precision": 1}, "precision"),
        ({"type": "float32", "precision": 18}, "precision"),
        ({"area": "input", "access": "write"}, "access"),
        ({"area": "discrete", "type": "bool", "access": "read_write"}, "access"),
        ({"access": "sometimes"}, "access"),
    ],
)
def test_tag_config_invalid_layout_option_rejected(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        tag(**fields)
    error = info.value.errors()[0]
    named = error.get("ctx", {}).get("field") or error["loc"][-1]
    assert named == field


def test_tag_config_writable_tables_accept_write_access() -> None:
    assert tag(access="read_write").access == "read_write"
    assert tag(area="coil", type="bool", access="write").access == "write"
    assert tag().access == "read"
