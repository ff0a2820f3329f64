"""Pure register codec: tag error codes, read planning (coalescing) and word-to-value decoding.

Per-tag error codes, as they appear in ``Sample.errors`` (a tag with a value has no entry; 0 is
never sent):

====== ==========================================================================
code   meaning
====== ==========================================================================
1001   device disconnected: no connection when the poll was due
1002   timeout: the device did not answer the request that covers this tag
1003   I/O error: the connection broke or the answer was malformed mid-request
1004   decode error: registers arrived but do not form a valid value (bad UTF-8
       string, NaN/inf float that JSON cannot carry, an OPC UA string too long)
1005   type mismatch: an OPC UA server sent a value of another type than the tag's
       (an array, a null, a Double for an int16 tag)
1006   refused: a write was not sent because this node lost the right to write (its term
       was fenced or its lease ran out) between the request and the wire
2000+n Modbus exception response with exception code n, e.g. 2002 = illegal data
       address (tag outside the device's map), 2004 = server device failure
2^30+  an OPC UA status code itself, severity and sub-code (the low 16 bits cleared),
       e.g. 2150891520 = 0x80340000 BadNodeIdUnknown (docs/opcua.md)
====== ==========================================================================
"""

from __future__ import annotations

import enum
import math
import struct
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter

from tandem.config.hub import BIT_AREAS, FLOAT_TYPES, TagConfig
from tandem.hub.model import Value

ERR_DISCONNECTED = 1001
ERR_TIMEOUT = 1002
ERR_IO = 1003
ERR_DECODE = 1004
ERR_TYPE = 1005
ERR_REFUSED = 1006
ERR_MODBUS_EXCEPTION_BASE = 2000

# Protocol limits per request (Modbus Application Protocol v1.1b3, 6.1-6.4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
# Largest run of unused addresses read through rather than split into two requests.
# A loopback/LAN round trip costs ~0.2-1 ms; 16 spare registers cost 32 bytes on the wire, so
# reading through is always cheaper. Bits are 1/8 byte each, hence the larger bit gap.
MAX_REGISTER_GAP = 16
MAX_BIT_GAP = 128


def modbus_exception_error(exception_code: int) -> int:
    """The per-tag error code for a Modbus exception response."""
    return ERR_MODBUS_EXCEPTION_BASE + exception_code


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``area`` from ``start``, and its tags."""

    area: str
    start: int
    count: int
    tags: tuple[TagConfig, ...]

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.count


def _area_limits(
    area: str, max_registers: int, max_bits: int, max_gap: int | None
) -> tuple[int, int]:
    if area in BIT_AREAS:
        return max_bits, MAX_BIT_GAP if max_gap is None else max_gap
    return max_registers, MAX_REGISTER_GAP if max_gap is None else max_gap


AREA_ORDER = ("holding", "input", "coil", "discrete")


def plan_reads(
    tags: Iterable[TagConfig],
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
    max_gap: int | None = None,
) -> list[ReadBlock]:
    """Coalesce tags into as few reads as the per-request limit and the gap limit allow.

    Greedy from the lowest address is optimal here: a block can only end early because the next
    tag would overflow the request limit or sits beyond the gap, and any plan must split there
    too. ``max_gap`` (unused addresses read through) defaults per area, see MAX_REGISTER_GAP.
    """
    by_area: dict[str, list[TagConfig]] = {}
    for tag in tags:
        by_area.setdefault(tag.area, []).append(tag)
    blocks: list[ReadBlock] = []
    for area in sorted(by_area, key=AREA_ORDER.index):
        limit, gap = _area_limits(area, max_registers, max_bits, max_gap)
        ordered = sorted(by_area[area], key=lambda t: (t.address, t.width))
        start = end = -1
        members: list[TagConfig] = []
        for tag in ordered:
            tag_end = tag.address + tag.width
            if tag.width > limit:
                raise ValueError(f"tag {tag.name} is wider ({tag.width}) than one read ({limit})")
            if members and tag.address - end <= gap and max(end, tag_end) - start <= limit:
                members.append(tag)
                end = max(end, tag_end)
                continue
            if members:
                blocks.append(ReadBlock(area, start, end - start, tuple(members)))
            start, end, members = tag.address, tag_end, [tag]
        if members:
            blocks.append(ReadBlock(area, start, end - start, tuple(members)))
    return blocks


# --- decoding -----------------------------------------------------------------------------------

_STRUCT_OF = {
    "int16": struct.Struct(">h"),
    "uint16": struct.Struct(">H"),
    "int32": struct.Struct(">i"),
    "uint32": struct.Struct(">I"),
    "int64": struct.Struct(">q"),
    "uint64": struct.Struct(">Q"),
    "float32": struct.Struct(">f"),
    "float64": struct.Struct(">d"),
}


def _swap16(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def word_permutation(tag: TagConfig) -> list[int]:
    """Which received word goes where in the big-endian value: ``value[i] = words[perm[i]]``.

    word_order orders the words of each 32-bit half and dword_order (64-bit types; it
    defaults to word_order) the halves, so the four orders of a 64-bit value are all
    expressible: 0123, 3210, 1032 (words swapped in each half) and 2301 (halves swapped).
    """
    width = tag.width
    if tag.dword_order is None or width != 4:
        order = list(range(width))
        return order[::-1] if tag.word_order == "little" else order
    halves = [[0, 1], [2, 3]]
    if tag.dword_order == "little":
        halves.reverse()
    if tag.word_order == "little":
        halves = [half[::-1] for half in halves]
    return halves[0] + halves[1]


def _string_bytes(tag: TagConfig, words: Sequence[int]) -> bytes:
    """The characters of a string tag whose registers carry one character each."""
    if tag.string_bytes == "low":
        return bytes(w & 0xFF for w in words)
    return bytes(w >> 8 for w in words)


class DecodeError(ValueError):
    """The registers do not form a value this tag can carry."""


def compile_decoder(tag: TagConfig) -> Callable[[Sequence[int]], Value]:
    """A function from exactly this tag's words (bits for coil/discrete) to its value.

    Everything that depends only on the tag (struct, orders, scaling) is settled here, once,
    so decoding a poll does no per-value lookups. The function raises DecodeError.
    """
    if tag.area in BIT_AREAS:
        return lambda words: bool(words[0])
    kind = tag.type
    if kind == "bool":
        return lambda words: words[0] != 0
    if kind == "bit":
        mask = 1 << (tag.bit or 0)
        return lambda words: bool(words[0] & mask)
    width = tag.width
    words_struct = struct.Struct(f">{width}H")
    permutation = word_permutation(tag)
    reorder = permutation != list(range(width))
    swap = tag.byte_order == "little"

    def raw_bytes(words: Sequence[int]) -> bytes:
        ordered = [words[i] for i in permutation] if reorder else list(words[:width])
        if swap:
            ordered = [_swap16(w) for w in ordered]
        return words_struct.pack(*ordered)

    if kind == "string":
        name = tag.name
        text_of = raw_bytes if tag.string_bytes == "both" else partial(_string_bytes, tag)

        def decode_string(words: Sequence[int]) -> Value:
            try:
                return text_of(words[:width]).strip(b"\x00").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError(f"{name}: not UTF-8") from exc

        return decode_string
    return _number_decoder(tag, raw_bytes)


def _number_decoder(
    tag: TagConfig, raw_bytes: Callable[[Sequence[int]], bytes]
) -> Callable[[Sequence[int]], Value]:
    number_struct = _STRUCT_OF[tag.type]
    scale, offset, precision = tag.scale, tag.offset, tag.precision
    identity = scale == 1.0 and offset == 0.0
    is_float = tag.type in ("float32", "float64")
    rounds = precision is not None and (is_float or not identity)

    def decode_number(words: Sequence[int]) -> Value:
        number: int | float = number_struct.unpack(raw_bytes(words))[0]
        if is_float and not math.isfinite(number):
            raise DecodeError(f"{tag.name}: {number} cannot be published")
        if identity:
            return round(number, precision) if rounds else number
        value = number * scale + offset
        if not math.isfinite(value):  # a huge 64-bit integer times a huge scale
            raise DecodeError(f"{tag.name}: {value} cannot be published")
        return round(value, precision) if rounds else value

    return decode_number


def decode_value(tag: TagConfig, words: Sequence[int]) -> Value:
    """Decode one tag from exactly its own words; convenience over compile_decoder."""
    return compile_decoder(tag)(words)


def encode_value(tag: TagConfig, value: Value) -> list[int]:
    """Registers (or one 0/1 for coil/discrete) that decode back to ``value``; for the simulator.

    Scale and offset are inverted, integer types round to the nearest raw value. A ``bit`` tag
    encodes to a register with only its bit set or clear.
    """
    if tag.area in BIT_AREAS or tag.type == "bool":
        return [1 if value else 0]
    if tag.type == "bit":
        return [(1 << (tag.bit or 0)) if value else 0]
    if tag.type == "string" and tag.string_bytes != "both":
        data = str(value).encode("utf-8")[: tag.width].ljust(tag.width, b"\x00")
        shift = 0 if tag.string_bytes == "low" else 8
        return [byte << shift for byte in data]
    if tag.type == "string":
        data = str(value).encode("utf-8")[: tag.width * 2].ljust(tag.width * 2, b"\x00")
        words = list(struct.unpack(f">{tag.width}H", data))
    else:
        assert not isinstance(value, str)
        raw: int | float = (float(value) - tag.offset) / tag.scale
        if isinstance(value, int) and tag.scale == 1.0 and tag.offset == 0.0:
            raw = value  # exact: a 64-bit integer does not survive a trip through float
        elif tag.type not in ("float32", "float64"):
            raw = int(round(raw))
        words = list(struct.unpack(f">{tag.width}H", _STRUCT_OF[tag.type].pack(raw)))
    if tag.byte_order == "little":
        words = [_swap16(w) for w in words]
    received = [0] * len(words)
    for position, source in enumerate(word_permutation(tag)):
        received[source] = words[position]
    return received


def _is_plain(tag: TagConfig) -> bool:
    """A uint16 (or coil/discrete bit) that is its raw word: the bulk fast path."""
    if tag.area in BIT_AREAS:
        return False
    return (
        tag.type == "uint16" and tag.byte_order == "big" and tag.scale == 1.0 and tag.offset == 0.0
    )


@dataclass(frozen=True, slots=True)
class BlockDecoder:
    """Decodes one ReadBlock's response into a Sample's values/errors with minimal per-tag work.

    Built once per block at startup; plain uint16 tags are copied with a single itemgetter
    call, everything else goes through its own decode.
    """

    block: ReadBlock
    names: tuple[str, ...]
    _plain_names: tuple[str, ...] = field(repr=False)
    _plain_get: Callable[[Sequence[int]], tuple[int, ...]] | None = field(repr=False)
    _others: tuple[tuple[str, int, int, Callable[[Sequence[int]], Value]], ...] = field(repr=False)

    @classmethod
    def for_block(cls, block: ReadBlock) -> BlockDecoder:
        plain = [t for t in block.tags if _is_plain(t)]
        others = tuple(
            (t.name, t.address - block.start, t.width, compile_decoder(t))
            for t in block.tags
            if not _is_plain(t)
        )
        getter: Callable[[Sequence[int]], tuple[int, ...]] | None = None
        if plain:
            offsets = [t.address - block.start for t in plain]
            if len(offsets) == 1:
                only = offsets[0]
                getter = lambda words: (words[only],)  # noqa: E731 - itemgetter of one is a scalar
            else:
                getter = itemgetter(*offsets)
        return cls(
            block=block,
            names=tuple(t.name for t in block.tags),
            _plain_names=tuple(t.name for t in plain),
            _plain_get=getter,
            _others=others,
        )

    def decode(
        self,
        words: Sequence[int] | Sequence[bool],
        values: MutableMapping[str, Value],
        errors: MutableMapping[str, int],
    ) -> None:
        """Add this block's tag values (or decode errors) to ``values``/``errors``."""
        if self._plain_get is not None:
            values.update(zip(self._plain_names, self._plain_get(words), strict=True))
        for name, offset, width, decode in self._others:
            try:
                values[name] = decode(words[offset : offset + width])
            except (DecodeError, struct.error, IndexError):
                errors[name] = ERR_DECODE

    def fail(self, code: int, errors: MutableMapping[str, int]) -> None:
        """Mark every tag of this block with ``code``."""
        errors.update(dict.fromkeys(self.names, code))


# --- write encoding -----------------------------------------------------------------------------

# Raw ranges of the integer types: a value past them would wrap on the device.
_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


class ValueProblem(enum.Enum):
    """Why a value cannot be written to a tag; each maps to one response error code."""

    TYPE = "type"  # a string for a number tag, a number for a string, 0.5 for an unscaled int
    RANGE = "range"  # outside what the tag's type can hold once scale and offset are undone


class WriteValueError(ValueError):
    """The value does not fit the tag; ``problem`` says how."""

    def __init__(self, problem: ValueProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


def _integral(number: float, tag: TagConfig) -> int:
    """The raw integer of an integer tag: scaled values round, unscaled ones must be whole."""
    if not math.isfinite(number):
        raise WriteValueError(ValueProblem.RANGE, f"{tag.name}: {number} is not a finite number")
    if tag.scale == 1.0 and tag.offset == 0.0 and number != int(number):
        raise WriteValueError(ValueProblem.TYPE, f"{tag.name}: {number} is not an integer")
    return int(round(number))


def _raw_number(tag: TagConfig, value: Value) -> int | float:
    """The raw (unscaled) number to put on the wire, range-checked for the tag's type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteValueError(ValueProblem.TYPE, f"{tag.name}: {tag.type} needs a number")
    identity = tag.scale == 1.0 and tag.offset == 0.0
    raw: int | float
    if tag.type in FLOAT_TYPES:
        raw = float(value) if identity else (float(value) - tag.offset) / tag.scale
        limit = _FLOAT32_MAX if tag.type == "float32" else sys.float_info.max
        if not math.isfinite(raw) or abs(raw) > limit:
            raise WriteValueError(ValueProblem.RANGE, f"{tag.name}: {value} does not fit")
        return raw
    if isinstance(value, int) and identity:
        raw = value  # exact: a 64-bit integer does not survive a trip through float
    else:
        raw = _integral(float(value) if identity else (float(value) - tag.offset) / tag.scale, tag)
    low, high = _INT_RANGE[tag.type]
    if not low <= raw <= high:
        raise WriteValueError(
            ValueProblem.RANGE, f"{tag.name}: {value} is outside {tag.type} once scaled"
        )
    return raw


def _as_bool(tag: TagConfig, value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise WriteValueError(ValueProblem.TYPE, f"{tag.name}: needs true/false (or 1/0)")


def encode_write(tag: TagConfig, value: Value) -> tuple[int, ...]:
    """The words a write of ``value`` puts on the wire, after every check; raises WriteValueError.

    Coil tags give one 0/1; ``bool`` tags one register 0/1; ``bit`` tags one 0/1 that the
    writer folds into the register it reads first (read-modify-write). Everything else is
    the inverse of compile_decoder: scale and offset undone, the raw value range-checked for
    the type (never wrapped), then the tag's word, dword and byte orders applied.
    """
    if tag.area in BIT_AREAS or tag.type in ("bool", "bit"):
        return (1 if _as_bool(tag, value) else 0,)
    if tag.type == "string":
        if not isinstance(value, str):
            raise WriteValueError(ValueProblem.TYPE, f"{tag.name}: a string tag needs a string")
        data = value.encode("utf-8")
        room = tag.width * 2 if tag.string_bytes == "both" else tag.width
        if len(data) > room or b"\x00" in data:
            raise WriteValueError(
                ValueProblem.RANGE, f"{tag.name}: {len(data)} bytes do not fit in {room}"
            )
        return tuple(encode_value(tag, value))
    return tuple(_words_of(tag, _raw_number(tag, value)))


def _words_of(tag: TagConfig, raw: int | float) -> list[int]:
    words = list(struct.unpack(f">{tag.width}H", _STRUCT_OF[tag.type].pack(raw)))
    if tag.byte_order == "little":
        words = [_swap16(w) for w in words]
    received = [0] * len(words)
    for position, source in enumerate(word_permutation(tag)):
        received[source] = words[position]
    return received


def with_bit(register: int, bit: int, on: bool) -> int:
    """``register`` with one bit set or cleared: the modify step of a bit tag's write."""
    mask = 1 << bit
    return (register | mask) if on else (register & ~mask & 0xFFFF)
