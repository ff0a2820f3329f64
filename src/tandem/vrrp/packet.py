"""VRRP v2/v3 over IPv4 on the wire: split the IP header, decode, encode, authenticate."""

from __future__ import annotations

import hmac
import struct
from ipaddress import IPv4Address

from tandem.vrrp.types import (
    VRRP_PROTOCOL,
    VRRP_TTL,
    Advert,
    Drop,
    DropReason,
    InstanceConfig,
    IpHeader,
)

__all__ = [
    "AUTH_NONE",
    "AUTH_PASS",
    "IP_TOS_KEEPALIVED",
    "advert_for",
    "auth_matches",
    "checksum",
    "decode",
    "encode",
    "encode_ip",
    "pass_auth_data",
    "split_ip",
]

IPV4_MIN_HEADER = 20  # RFC 791 §3.1: IHL of 5 words
VRRP_HEADER = 8  # RFC 3768 §5.1 / RFC 5798 §5.1: fixed part before the addresses
V2_AUTH_DATA = 8  # RFC 3768 §5.3.10: two words of authentication data, always present
ADVERT_TYPE = 1  # RFC 3768 §5.3.2 / RFC 5798 §5.2.2: the only defined type
AUTH_NONE = 0  # RFC 3768 §5.3.6
AUTH_PASS = 1  # RFC 2338 §5.3.6 simple text password, kept by keepalived for v2
V3_INTERVAL_MASK = 0x0FFF  # RFC 5798 §5.2.7: 12 bits, the top 4 are reserved
IP_TOS_KEEPALIVED = 0xC0  # keepalived sends with IPTOS_PREC_INTERNETCONTROL


def checksum(data: bytes) -> int:
    """RFC 1071 ones' complement sum; 0 when data already carries a valid checksum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPv4Address, dst: IPv4Address, length: int) -> bytes:
    # RFC 5798 §5.2.8: v3 covers an IPv4 pseudo-header, like UDP.
    return src.packed + dst.packed + struct.pack("!BBH", 0, VRRP_PROTOCOL, length)


def split_ip(packet: bytes) -> tuple[IpHeader, bytes] | Drop:
    """Take apart an IPv4 packet from a raw socket; the VRRP receive checks need its TTL and length.

    The header checksum is not verified: the kernel already dropped packets where it is wrong.
    """
    if len(packet) < IPV4_MIN_HEADER:
        return Drop(DropReason.TOO_SHORT, f"{len(packet)} bytes, no room for an IPv4 header")
    version_ihl, tos, total_length, ident, _frag, ttl, protocol, _csum = struct.unpack_from(
        "!BBHHHBBH", packet
    )
    if version_ihl >> 4 != 4:
        return Drop(DropReason.BAD_IP_HEADER, f"IP version {version_ihl >> 4}")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_MIN_HEADER:
        return Drop(DropReason.BAD_IP_HEADER, f"IHL {header_length} bytes")
    if header_length > len(packet):
        return Drop(DropReason.TOO_SHORT, f"IHL {header_length} > {len(packet)} bytes")
    if protocol != VRRP_PROTOCOL:
        return Drop(DropReason.NOT_VRRP, f"IP protocol {protocol}")
    if total_length != len(packet):
        return Drop(DropReason.BAD_LENGTH, f"total length {total_length} != {len(packet)} received")
    header = IpHeader(
        src=IPv4Address(packet[12:16]),
        dst=IPv4Address(packet[16:20]),
        ttl=ttl,
        ident=ident,
        tos=tos,
        total_length=total_length,
        header_length=header_length,
    )
    return header, packet[header_length:total_length]


def _expected_length(version: int, naddr: int) -> int:
    auth = V2_AUTH_DATA if version == 2 else 0
    return VRRP_HEADER + 4 * naddr + auth


def decode(payload: bytes, src: IPv4Address, dst: IPv4Address) -> Advert | Drop:
    """Parse one VRRP message; anything a peer can send becomes a Drop, never an exception.

    `src` and `dst` are the IP addresses it travelled with: v3's checksum covers them.
    """
    if len(payload) < VRRP_HEADER:
        return Drop(DropReason.TOO_SHORT, f"{len(payload)} bytes, need {VRRP_HEADER}")
    version_type, vrid, priority, naddr = payload[0], payload[1], payload[2], payload[3]
    version, kind = version_type >> 4, version_type & 0x0F
    if version not in (2, 3):
        return Drop(DropReason.BAD_VERSION, f"version {version}")
    if kind != ADVERT_TYPE:
        return Drop(DropReason.BAD_TYPE, f"type {kind}")
    expected = _expected_length(version, naddr)
    if len(payload) != expected:
        short = len(payload) < expected
        reason = DropReason.TOO_SHORT if short else DropReason.BAD_LENGTH
        return Drop(reason, f"{len(payload)} bytes, {naddr} addresses need {expected}")
    covered = payload if version == 2 else _pseudo_header(src, dst, len(payload)) + payload
    if checksum(covered) != 0:
        return Drop(DropReason.BAD_CHECKSUM, f"checksum {payload[6] << 8 | payload[7]:#06x}")
    addresses = tuple(
        IPv4Address(payload[offset : offset + 4])
        for offset in range(VRRP_HEADER, VRRP_HEADER + 4 * naddr, 4)
    )
    wire_checksum = payload[6] << 8 | payload[7]
    if version == 2:
        return Advert(
            version=2,
            vrid=vrid,
            priority=priority,
            interval=float(payload[5]),
            addresses=addresses,
            auth_type=payload[4],
            auth_data=payload[expected - V2_AUTH_DATA : expected],
            checksum=wire_checksum,
        )
    centiseconds = (payload[4] << 8 | payload[5]) & V3_INTERVAL_MASK
    return Advert(
        version=3,
        vrid=vrid,
        priority=priority,
        interval=centiseconds / 100,
        addresses=addresses,
        checksum=wire_checksum,
    )


def _interval_field(advert: Advert) -> bytes:
    if advert.version == 2:
        seconds = round(advert.interval)
        if not 0 <= seconds <= 0xFF:
            raise ValueError(f"v2 advert interval {advert.interval} s is not 0..255 whole seconds")
        return bytes((advert.auth_type, seconds))
    centiseconds = round(advert.interval * 100)
    if not 0 <= centiseconds <= V3_INTERVAL_MASK:
        raise ValueError(f"v3 advert interval {advert.interval} s is not 0..40.95 s")
    return struct.pack("!H", centiseconds)


def encode(advert: Advert, src: IPv4Address, dst: IPv4Address) -> bytes:
    """Build the VRRP message; raises ValueError only for adverts we built wrongly ourselves.

    A decoded advert keeps its wire checksum, so decode -> encode reproduces the bytes exactly.
    """
    if advert.version not in (2, 3):
        raise ValueError(f"VRRP version {advert.version} is not 2 or 3")
    if not (0 <= advert.vrid <= 0xFF and 0 <= advert.priority <= 0xFF):
        raise ValueError(f"vrid {advert.vrid} / priority {advert.priority} out of 0..255")
    if len(advert.addresses) > 0xFF:
        raise ValueError(f"{len(advert.addresses)} addresses do not fit one advert")
    head = bytes(
        (advert.version << 4 | ADVERT_TYPE, advert.vrid, advert.priority, len(advert.addresses))
    )
    body = b"".join(address.packed for address in advert.addresses)
    if advert.version == 2:
        if len(advert.auth_data) != V2_AUTH_DATA:
            raise ValueError(f"v2 auth data must be {V2_AUTH_DATA} bytes")
        body += advert.auth_data
    interval = _interval_field(advert)
    if advert.checksum is not None:
        return head + interval + struct.pack("!H", advert.checksum) + body
    unsummed = head + interval + b"\x00\x00" + body
    if advert.version == 3:
        unsummed_covered = _pseudo_header(src, dst, len(unsummed)) + unsummed
    else:
        unsummed_covered = unsummed
    return head + interval + struct.pack("!H", checksum(unsummed_covered)) + body


def encode_ip(
    advert: Advert,
    src: IPv4Address,
    dst: IPv4Address,
    *,
    ident: int,
    ttl: int = VRRP_TTL,
    tos: int = IP_TOS_KEEPALIVED,
) -> bytes:
    """A whole IPv4 packet as keepalived sends it (no DF, no options), for IP_HDRINCL sockets."""
    payload = encode(advert, src, dst)
    total_length = IPV4_MIN_HEADER + len(payload)
    fields = (0x45, tos, total_length, ident & 0xFFFF, 0, ttl, VRRP_PROTOCOL)
    unsummed = struct.pack("!BBHHHBBH", *fields, 0) + src.packed + dst.packed
    header = struct.pack("!BBHHHBBH", *fields, checksum(unsummed)) + src.packed + dst.packed
    return header + payload


def pass_auth_data(password: bytes) -> bytes:
    """keepalived's PASS auth data: the password cut to 8 bytes, zero padded."""
    return password[:V2_AUTH_DATA].ljust(V2_AUTH_DATA, b"\x00")


def auth_matches(expected: bytes, got: bytes) -> bool:
    """Constant-time comparison, so a peer cannot probe the password byte by byte."""
    return hmac.compare_digest(expected, got)


def advert_for(config: InstanceConfig, priority: int, interval: float) -> Advert:
    """Our own advert for `config`; v3 carries no auth data because keepalived ignores it there."""
    addresses = tuple(vip.ip for vip in config.vips)
    if config.version == 3:
        return Advert(
            version=3, vrid=config.vrid, priority=priority, interval=interval, addresses=addresses
        )
    if config.auth_pass is not None:
        auth_type, auth_data = AUTH_PASS, pass_auth_data(config.auth_pass)
    else:
        auth_type, auth_data = AUTH_NONE, bytes(V2_AUTH_DATA)
    return Advert(
        version=2,
        vrid=config.vrid,
        priority=priority,
        interval=interval,
        addresses=addresses,
        auth_type=auth_type,
        auth_data=auth_data,
    )
