"""What Neuron publishes for a tag, given the bytes its registers hold: a test oracle.

Written step by step after Neuron's C code on a little-endian host, independently of how
Tandem's importer maps a tag: modbus_point.c (address, register count), modbus_req.c
(memcpy of the response, ntohs/ntohl/neu_ntohll, the node's endianess when the tag has no
#suffix), src/adapter/driver/driver.c (the tag's #suffix, then value x decimal + bias) and
the MQTT JSON encoding (precision as "%.Nf"). Host memory is modelled as bytes.

Strings D and E follow Neuron's documentation (one character per register, in the low or
the high byte): Neuron's open-source read path copies those registers unconverted.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT, DOUBLE, BIT, STRING = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13,
)  # fmt: skip
WIDTH = {INT16: 1, UINT16: 1, INT32: 2, UINT32: 2, FLOAT: 2, INT64: 4, UINT64: 4, DOUBLE: 4, BIT: 1}
AREA = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}


@dataclass(frozen=True)
class Point:
    """modbus_point_t: where a tag is and how many registers (or bits) it takes."""

    unit: int
    area: str
    start: int
    registers: int
    endian: str | None  # the #suffix, None when the tag has none (then the node's applies)
    bit: int
    length: int
    layout: str


def point(address: str, type_: int, base: int) -> Point:
    unit, area, number = re.match(r"(\d+)!(\d)(\d+)", address).groups()  # type: ignore[union-attr]
    raw = int(number)
    start = 65535 if raw == 65536 else 0 if raw == 0 and base == 1 else raw - base
    hashed = address.rfind("#")
    endian = address[hashed:] if hashed >= 0 else None
    dot = address.rfind(".")
    bit, length, layout = 0, 0, "H"
    if type_ == BIT and dot >= 0:
        bit = int(address[dot + 1 :])
    if type_ == STRING:
        spec = re.match(r"(\d+)([HLDE]?)", address[dot + 1 :])
        assert spec is not None
        length, layout = int(spec[1]), spec[2] or "H"
    if type_ == STRING:
        registers = length if layout in "DE" else length // 2 + length % 2
    else:
        registers = WIDTH[type_]
    return Point(int(unit), AREA[area], start, registers, endian, bit, length, layout)


# --- byte shuffles, as the C helpers do them on memory ----------------------------------------


def _pairs_swapped(mem: bytes) -> bytes:  # neu_ntohs_p on each 16-bit half
    return bytes(mem[i ^ 1] for i in range(len(mem)))


def _pick(mem: bytes, order: list[int]) -> bytes:  # out[i] = in[order[i]]
    return bytes(mem[i] for i in order)


def convert_endianess(mem: bytes, endianess: int) -> bytes:
    """modbus_convert_endianess (modbus_point.c): 1 ABCD, 2 BADC, 3 DCBA, 4 CDAB."""
    if endianess == 4:
        return _pairs_swapped(mem[::-1])  # htonl, then ntohs on each half
    if endianess == 2:
        return _pairs_swapped(mem)
    if endianess == 3:
        return mem[::-1]
    return mem


HTONLB = [1, 0, 3, 2, 5, 4, 7, 6]
HTONBL = [6, 7, 4, 5, 2, 3, 0, 1]
HTONWS = [2, 3, 0, 1, 6, 7, 4, 5]
HTONWR = [4, 5, 6, 7, 0, 1, 2, 3]


def convert_endianess_64(mem: bytes, endianess: int) -> bytes:
    """modbus_convert_endianess_64: 1 LL, 2 LB, 3 BB, 4 BL, 5 WS, 6 WR."""
    order = {2: HTONLB, 4: HTONBL, 5: HTONWS, 6: HTONWR}.get(endianess)
    if endianess == 3:
        return mem[::-1]
    return _pick(mem, order) if order else mem


def _host(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def decode(address: str, type_: int, params: dict[str, Any], wire: bytes) -> Any:
    """The value Neuron hands to its apps for ``wire`` (the tag's registers as received)."""
    p = point(address, type_, params.get("address_base", 1))
    if p.area in ("coil", "discrete"):
        return wire[0] & 1
    if type_ == BIT:
        v16 = int.from_bytes(wire[0:2], "big")  # htons(*(uint16_t *) bytes) on little-endian
        return (v16 >> p.bit) & 1
    if type_ == STRING:
        return _string(p, wire)
    mem = wire[: p.registers * 2]
    if p.registers == 1:
        value = _host(int.from_bytes(mem, "big"), 2)  # ntohs
        if p.endian == "#B":
            value = value[::-1]  # driver.c: htons
    elif p.registers == 2:
        if p.endian is None:
            mem = convert_endianess(mem, params.get("endianess", 1))
        value = _host(int.from_bytes(mem, "big"), 4)  # ntohl
        value = _tag_endian_32(value, p.endian)
    else:
        if p.endian is None:
            mem = convert_endianess_64(mem, params.get("endianess_64", 1))
        value = _host(int.from_bytes(mem, "big"), 8)  # neu_ntohll
        value = _tag_endian_64(value, p.endian)
    fmt = {INT16: "<h", UINT16: "<H", INT32: "<i", UINT32: "<I", FLOAT: "<f",
           INT64: "<q", UINT64: "<Q", DOUBLE: "<d"}[type_]  # fmt: skip
    (number,) = struct.unpack(fmt, value)
    return number


def _tag_endian_32(mem: bytes, endian: str | None) -> bytes:
    """driver.c read_report_group, 32-bit case, on host memory."""
    if endian == "#LB":
        return _pairs_swapped(mem)
    if endian == "#BB":
        return mem[::-1]  # htonl
    if endian == "#BL":
        return _pairs_swapped(mem[::-1])
    return mem


def _tag_endian_64(mem: bytes, endian: str | None) -> bytes:
    if endian in ("#B", "#BB"):
        return mem[::-1]
    order = {"#LB": HTONLB, "#BL": HTONBL, "#WS": HTONWS, "#WR": HTONWR}.get(endian or "")
    return _pick(mem, order) if order else mem


def _string(p: Point, wire: bytes) -> str:
    data = wire[: p.registers * 2]
    if p.layout == "D":
        data = bytes(data[i + 1] for i in range(0, len(data), 2))
    elif p.layout == "E":
        data = bytes(data[i] for i in range(0, len(data), 2))
    buffer = bytearray(data) + bytearray(2)  # the rest of neu_value_u is zeroed
    if p.layout == "L":  # neu_datatag_string_ltoh(str, strlen(str)): pairs up to the NUL
        for i in range(0, buffer.index(0), 2):
            buffer[i], buffer[i + 1] = buffer[i + 1], buffer[i]
    return bytes(buffer[: buffer.index(0)]).decode("utf-8")  # a C string


def published(tag: dict[str, Any], params: dict[str, Any], wire: bytes) -> Any:
    """decode, then value x decimal + bias and the precision Neuron prints a real with."""
    value = decode(tag["address"], tag["type"], params, wire)
    decimal, bias = tag.get("decimal", 0), tag.get("bias", 0)
    numeric = tag["type"] not in (BIT, STRING)
    real = tag["type"] in (FLOAT, DOUBLE)
    if numeric and (decimal or bias):
        value = float(value) * (decimal or 1) + bias
        real = True
    if real and tag.get("precision"):
        value = float(f"{value:.{tag['precision']}f}")
    return value
