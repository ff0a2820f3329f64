"""The test oracle for Neuron's decoding agrees with the tables in Neuron's documentation."""

from __future__ import annotations

import struct

import pytest

from tests.neuron_model import DOUBLE, FLOAT, INT16, STRING, UINT16, UINT32, UINT64, decode, point

WIRE4 = bytes([1, 2, 3, 4])
WIRE8 = bytes(range(1, 9))


def digits(value: int, size: int) -> str:
    return "".join(str(b) for b in value.to_bytes(size, "big"))


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [("", "1234"), ("#LL", "1234"), ("#LB", "2143"), ("#BL", "3412"), ("#BB", "4321")],
)
def test_decode_32_bit_suffix_orders_match_documentation(suffix: str, expected: str) -> None:
    # Docs, Modbus TCP "#ENDIAN": #LL 1,2,3,4 (default), #LB 2,1,4,3, #BL 3,4,1,2, #BB 4,3,2,1.
    assert digits(decode(f"1!400001{suffix}", UINT32, {}, WIRE4), 4) == expected


@pytest.mark.parametrize(
    ("endianess", "expected"), [(1, "1234"), (2, "2143"), (3, "4321"), (4, "3412")]
)
def test_decode_node_endianess_matches_its_labels(endianess: int, expected: str) -> None:
    # modbus-tcp.json: ABCD = 1, BADC = 2, DCBA = 3, CDAB = 4; "ABCD corresponds to 1234".
    assert digits(decode("1!400001", UINT32, {"endianess": endianess}, WIRE4), 4) == expected


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("", "12345678"),
        ("#LL", "12345678"),
        ("#LB", "21436587"),
        ("#BL", "78563412"),
        ("#BB", "87654321"),
        ("#WS", "34127856"),  # tag.h: #WS 3,4,1,2,7,8,5,6
        ("#WR", "56781234"),  # tag.h: #WR 5,6,7,8,1,2,3,4
    ],
)
def test_decode_64_bit_suffix_orders_match_documentation(suffix: str, expected: str) -> None:
    assert digits(decode(f"1!400001{suffix}", UINT64, {}, WIRE8), 8) == expected


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(1, "12345678"), (2, "21436587"), (3, "87654321"), (4, "78563412"), (5, "34127856"),
     (6, "56781234")],
)  # fmt: skip
def test_decode_node_endianess_64_matches_its_labels(setting: int, expected: str) -> None:
    params = {"endianess_64": setting}
    assert digits(decode("1!400001", UINT64, params, WIRE8), 8) == expected


def test_decode_16_bit_default_and_l_keep_the_register_b_swaps() -> None:
    assert decode("1!400001", UINT16, {}, bytes([0x12, 0x34])) == 0x1234
    assert decode("1!400001#L", UINT16, {}, bytes([0x12, 0x34])) == 0x1234
    assert decode("1!400001#B", INT16, {}, bytes([0x12, 0x34])) == 0x3412


def test_decode_float_big_endian_is_ieee() -> None:
    assert decode("1!400001", FLOAT, {}, struct.pack(">f", -2.5)) == -2.5
    assert decode("1!400001", DOUBLE, {}, struct.pack(">d", 1234.5678)) == 1234.5678


def test_point_base_1_and_base_0_addresses() -> None:
    assert point("1!400001", UINT16, 1).start == 0
    assert point("1!400001", UINT16, 0).start == 1
    assert point("1!400000", UINT16, 1).start == 0  # clamped, as modbus_point.c does
    assert point("1!465536", UINT16, 0).start == 65535


@pytest.mark.parametrize(
    ("address", "wire", "expected"),
    [
        ("1!400001.4H", b"ABCD", "ABCD"),
        ("1!400001.4L", b"BADC", "ABCD"),
        ("1!400001.3D", b"\x00A\x00B\x00C", "ABC"),
        ("1!400001.3E", b"A\x00B\x00C\x00", "ABC"),
        ("1!400001.4", b"AB\x00\x00", "AB"),
    ],
)
def test_decode_string_layouts_match_documentation(
    address: str, wire: bytes, expected: str
) -> None:
    assert decode(address, STRING, {}, wire) == expected
