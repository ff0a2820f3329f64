"""Polls one Modbus TCP device: groups on the wall-clock grid, reconnect with backoff, Samples out.

Requests on one connection go one at a time: pymodbus 3.16's async client holds a lock around
every transaction (``TransactionManager.execute``), so firing a group's blocks concurrently
only queues them on that lock. They are issued sequentially, which costs nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from tandem.config.hub import DeviceConfig, GroupConfig, TcpEndpoint
from tandem.hub.codec import (
    ERR_DISCONNECTED,
    ERR_IO,
    ERR_TIMEOUT,
    BlockDecoder,
    modbus_exception_error,
    plan_reads,
)
from tandem.hub.model import Sample, Value, slot_of

log = logging.getLogger(__name__)

# How often a connected device's link is checked: pymodbus reports a lost connection only
# through its `connected` flag, not through a callback.
LINK_CHECK_S = 0.1


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """What one group's polling looks like right now, for the API and metrics."""

    name: str
    interval: float
    last_poll_ms: int | None
    last_slot: int | None
    polls: int
    errors: int  # polls in which at least one tag had an error
    overruns: int  # grid slots skipped because a poll ran past its next slot
    last_latency_ms: float | None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device: connection state, the last error seen, and its groups."""

    name: str
    connected: bool
    last_error: str | None
    groups: list[GroupStatus]


@dataclass(slots=True)
class _GroupRun:
    """Mutable per-group state owned by that group's poll task."""

    config: GroupConfig
    decoders: tuple[BlockDecoder, ...]
    last_poll_ms: int | None = None
    last_slot: int | None = None
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    last_latency_ms: float | None = None
    block_errors: dict[int, int] = field(default_factory=dict)

    def status(self) -> GroupStatus:
        return GroupStatus(
            name=self.config.name,
            interval=self.config.interval,
            last_poll_ms=self.last_poll_ms,
            last_slot=self.last_slot,
            polls=self.polls,
            errors=self.errors,
            overruns=self.overruns,
            last_latency_ms=self.last_latency_ms,
        )


CATCH_UP_S = 1.0  # the longest stall whose slots are still polled late rather than skipped


def next_slot_after(slot: int, now: float, interval: float) -> tuple[int, int]:
    """The slot to poll after ``slot`` finished at wall time ``now``, and how many were skipped.

    A late poll keeps its slot: after a stall of up to CATCH_UP_S the missed slots are polled
    at once, one after the other (their timestamps say when they were really read), so a
    standby and a master that were slowed at different moments still hold the same slots.
    A longer stall skips to the current slot and counts the skipped ones as overruns, so a
    device that is slower than its interval is never driven into an endless burst.
    """
    current = slot_of(now, interval)
    if current <= slot:
        return slot + 1, 0
    if (current - slot) * interval <= CATCH_UP_S:
        # A short stall (a busy CPU, a slow answer): poll every slot it covered, back to back.
        return slot + 1, 0
    return current, current - slot - 1


_WORDS_BY_BYTES: dict[int, struct.Struct] = {}


def _decode_register_bytes(data: bytes) -> list[int]:
    """Registers of a read response (byte count, then big-endian words) in one unpack.

    pymodbus unpacks and appends one register at a time, which was the largest single cost
    of a poll in the hub's profile (~0.1 ms per 125-register response).
    """
    byte_count = data[0]
    if byte_count >= len(data):
        raise ModbusIOException(f"byte_count {byte_count} > length of packet {len(data)}")
    words = _WORDS_BY_BYTES.get(byte_count)
    if words is None:
        words = _WORDS_BY_BYTES.setdefault(byte_count, struct.Struct(f">{byte_count // 2}H"))
    return list(words.unpack_from(data, 1))


class _FastHoldingRegistersResponse(ReadHoldingRegistersResponse):
    """Function code 3 response decoded with one struct call (pymodbus's public register())."""

    def decode(self, data: bytes) -> None:
        self.registers = _decode_register_bytes(data)

    def __str__(self) -> str:
        # pymodbus formats every decoded PDU for a debug line, logged or not; listing 125
        # registers there cost more than decoding them.
        return f"{type(self).__name__}(tid={self.transaction_id}, {len(self.registers)} words)"


class _FastInputRegistersResponse(ReadInputRegistersResponse):
    """Function code 4 response decoded with one struct call."""

    def decode(self, data: bytes) -> None:
        self.registers = _decode_register_bytes(data)

    __str__ = _FastHoldingRegistersResponse.__str__


def _honour_swallowed_cancel() -> None:
    """Raise CancelledError if this task was cancelled but the cancellation got lost.

    pymodbus awaits each response with asyncio.wait_for, which on Python 3.11 returns the
    result and drops the cancellation when both arrive in the same loop step. The task still
    counts the request (``cancelling()``), so it is honoured here; without this a busy poller
    ignored the stop and kept polling forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class DevicePoller:
    """Polls every group of one device over a single Modbus TCP connection.

    Each group runs on its own grid (polls at ``k * interval`` wall-clock seconds, slept on the
    loop's monotonic clock) so two nodes produce the same slot for the same poll. While the
    device is unreachable every due poll still emits a Sample with all tags marked
    disconnected: a slot is never lost silently.
    """

    def __init__(
        self,
        device: DeviceConfig,
        *,
        source_node: str,
        emit: Callable[[Sample], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.source_node = source_node
        self._emit = emit
        self._clock = clock
        self._groups = [
            _GroupRun(g, tuple(BlockDecoder.for_block(b) for b in plan_reads(g.tags)))
            for g in device.groups
        ]
        self._client: AsyncModbusTcpClient  # set by run()
        self._connected = False
        # Warm standby: keep the connection up but do not poll (set by the HA layer).
        self.paused = False
        self._last_error: str | None = None
        self._link_lost = asyncio.Event()

    def status(self) -> DeviceStatus:
        return DeviceStatus(
            name=self.device.name,
            connected=self._connected,
            last_error=self._last_error,
            groups=[g.status() for g in self._groups],
        )

    def _make_client(self) -> AsyncModbusTcpClient:
        """A client for this device; pymodbus binds it to the running loop, so made in run()."""
        device = self.device
        endpoint = device.endpoints()[0]
        assert isinstance(endpoint, TcpEndpoint)
        client = AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            timeout=device.timeout,
            retries=0,  # a retry would push the next poll off its grid; the next poll is the retry
            reconnect_delay=0,  # reconnects are ours, with the configured backoff
            name=f"modbus:{device.name}",
        )
        client.register(_FastHoldingRegistersResponse)
        client.register(_FastInputRegistersResponse)
        return client

    async def run(self) -> None:
        """Connect and poll until cancelled; closes the connection on the way out."""
        self._client = self._make_client()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_connected(), name=f"{self.device.name}:link")
                for group in self._groups:
                    tasks.create_task(
                        self._poll_forever(group), name=f"{self.device.name}:{group.config.name}"
                    )
        finally:
            self._client.close()
            self._connected = False

    async def __aenter__(self) -> DevicePoller:
        """Run in the background for the ``async with`` body (tests, small tools)."""
        self._task = asyncio.create_task(self.run(), name=f"poller:{self.device.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        # wait() never raises the task's CancelledError, so a cancel of *our* caller still does.
        await asyncio.wait([self._task])
        if not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]

    # --- connection ---------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        backoff = self.device.reconnect_min
        while True:
            if self._client.connected:
                self._link_lost.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the event being set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINK_CHECK_S):
                        await self._link_lost.wait()
                if self._client.connected and not self._link_lost.is_set():
                    continue
                self._client.close()
                self._set_connected(False, "connection lost")
                backoff = self.device.reconnect_min
                continue
            if await self._client.connect():
                self._set_connected(True, None)
                backoff = self.device.reconnect_min
                continue
            self._set_connected(False, f"cannot connect to {self.device.endpoints()[0].label}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.device.reconnect_max)

    def _set_connected(self, connected: bool, error: str | None) -> None:
        if connected != self._connected:
            if connected:
                log.info(
                    "device %s connected to %s", self.device.name, self.device.endpoints()[0].label
                )
            else:
                log.warning("device %s disconnected: %s", self.device.name, error)
        self._connected = connected
        if error is not None:
            self._last_error = error

    # --- polling ------------------------------------------------------------------------------

    async def _poll_forever(self, group: _GroupRun) -> None:
        interval = group.config.interval
        slot = slot_of(self._clock(), interval) + 1
        while True:
            delay = slot * interval - self._clock()
            if delay > interval * 2:
                # The wall clock stepped back; re-align rather than sleep through the gap.
                slot = slot_of(self._clock(), interval) + 1
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            if self.paused:
                slot = slot_of(self._clock(), interval) + 1
                continue
            await self._poll_once(group, slot)
            slot, skipped = next_slot_after(slot, self._clock(), interval)
            if skipped:
                group.overruns += skipped
                log.debug(
                    "group %s/%s overran %s slot(s)", self.device.name, group.config.name, skipped
                )

    async def _poll_once(self, group: _GroupRun, slot: int) -> None:
        started_wall = self._clock()
        started = time.perf_counter()
        values: dict[str, Value] = {}
        errors: dict[str, int] = {}
        await self._read_group(group, values, errors)
        group.last_latency_ms = (time.perf_counter() - started) * 1000
        group.last_poll_ms = int(started_wall * 1000)
        group.last_slot = slot
        group.polls += 1
        if errors:
            group.errors += 1
        self._emit(
            Sample(
                node=self.device.name,
                group=group.config.name,
                slot=slot,
                timestamp_ms=group.last_poll_ms,
                values=values,
                errors=errors,
                seq=0,
                source_node=self.source_node,
            )
        )

    async def _read_group(
        self, group: _GroupRun, values: dict[str, Value], errors: dict[str, int]
    ) -> None:
        decoders: Sequence[BlockDecoder] = group.decoders
        for index, decoder in enumerate(decoders):
            if not (self._connected and self._client.connected):
                decoder.fail(ERR_DISCONNECTED, errors)
                continue
            code = await self._read_block(decoder, values, errors)
            _honour_swallowed_cancel()
            if code:
                decoder.fail(code, errors)
            self._note_block_error(group, index, decoder, code)

    async def _read_block(
        self, decoder: BlockDecoder, values: dict[str, Value], errors: dict[str, int]
    ) -> int:
        """Read and decode one block; returns 0 or the error code for all of its tags."""
        block = decoder.block
        client = self._client
        unit = self.device.unit
        try:
            if block.area == "holding":
                response = await client.read_holding_registers(
                    block.start, count=block.count, device_id=unit
                )
            elif block.area == "input":
                response = await client.read_input_registers(
                    block.start, count=block.count, device_id=unit
                )
            elif block.area == "coil":
                response = await client.read_coils(block.start, count=block.count, device_id=unit)
            else:
                response = await client.read_discrete_inputs(
                    block.start, count=block.count, device_id=unit
                )
        except ConnectionException:
            self._link_lost.set()
            return ERR_DISCONNECTED
        except ModbusIOException as exc:
            self._last_error = f"{block.area} {block.start}+{block.count}: {exc}"
            return ERR_TIMEOUT
        except ModbusException as exc:
            self._last_error = f"{block.area} {block.start}+{block.count}: {exc}"
            return ERR_IO
        if response.isError():
            exception_code = int(getattr(response, "exception_code", 0))
            self._last_error = (
                f"{block.area} {block.start}+{block.count}: modbus exception {exception_code}"
            )
            return modbus_exception_error(exception_code)
        data = response.bits if block.area in ("coil", "discrete") else response.registers
        if len(data) < block.count:
            self._last_error = f"{block.area} {block.start}+{block.count}: short response"
            return ERR_IO
        decoder.decode(data, values, errors)
        return 0

    def _note_block_error(
        self, group: _GroupRun, index: int, decoder: BlockDecoder, code: int
    ) -> None:
        """Log a block's error when it changes, not on every poll of a failing device."""
        previous = group.block_errors.get(index, 0)
        if code == previous:
            return
        group.block_errors[index] = code
        block = decoder.block
        if code:
            log.warning(
                "device %s group %s: %s %s+%s failed with %s",
                self.device.name,
                group.config.name,
                block.area,
                block.start,
                block.count,
                code,
            )
        else:
            log.info(
                "device %s group %s: %s %s+%s reads again",
                self.device.name,
                group.config.name,
                block.area,
                block.start,
                block.count,
            )
