"""Sans-I/O Modbus framing: requests on the wire, replies found among partial and stray frames."""

from __future__ import annotations

import struct

import pytest
from pymodbus.framer import FramerRTU

from tandem.hub.modbus.frames import (
    ReadRequest,
    ReplyKind,
    bits_of,
    encode_request,
    parse_mbap,
    parse_rtu,
    registers_of,
    silent_interval,
)

HOLDING = ReadRequest(unit=3, function=3, start=10, count=2)


def rtu(frame: bytes) -> bytes:
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def test_encode_request_rtu_matches_the_spec_example() -> None:
    # Modbus over Serial Line v1.02, 6.2.2 style: unit 1, read 2 holding registers from 0.
    assert encode_request(ReadRequest(1, 3, 0, 2), "rtu").hex() == "010300000002c40b"


def test_encode_request_mbap_carries_transaction_and_length() -> None:
    frame = encode_request(HOLDING, "mbap", transaction_id=7)
    assert frame == struct.pack(">HHHBBHH", 7, 0, 6, 3, 3, 10, 2)


def test_parse_rtu_partial_frame_waits_for_more() -> None:
    frame = rtu(bytes([3, 3, 4, 0, 1, 0, 2]))
    assert parse_rtu(frame[:5], HOLDING).reply is None
    parsed = parse_rtu(frame, HOLDING)
    assert parsed.reply is not None and parsed.reply.kind is ReplyKind.DATA
    assert registers_of(parsed.reply.data) == (1, 2) and parsed.used == len(frame)


def test_parse_rtu_late_answer_of_another_unit_is_skipped_as_stray() -> None:
    late = rtu(bytes([2, 3, 4, 9, 9, 9, 9]))
    ours = rtu(bytes([3, 3, 4, 0, 5, 0, 6]))
    parsed = parse_rtu(late + ours, HOLDING)
    assert parsed.stray_units == (2,)
    assert parsed.reply is not None and registers_of(parsed.reply.data) == (5, 6)


def test_parse_rtu_noise_before_the_frame_is_hunted_through() -> None:
    ours = rtu(bytes([3, 3, 4, 0, 5, 0, 6]))
    parsed = parse_rtu(b"\xff\x00\x13" + ours, HOLDING)
    assert parsed.reply is not None and registers_of(parsed.reply.data) == (5, 6)


def test_parse_rtu_bad_crc_is_never_a_reply() -> None:
    frame = bytearray(rtu(bytes([3, 3, 4, 0, 5, 0, 6])))
    frame[-1] ^= 0xFF
    assert parse_rtu(bytes(frame), HOLDING).reply is None


def test_parse_rtu_exception_reply_carries_its_code() -> None:
    parsed = parse_rtu(rtu(bytes([3, 0x83, 2])), HOLDING)
    assert parsed.reply is not None and parsed.reply.kind is ReplyKind.EXCEPTION
    assert parsed.reply.exception_code == 2


def test_parse_rtu_same_unit_wrong_length_is_another_requests_answer() -> None:
    other = rtu(bytes([3, 3, 2, 0, 7]))  # one register: the answer to a different read
    parsed = parse_rtu(other, HOLDING)
    assert parsed.reply is None and parsed.stray_units == (3,)


def test_parse_mbap_other_transaction_is_stray_then_ours_found() -> None:
    data = mbap(6, 3, bytes([3, 4, 0, 1, 0, 2])) + mbap(7, 3, bytes([3, 4, 0, 3, 0, 4]))
    parsed = parse_mbap(data, HOLDING, 7)
    assert parsed.stray_units == (3,)
    assert parsed.reply is not None and registers_of(parsed.reply.data) == (3, 4)


def test_parse_mbap_short_byte_count_is_malformed() -> None:
    parsed = parse_mbap(mbap(7, 3, bytes([3, 2, 0, 1])), HOLDING, 7)
    assert parsed.reply is not None and parsed.reply.kind is ReplyKind.MALFORMED


@pytest.mark.parametrize(
    "header", [struct.pack(">HHHB", 1, 5, 6, 3), struct.pack(">HHHB", 1, 0, 900, 3)]
)
def test_parse_mbap_non_modbus_header_breaks_the_stream(header: bytes) -> None:
    assert parse_mbap(header + b"\x00" * 8, HOLDING, 1).broken


def test_silent_interval_is_3_5_characters_up_to_19200_then_fixed() -> None:
    assert silent_interval(9600, 11) == pytest.approx(3.5 * 11 / 9600)
    assert silent_interval(19200, 11) == pytest.approx(3.5 * 11 / 19200)
    assert silent_interval(115200, 11) == pytest.approx(0.00175)


def test_bits_of_least_significant_bit_first() -> None:
    assert bits_of(bytes([0b0000_0101, 0b1]), 9) == [True, False, True] + [False] * 5 + [True]
