"""Codec tests: keepalived 2.2.7 captures byte for byte, and hostile input that must not raise."""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tandem.vrrp.packet import (
    AUTH_NONE,
    AUTH_PASS,
    advert_for,
    auth_matches,
    checksum,
    decode,
    encode,
    encode_ip,
    pass_auth_data,
    split_ip,
)
from tandem.vrrp.types import Advert, Drop, DropReason, InstanceConfig, IpHeader

VECTORS = Path(__file__).parents[3] / "shared" / "vectors" / "keepalived-2.2.7"
SRC = IPv4Address("10.251.0.1")
PEER = IPv4Address("10.251.0.2")
MCAST = IPv4Address("224.0.0.18")


@dataclass(frozen=True, slots=True)
class Capture:
    file: str
    line: int
    packet: bytes


def _load_captures() -> list[Capture]:
    captures: list[Capture] = []
    if not VECTORS.is_dir():
        return captures
    for path in sorted(VECTORS.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                packet = bytes.fromhex(json.loads(line)["ip_packet_hex"])
                captures.append(Capture(path.stem, number, packet))
    return captures


CAPTURES = _load_captures()
needs_vectors = pytest.mark.skipif(
    not CAPTURES, reason=f"keepalived 2.2.7 golden vectors not found in {VECTORS}"
)
# One representative per file keeps the exhaustive truncation / bit-flip tests fast.
FIRST_OF_EACH = [c for c in CAPTURES if c.line == 1]


def _ids(captures: list[Capture]) -> list[str]:
    return [f"{c.file}:{c.line}" for c in captures]


def _split(packet: bytes) -> tuple[IpHeader, bytes]:
    result = split_ip(packet)
    assert not isinstance(result, Drop), result
    return result


def _decode_capture(packet: bytes) -> tuple[IpHeader, Advert]:
    header, payload = _split(packet)
    advert = decode(payload, header.src, header.dst)
    assert isinstance(advert, Advert), advert
    return header, advert


# ---- golden vectors ----


@needs_vectors
@pytest.mark.parametrize("capture", CAPTURES, ids=_ids(CAPTURES))
def test_decode_keepalived_capture_reencodes_byte_identical(capture: Capture) -> None:
    header, advert = _decode_capture(capture.packet)
    again = encode_ip(
        advert, header.src, header.dst, ident=header.ident, ttl=header.ttl, tos=header.tos
    )
    assert again == capture.packet


@needs_vectors
@pytest.mark.parametrize("capture", CAPTURES, ids=_ids(CAPTURES))
def test_encode_keepalived_capture_computed_checksum_matches_wire(capture: Capture) -> None:
    header, advert = _decode_capture(capture.packet)
    rebuilt = encode_ip(
        replace(advert, checksum=None),
        header.src,
        header.dst,
        ident=header.ident,
        ttl=header.ttl,
        tos=header.tos,
    )
    assert rebuilt == capture.packet


@needs_vectors
@pytest.mark.parametrize("capture", CAPTURES, ids=_ids(CAPTURES))
def test_split_ip_keepalived_capture_has_keepalived_header(capture: Capture) -> None:
    header, payload = _split(capture.packet)
    assert (header.ttl, header.tos, header.header_length) == (255, 0xC0, 20)
    assert header.src == SRC
    assert header.dst == (MCAST if capture.file.startswith("mc_") else PEER)
    assert header.ident == capture.line  # keepalived counts IP IDs up from 1
    assert header.total_length == len(capture.packet) == 20 + len(payload)
    assert checksum(capture.packet[:20]) == 0


@needs_vectors
def test_decode_keepalived_captures_fields_match_readme() -> None:
    by_file = {c.file: _decode_capture(c.packet)[1] for c in FIRST_OF_EACH}
    v2_pass = by_file["v2_pass"]
    assert (v2_pass.version, v2_pass.vrid, v2_pass.priority, v2_pass.interval) == (2, 51, 100, 1.0)
    assert (v2_pass.auth_type, v2_pass.auth_data) == (AUTH_PASS, b"abcdefgh")
    assert v2_pass.addresses == (IPv4Address("192.160.127.254"),)
    v2_noauth = by_file["v2_noauth"]
    assert (v2_noauth.auth_type, v2_noauth.auth_data) == (AUTH_NONE, bytes(8))
    assert len(v2_noauth.addresses) == 2
    v3_fast = by_file["v3_fast"]
    assert (v3_fast.version, v3_fast.priority, v3_fast.interval) == (3, 200, 0.1)
    assert by_file["v3_pass"].auth_data == b""


@needs_vectors
def test_decode_keepalived_captures_last_advert_resigns_with_priority_zero() -> None:
    last: dict[str, Capture] = {}
    for capture in CAPTURES:
        last[capture.file] = capture
    assert last
    for capture in last.values():
        assert _decode_capture(capture.packet)[1].priority == 0, capture.file


@needs_vectors
@pytest.mark.parametrize("capture", FIRST_OF_EACH, ids=_ids(FIRST_OF_EACH))
def test_decode_v3_unicast_capture_with_multicast_pseudo_header_fails_checksum(
    capture: Capture,
) -> None:
    header, payload = _split(capture.packet)
    advert = decode(payload, header.src, header.dst)
    assert isinstance(advert, Advert)
    other_dst = PEER if header.dst == MCAST else MCAST
    result = decode(payload, header.src, other_dst)
    if advert.version == 3:
        assert isinstance(result, Drop)
        assert result.reason is DropReason.BAD_CHECKSUM
    else:
        assert result == advert  # v2 has no pseudo-header


# ---- malformed input ----


@needs_vectors
@pytest.mark.parametrize("capture", FIRST_OF_EACH, ids=_ids(FIRST_OF_EACH))
def test_split_ip_every_truncation_returns_drop(capture: Capture) -> None:
    for length in range(len(capture.packet)):
        result = split_ip(capture.packet[:length])
        assert isinstance(result, Drop), length
        expected = DropReason.TOO_SHORT if length < 20 else DropReason.BAD_LENGTH
        assert result.reason is expected, (length, result)


@needs_vectors
@pytest.mark.parametrize("capture", FIRST_OF_EACH, ids=_ids(FIRST_OF_EACH))
def test_decode_every_truncation_returns_too_short(capture: Capture) -> None:
    header, payload = _split(capture.packet)
    for length in range(len(payload)):
        result = decode(payload[:length], header.src, header.dst)
        assert isinstance(result, Drop), length
        assert result.reason is DropReason.TOO_SHORT, (length, result)


@needs_vectors
@pytest.mark.parametrize("capture", FIRST_OF_EACH, ids=_ids(FIRST_OF_EACH))
def test_decode_trailing_byte_returns_bad_length(capture: Capture) -> None:
    header, payload = _split(capture.packet)
    result = decode(payload + b"\x00", header.src, header.dst)
    assert isinstance(result, Drop)
    assert result.reason is DropReason.BAD_LENGTH


@needs_vectors
@pytest.mark.parametrize("capture", FIRST_OF_EACH, ids=_ids(FIRST_OF_EACH))
def test_decode_every_single_bit_flip_is_detected_or_harmless(capture: Capture) -> None:
    header, payload = _split(capture.packet)
    for bit in range(len(payload) * 8):
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 1 << (bit % 8)
        result = decode(bytes(flipped), header.src, header.dst)
        byte = bit // 8
        if byte == 0 and bit % 8 >= 4:
            assert isinstance(result, Drop) and result.reason in (
                DropReason.BAD_VERSION,
                DropReason.TOO_SHORT,
                DropReason.BAD_LENGTH,
                DropReason.BAD_CHECKSUM,
            ), (bit, result)
        elif byte == 0:
            assert result == Drop(DropReason.BAD_TYPE, f"type {flipped[0] & 0x0F}"), bit
        elif byte == 3:
            assert isinstance(result, Drop), bit
            assert result.reason in (DropReason.TOO_SHORT, DropReason.BAD_LENGTH), (bit, result)
        else:
            # Every other bit, v3's reserved interval nibble included, is under the checksum.
            assert isinstance(result, Drop), bit
            assert result.reason is DropReason.BAD_CHECKSUM, (bit, result)


def test_decode_version_four_returns_bad_version() -> None:
    payload = bytes((0x41, 51, 100, 0, 0, 1, 0, 0)) + bytes(8)
    result = decode(payload, SRC, PEER)
    assert isinstance(result, Drop)
    assert result.reason is DropReason.BAD_VERSION


@pytest.mark.parametrize("kind", [0, 2, 15])
def test_decode_non_advert_type_returns_bad_type(kind: int) -> None:
    payload = bytes((0x20 | kind, 51, 100, 0, 0, 1, 0, 0)) + bytes(8)
    result = decode(payload, SRC, PEER)
    assert isinstance(result, Drop)
    assert result.reason is DropReason.BAD_TYPE


def test_split_ip_other_protocol_returns_not_vrrp() -> None:
    advert = Advert(version=3, vrid=1, priority=100, interval=1.0, addresses=())
    packet = bytearray(encode_ip(advert, SRC, PEER, ident=1))
    packet[9] = 17  # UDP
    result = split_ip(bytes(packet))
    assert isinstance(result, Drop)
    assert result.reason is DropReason.NOT_VRRP


@pytest.mark.parametrize(("first_byte", "why"), [(0x65, "IPv6 version"), (0x44, "IHL of 4 words")])
def test_split_ip_bad_version_or_ihl_returns_bad_ip_header(first_byte: int, why: str) -> None:
    advert = Advert(version=3, vrid=1, priority=100, interval=1.0, addresses=())
    packet = bytearray(encode_ip(advert, SRC, PEER, ident=1))
    packet[0] = first_byte
    result = split_ip(bytes(packet))
    assert isinstance(result, Drop), why
    assert result.reason is DropReason.BAD_IP_HEADER, why


def test_split_ip_with_options_returns_payload_after_options() -> None:
    advert = Advert(version=3, vrid=9, priority=100, interval=1.0, addresses=(SRC,))
    plain = encode_ip(advert, SRC, PEER, ident=7)
    with_options = bytearray(b"\x46" + plain[1:20] + b"\x01\x01\x01\x00" + plain[20:])
    struct.pack_into("!H", with_options, 2, len(with_options))
    header, payload = _split(bytes(with_options))
    assert header.header_length == 24
    assert payload == plain[20:]


def test_split_ip_total_length_disagrees_returns_bad_length() -> None:
    advert = Advert(version=3, vrid=1, priority=100, interval=1.0, addresses=())
    packet = encode_ip(advert, SRC, PEER, ident=1)
    result = split_ip(packet + b"\x00\x00")
    assert isinstance(result, Drop)
    assert result.reason is DropReason.BAD_LENGTH


def test_decode_random_bytes_never_raises() -> None:
    rng = random.Random(20240611)
    outcomes: set[str] = set()
    for _ in range(20000):
        length = rng.randrange(0, 64)
        data = bytes(rng.getrandbits(8) for _ in range(length))
        if length and rng.random() < 0.5:
            # Bias towards plausible headers so the deeper checks get exercised too.
            data = bytes((rng.choice((0x21, 0x31, 0x11)),)) + data[1:]
        result = decode(data, SRC, PEER)
        assert isinstance(result, Advert | Drop)
        outcomes.add(type(result).__name__ if isinstance(result, Advert) else result.reason)
        split = split_ip(data)
        assert isinstance(split, Drop | tuple)
    assert {DropReason.TOO_SHORT, DropReason.BAD_TYPE, DropReason.BAD_CHECKSUM} <= outcomes


def test_decode_random_valid_adverts_roundtrip() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        version = rng.choice((2, 3))
        addresses = tuple(IPv4Address(rng.getrandbits(32)) for _ in range(rng.randrange(0, 20)))
        interval = float(rng.randrange(1, 256)) if version == 2 else rng.randrange(1, 4096) / 100
        advert = Advert(
            version=version,
            vrid=rng.randrange(1, 256),
            priority=rng.randrange(0, 256),
            interval=interval,
            addresses=addresses,
            auth_type=rng.choice((0, 1)) if version == 2 else 0,
            auth_data=bytes(rng.getrandbits(8) for _ in range(8)) if version == 2 else b"",
        )
        dst = rng.choice((PEER, MCAST))
        wire = encode(advert, SRC, dst)
        decoded = decode(wire, SRC, dst)
        assert isinstance(decoded, Advert), decoded
        assert replace(decoded, checksum=None) == advert
        assert encode(decoded, SRC, dst) == wire


def test_decode_v3_reserved_interval_bits_are_ignored() -> None:
    advert = Advert(version=3, vrid=1, priority=100, interval=2.5, addresses=())
    wire = bytearray(encode(advert, SRC, PEER))
    wire[4] |= 0xF0
    wire[6:8] = b"\x00\x00"
    pseudo = SRC.packed + PEER.packed + struct.pack("!BBH", 0, 112, len(wire))
    wire[6:8] = struct.pack("!H", checksum(pseudo + bytes(wire)))
    decoded = decode(bytes(wire), SRC, PEER)
    assert isinstance(decoded, Advert)
    assert decoded.interval == 2.5


@pytest.mark.parametrize(
    "advert",
    [
        Advert(version=4, vrid=1, priority=1, interval=1.0, addresses=()),
        Advert(version=2, vrid=1, priority=1, interval=1.0, addresses=(), auth_data=b"short"),
        Advert(version=2, vrid=1, priority=1, interval=256.0, addresses=(), auth_data=bytes(8)),
        Advert(version=3, vrid=1, priority=1, interval=41.0, addresses=()),
        Advert(version=3, vrid=1, priority=300, interval=1.0, addresses=()),
    ],
)
def test_encode_invalid_own_advert_raises_value_error(advert: Advert) -> None:
    with pytest.raises(ValueError):
        encode(advert, SRC, PEER)


# ---- auth and own adverts ----


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        (b"abcdefgh", b"abcdefgh"),
        (b"abcdefghijk", b"abcdefgh"),
        (b"abc", b"abc\x00\x00\x00\x00\x00"),
        (b"", bytes(8)),
    ],
)
def test_pass_auth_data_password_cut_and_padded_to_eight(password: bytes, expected: bytes) -> None:
    assert pass_auth_data(password) == expected


def test_auth_matches_equal_and_different_data() -> None:
    assert auth_matches(b"abcdefgh", b"abcdefgh")
    assert not auth_matches(b"abcdefgh", b"abcdefgX")
    assert not auth_matches(b"abcdefgh", b"abc")


def _config(**overrides: object) -> InstanceConfig:
    base: dict[str, object] = {
        "name": "VI_1",
        "vrid": 51,
        "priority": 100,
        "advert_interval": 1.0,
        "local_address": SRC,
        "vips": (IPv4Interface("192.160.127.254/17"),),
    }
    base.update(overrides)
    return InstanceConfig(**base)  # type: ignore[arg-type]


@needs_vectors
def test_advert_for_seed_config_matches_keepalived_capture() -> None:
    capture = next(c for c in CAPTURES if c.file == "v2_pass")
    config = _config(auth_pass=b"abcdefgh")
    packet = encode_ip(advert_for(config, 100, 1.0), SRC, PEER, ident=capture.line)
    assert packet == capture.packet


@needs_vectors
def test_advert_for_v3_unicast_matches_keepalived_capture() -> None:
    capture = next(c for c in CAPTURES if c.file == "v3_noauth")
    config = _config(version=3, auth_pass=b"ignored!")
    packet = encode_ip(advert_for(config, 100, 1.0), SRC, PEER, ident=capture.line)
    assert packet == capture.packet


def test_advert_for_v2_without_password_has_zero_auth() -> None:
    advert = advert_for(_config(), 90, 1.0)
    assert (advert.version, advert.priority, advert.interval) == (2, 90, 1.0)
    assert (advert.auth_type, advert.auth_data) == (AUTH_NONE, bytes(8))
    assert advert.addresses == (IPv4Address("192.160.127.254"),)
    assert advert.checksum is None
    assert len(encode(advert, SRC, PEER)) == 8 + 4 + 8


def test_advert_for_v3_has_no_auth_data() -> None:
    advert = advert_for(_config(version=3, auth_pass=b"secret"), 200, 0.1)
    assert (advert.version, advert.auth_type, advert.auth_data) == (3, AUTH_NONE, b"")
    assert len(encode(advert, SRC, PEER)) == 8 + 4
