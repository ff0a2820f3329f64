"""Tag writes on a device's line: which function codes carry them, and what each outcome means.

The plan is pure: tags adjacent in the request (in the order given) and in the same table are
merged into one multiple write (FC 15 coils, FC 16 registers), a lone coil is FC 5 and a lone
register FC 6. A ``bit`` tag is a read-modify-write of its holding register: FC 3, then FC 6
with that one bit changed (another Modbus master writing the same register in between would be
overwritten; the PLC offers no atomic bit write on holding registers).

Outcomes are told apart by what the device can have done: nothing was sent (not connected,
refused by the guard), the device answered an exception (nothing written), the device
confirmed (the exact echo), or the request went out and no valid answer came (timeout, broken
line, a wrong echo): then the write may or may not have happened, and nobody can know.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from tandem.config.hub import BIT_AREAS, TagConfig
from tandem.hub.codec import ERR_DISCONNECTED, ERR_REFUSED, with_bit
from tandem.hub.modbus.frames import (
    MAX_COILS_PER_WRITE,
    MAX_REGISTERS_PER_WRITE,
    WRITE_COIL,
    WRITE_COILS,
    WRITE_REGISTER,
    WRITE_REGISTERS,
    ReadRequest,
    Reply,
    ReplyKind,
    WriteRequest,
    registers_of,
)
from tandem.hub.modbus.link import Guard, Link


class WriteOutcome(enum.Enum):
    """What became of one write request on the wire."""

    DONE = "done"  # the device echoed the request: written
    NOT_SENT = "not_sent"  # no connection: nothing reached the device
    REFUSED = "refused"  # the guard said no right before sending: nothing sent
    REJECTED = "rejected"  # the device answered an exception: nothing written
    UNKNOWN = "unknown"  # sent, but no valid answer: written or not, nobody knows
    SKIPPED = "skipped"  # an earlier write of the same request failed: not sent


@dataclass(frozen=True, slots=True)
class WriteItem:
    """One tag and the words encode_write made of its value."""

    tag: TagConfig
    words: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One request on the wire and the tags it carries; ``bit`` marks a read-modify-write."""

    request: WriteRequest
    tags: tuple[str, ...]
    bit: int | None = None  # the bit to change; request.values[0] is then 0/1, not a register


@dataclass(frozen=True, slots=True)
class OpResult:
    op: WriteOp
    outcome: WriteOutcome
    code: int = 0  # the codec's error code (timeouts, exceptions), 0 when written


def _mergeable(run: list[WriteItem], item: WriteItem) -> bool:
    last = run[-1].tag
    tag = item.tag
    if tag.type == "bit" or last.type == "bit" or tag.area != last.area:
        return False
    if tag.address != last.address + last.width:
        return False
    size = sum(len(i.words) for i in run) + len(item.words)
    limit = MAX_COILS_PER_WRITE if tag.area in BIT_AREAS else MAX_REGISTERS_PER_WRITE
    return size <= limit


def plan_writes(unit: int, items: Sequence[WriteItem]) -> list[WriteOp]:
    """The requests that write ``items`` in the order given, merging adjacent tags."""
    ops: list[WriteOp] = []
    run: list[WriteItem] = []

    def close() -> None:
        if not run:
            return
        first = run[0].tag
        values = tuple(word for item in run for word in item.words)
        names = tuple(item.tag.name for item in run)
        if first.type == "bit":
            request = WriteRequest(unit, WRITE_REGISTER, first.address, values)
            ops.append(WriteOp(request, names, bit=first.bit or 0))
        elif first.area in BIT_AREAS:
            function = WRITE_COIL if len(values) == 1 else WRITE_COILS
            ops.append(WriteOp(WriteRequest(unit, function, first.address, values), names))
        else:
            function = WRITE_REGISTER if len(values) == 1 else WRITE_REGISTERS
            ops.append(WriteOp(WriteRequest(unit, function, first.address, values), names))
        run.clear()

    for item in items:
        if run and not _mergeable(run, item):
            close()
        run.append(item)
    close()
    return ops


def judge(outcome: Reply | int) -> tuple[WriteOutcome, int]:
    """The meaning of a write request's outcome; see the module docstring."""
    if isinstance(outcome, int):
        if outcome == ERR_DISCONNECTED:
            return WriteOutcome.NOT_SENT, outcome
        if outcome == ERR_REFUSED:
            return WriteOutcome.REFUSED, outcome
        return WriteOutcome.UNKNOWN, outcome  # timeout or a line broken mid-request
    if outcome.kind is ReplyKind.EXCEPTION:
        return WriteOutcome.REJECTED, 2000 + outcome.exception_code
    if outcome.kind is ReplyKind.MALFORMED:
        return WriteOutcome.UNKNOWN, 1003
    return WriteOutcome.DONE, 0


async def _run_op(link: Link, op: WriteOp, timeout: float, guard: Guard) -> OpResult:
    request = op.request
    if op.bit is not None:
        # Read first: if that fails nothing was written, whatever the reason.
        read = ReadRequest(request.unit, 3, request.start, 1)
        answer = await link.transact(read, timeout)
        if isinstance(answer, int) or answer.kind is not ReplyKind.DATA:
            kind, code = judge(answer)
            if kind is WriteOutcome.UNKNOWN:
                kind = WriteOutcome.NOT_SENT  # a read that failed changed nothing
            return OpResult(op, kind, code)
        current = registers_of(answer.data)[0]
        value = with_bit(current, op.bit, bool(request.values[0]))
        request = WriteRequest(request.unit, WRITE_REGISTER, request.start, (value,))
    kind, code = judge(await link.transact(request, timeout, guard))
    return OpResult(op, kind, code)


async def execute(
    link: Link, ops: Sequence[WriteOp], timeout: float, guard: Guard
) -> list[OpResult]:
    """Send ``ops`` one after the other; after the first that is not DONE, the rest are skipped.

    Every request is queued behind whatever the line is doing (polls of this and the other
    devices on it), and ``guard`` is asked right before each one's bytes go out.
    """
    results: list[OpResult] = []
    for op in ops:
        if results and results[-1].outcome is not WriteOutcome.DONE:
            results.append(OpResult(op, WriteOutcome.SKIPPED))
            continue
        if not link.connected:
            results.append(OpResult(op, WriteOutcome.NOT_SENT, ERR_DISCONNECTED))
            continue
        results.append(await _run_op(link, op, timeout, guard))
    return results
