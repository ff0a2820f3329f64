"""Sans-I/O Modbus framing for the requests the hub issues: MBAP and RTU, both ways.

Reads (function codes 1-4, Modbus Application Protocol v1.1b3, 6.1-6.4) for the poller and
writes (5, 6, 15, 16: 6.5, 6.6, 6.11, 6.12) for tag writes. Replies are parsed from a byte
buffer that may hold partial frames, frames for another request (a late answer, a stray unit)
or noise; the parser says how many bytes it used and what it found, so nothing here can raise
on peer input.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Literal

from pymodbus.framer import FramerRTU

Framing = Literal["mbap", "rtu"]

FUNCTION_OF_AREA: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
EXCEPTION_FLAG = 0x80
# MBAP header (Modbus Messaging on TCP/IP v1.0b, 3.1.3): transaction, protocol 0, length, unit.
_MBAP = struct.Struct(">HHHB")
_READ_PDU = struct.Struct(">BHH")
# The largest PDU is 253 bytes (Modbus Application Protocol 4.1), so an MBAP length (unit +
# PDU) above 254 can only be a stream that lost its framing.
MAX_MBAP_LENGTH = 254
# Modbus over Serial Line v1.02, 2.5.1.1: above 19200 baud the silent interval is fixed.
FIXED_T35_S = 0.00175
FIXED_T35_ABOVE_BAUD = 19200


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of ``count`` registers or bits of one area from one unit."""

    unit: int
    function: int
    start: int
    count: int

    @property
    def reply_bytes(self) -> int:
        """Data bytes a correct reply carries (registers: 2 each; bits: 8 per byte)."""
        return self.count * 2 if self.function in (3, 4) else (self.count + 7) // 8


# Write function codes (Modbus Application Protocol v1.1b3, 6.5, 6.6, 6.11, 6.12).
WRITE_COIL = 5
WRITE_REGISTER = 6
WRITE_COILS = 15
WRITE_REGISTERS = 16
WRITE_FUNCTIONS: frozenset[int] = frozenset({5, 6, 15, 16})
# Per-request limits of the multiple writes (6.11, 6.12).
MAX_COILS_PER_WRITE = 1968
MAX_REGISTERS_PER_WRITE = 123
_COIL_ON = 0xFF00


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One write to one unit: ``values`` are registers (6, 16) or 0/1 bits (5, 15)."""

    unit: int
    function: int
    start: int
    values: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.values)

    def pdu(self) -> bytes:
        """The request PDU; FC 5 and 6 carry one value, 15 and 16 a count and packed data."""
        function, start, values = self.function, self.start, self.values
        if function == WRITE_COIL:
            return _READ_PDU.pack(function, start, _COIL_ON if values[0] else 0)
        if function == WRITE_REGISTER:
            return _READ_PDU.pack(function, start, values[0])
        if function == WRITE_COILS:
            data = bytearray((len(values) + 7) // 8)
            for i, bit in enumerate(values):
                if bit:
                    data[i >> 3] |= 1 << (i & 7)
            return _READ_PDU.pack(function, start, len(values)) + bytes((len(data),)) + data
        words = struct.pack(f">{len(values)}H", *values)
        return _READ_PDU.pack(function, start, len(values)) + bytes((len(words),)) + words

    def echo(self) -> bytes:
        """The four bytes a correct reply repeats: address and value (5, 6) or count (15, 16)."""
        return self.pdu()[1:5]


Request = ReadRequest | WriteRequest


class ReplyKind(enum.Enum):
    """What a parsed frame turned out to be."""

    DATA = "data"
    EXCEPTION = "exception"
    MALFORMED = "malformed"  # the right frame, but its content does not fit the request


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a ReadRequest: data bytes, an exception code, or a malformed answer."""

    kind: ReplyKind
    data: bytes = b""
    exception_code: int = 0


@dataclass(frozen=True, slots=True)
class Parsed:
    """The outcome of one parse: bytes used, the reply if found, stray frames skipped."""

    used: int
    reply: Reply | None = None
    stray_units: tuple[int, ...] = ()  # units of whole frames that answered something else
    broken: bool = False  # the byte stream lost its framing (MBAP): the link must reconnect


_RTU_FRAMES: dict[ReadRequest, bytes] = {}
_MBAP_TAILS: dict[ReadRequest, bytes] = {}
_TID = struct.Struct(">H")


def encode_request(request: Request, framing: Framing, transaction_id: int = 0) -> bytes:
    """The bytes on the wire for ``request``.

    A device asks for the same blocks on every poll, so everything but the transaction id is
    built once per read and kept (an RTU frame, CRC included, is entirely fixed); writes are
    rare and built each time.
    """
    if isinstance(request, WriteRequest):
        pdu = request.pdu()
        if framing == "rtu":
            head = bytes((request.unit,)) + pdu
            return head + FramerRTU.compute_CRC(head).to_bytes(2, "big")
        return _MBAP.pack(transaction_id, 0, len(pdu) + 1, request.unit) + pdu
    if framing == "rtu":
        frame = _RTU_FRAMES.get(request)
        if frame is None:
            head = bytes((request.unit,)) + _READ_PDU.pack(
                request.function, request.start, request.count
            )
            frame = _RTU_FRAMES.setdefault(
                request, head + FramerRTU.compute_CRC(head).to_bytes(2, "big")
            )
        return frame
    tail = _MBAP_TAILS.get(request)
    if tail is None:
        pdu = _READ_PDU.pack(request.function, request.start, request.count)
        tail = _MBAP_TAILS.setdefault(
            request, _MBAP.pack(0, 0, len(pdu) + 1, request.unit)[2:] + pdu
        )
    return _TID.pack(transaction_id) + tail


def _pdu_reply(pdu: bytes, request: Request) -> Reply | None:
    """The reply a PDU carries for ``request``; None if it answers another function."""
    if not pdu:
        return Reply(ReplyKind.MALFORMED)
    function = pdu[0]
    if function == request.function | EXCEPTION_FLAG:
        return Reply(ReplyKind.EXCEPTION, exception_code=pdu[1] if len(pdu) > 1 else 0)
    if function != request.function:
        return None
    if isinstance(request, WriteRequest):
        # A write is confirmed only by the exact echo; anything else may not have landed.
        if pdu[1:] != request.echo():
            return Reply(ReplyKind.MALFORMED)
        return Reply(ReplyKind.DATA, data=pdu[1:])
    if len(pdu) < 2 or pdu[1] != request.reply_bytes or len(pdu) != 2 + pdu[1]:
        return Reply(ReplyKind.MALFORMED)
    return Reply(ReplyKind.DATA, data=pdu[2:])


def parse_mbap(buffer: bytes, request: Request, transaction_id: int) -> Parsed:
    """Find the reply to ``request`` (sent with ``transaction_id``) at the start of ``buffer``.

    Frames for another transaction (the late answer to a request that timed out) are skipped
    and counted; a header that cannot be Modbus means the stream is broken.
    """
    used = 0
    strays: list[int] = []
    while len(buffer) - used >= _MBAP.size:
        tid, protocol, length, unit = _MBAP.unpack_from(buffer, used)
        if protocol != 0 or not 2 <= length <= MAX_MBAP_LENGTH:
            return Parsed(len(buffer), stray_units=tuple(strays), broken=True)
        end = used + 6 + length
        if end > len(buffer):
            break
        pdu = bytes(buffer[used + _MBAP.size : end])
        used = end
        reply = None
        if tid == transaction_id and unit == request.unit:
            reply = _pdu_reply(pdu, request)
        if reply is None:
            strays.append(unit)
            continue
        return Parsed(used, reply, tuple(strays))
    return Parsed(used, None, tuple(strays))


def _rtu_frame_size(buffer: bytes, at: int) -> int | None:
    """Size of the read or write reply (or exception) starting at ``at``; None if not one."""
    if len(buffer) - at < 3:
        return 0
    function = buffer[at + 1]
    if function & EXCEPTION_FLAG and (
        function & 0x7F in FUNCTION_OF_AREA.values() or function & 0x7F in WRITE_FUNCTIONS
    ):
        return 5
    if function in WRITE_FUNCTIONS:
        return 8  # unit, function, address, value or count, CRC
    if function in FUNCTION_OF_AREA.values():
        return 5 + buffer[at + 2]
    return None


def parse_rtu(buffer: bytes, request: Request) -> Parsed:
    """Find the reply to ``request`` in an RTU byte stream.

    RTU has no length field: a frame is recognised by its shape and CRC. Whole frames from
    another unit (a late answer on a shared bus) are skipped and their units reported; bytes
    that start no valid frame are dropped one at a time, as a receiver hunting for the next
    frame does. A request for unit 0 (broadcast, never answered) finds only strays.
    """
    used = 0
    strays: list[int] = []
    while len(buffer) - used >= 4:
        size = _rtu_frame_size(buffer, used)
        if size is None:
            used += 1
            continue
        if size == 0 or used + size > len(buffer):
            break
        frame = bytes(buffer[used : used + size])
        crc = int.from_bytes(frame[-2:], "big")
        if not FramerRTU.check_CRC(frame[:-2], crc):
            used += 1
            continue
        used += size
        reply = _pdu_reply(frame[1:-2], request) if frame[0] == request.unit else None
        if reply is None or reply.kind is ReplyKind.MALFORMED:
            # On RTU a frame of the wrong shape is another exchange's answer, not ours.
            strays.append(frame[0])
            continue
        return Parsed(used, reply, tuple(strays))
    return Parsed(used, None, tuple(strays))


def silent_interval(baudrate: int, char_bits: int) -> float:
    """t3.5: the line must be quiet this long between frames (Serial Line v1.02, 2.5.1.1)."""
    if baudrate > FIXED_T35_ABOVE_BAUD:
        return FIXED_T35_S
    return 3.5 * char_bits / baudrate


_WORDS: dict[int, struct.Struct] = {}


def registers_of(data: bytes) -> tuple[int, ...]:
    """Big-endian 16-bit registers of a read reply's data, in one (cached) unpack."""
    words = _WORDS.get(len(data))
    if words is None:
        words = _WORDS.setdefault(len(data), struct.Struct(f">{len(data) // 2}H"))
    return words.unpack(data)


def bits_of(data: bytes, count: int) -> list[bool]:
    """The first ``count`` bits of a coil/discrete reply, least significant bit first."""
    return [bool(data[i >> 3] >> (i & 7) & 1) for i in range(count)]
