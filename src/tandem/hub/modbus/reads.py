"""A group's block reads on the wire, and how each answer folds into a sample.

Pure (no link, no clock): the poller runs these reads over its active path and probes its
standby paths with them, so both share one place that says what a reply means.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.config.hub import GroupConfig, ModbusDevice
from tandem.hub.codec import (
    ERR_DISCONNECTED,
    ERR_IO,
    ERR_TIMEOUT,
    BlockDecoder,
    modbus_exception_error,
    plan_reads,
)
from tandem.hub.modbus.frames import (
    FUNCTION_OF_AREA,
    ReadRequest,
    Reply,
    ReplyKind,
    bits_of,
    registers_of,
)
from tandem.hub.model import Value

# Codes meaning the device never answered over this path (as opposed to answering an error).
NO_ANSWER: frozenset[int] = frozenset({ERR_DISCONNECTED, ERR_TIMEOUT, ERR_IO})


@dataclass(slots=True)
class BlockRead:
    """One planned read: the request on the wire and the decoder of its answer."""

    request: ReadRequest
    decoder: BlockDecoder
    bits: bool


def plan_group(device: ModbusDevice, group: GroupConfig) -> tuple[BlockRead, ...]:
    """The reads that cover a group's tags, each with the decoder of its answer."""
    return tuple(
        BlockRead(
            ReadRequest(device.unit, FUNCTION_OF_AREA[block.area], block.start, block.count),
            BlockDecoder.for_block(block),
            block.area in ("coil", "discrete"),
        )
        for block in plan_reads(group.tags)
    )


def decode_reply(
    read: BlockRead, outcome: Reply | int, values: dict[str, Value], errors: dict[str, int]
) -> tuple[int, str | None]:
    """Fold one block's outcome into a sample; returns its error code (0) and a description."""
    if isinstance(outcome, int):
        read.decoder.fail(outcome, errors)
        return outcome, None
    if outcome.kind is ReplyKind.EXCEPTION:
        code = modbus_exception_error(outcome.exception_code)
        read.decoder.fail(code, errors)
        return code, f"modbus exception {outcome.exception_code}"
    if outcome.kind is ReplyKind.MALFORMED:
        read.decoder.fail(ERR_IO, errors)
        return ERR_IO, "malformed response"
    request = read.request
    words = bits_of(outcome.data, request.count) if read.bits else registers_of(outcome.data)
    read.decoder.decode(words, values, errors)
    return 0, None


__all__ = ["NO_ANSWER", "BlockRead", "decode_reply", "plan_group"]
