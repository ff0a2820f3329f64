"""Sans-I/O Modbus framing for the read requests the poller issues: MBAP and RTU, both ways.

Only reads are framed here (function codes 1-4, Modbus Application Protocol v1.1b3, 6.1-6.4):
that is all the poller sends. Replies are parsed from a byte buffer that may hold partial
frames, frames for another request (a late answer, a stray unit) or noise; the parser says
how many bytes it used and what it found, so nothing here can raise on peer input.
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


def encode_request(request: ReadRequest, framing: Framing, transaction_id: int = 0) -> bytes:
    """The bytes on the wire for ``request``.

    A device asks for the same blocks on every poll, so everything but the transaction id is
    built once per request and kept (an RTU frame, CRC included, is entirely fixed).
    """
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


def _pdu_reply(pdu: bytes, request: ReadRequest) -> Reply | None:
    """The reply a PDU carries for ``request``; None if it answers another function."""
    if not pdu:
        return Reply(ReplyKind.MALFORMED)
    function = pdu[0]
    if function == request.function | EXCEPTION_FLAG:
        return Reply(ReplyKind.EXCEPTION, exception_code=pdu[1] if len(pdu) > 1 else 0)
    if function != request.function:
        return None
    if len(pdu) < 2 or pdu[1] != request.reply_bytes or len(pdu) != 2 + pdu[1]:
        return Reply(ReplyKind.MALFORMED)
    return Reply(ReplyKind.DATA, data=pdu[2:])


def parse_mbap(buffer: bytes, request: ReadRequest, transaction_id: int) -> Parsed:
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
    """Size of the read reply (or exception) that would start at ``at``; None if not one."""
    if len(buffer) - at < 3:
        return 0
    function = buffer[at + 1]
    if function & EXCEPTION_FLAG and function & 0x7F in FUNCTION_OF_AREA.values():
        return 5
    if function in FUNCTION_OF_AREA.values():
        return 5 + buffer[at + 2]
    return None


def parse_rtu(buffer: bytes, request: ReadRequest) -> Parsed:
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
