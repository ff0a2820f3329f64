"""A Modbus TCP PLC simulator whose registers move with time, for the demo, tests and benchmarks.

Register map (any unit id is answered; ``t`` = seconds since the simulator started):

=================  ===========================================================================
holding 0          counter, uint16, +1 every 100 ms, wraps at 65536
holding 1-2        sine, float32 (big word/byte order), sin(2*pi*t/10): period 10 s, -1..1
holding 3          ramp, uint16, 0..999, +1 every 10 ms (one full ramp per 10 s)
holding 4-9        zero, writable
holding 10         int16 fixture, -1234
holding 11-12      uint32 fixture, 123456789 (big word order)
holding 13-14      float32 fixture, -2.5
holding 15-18      float64 fixture, 1234.5678
holding 19         zero
holding 20-27      string fixture "TANDEM-SIM", 8 registers, NUL padded
holding 28-29      zero
holding 30         bit fixture 0b1010_0101_0000_0011
holding 31-99      zero, writable
holding 100..      N load registers (``load_registers``, default 1000): register 100+i holds
                   (counter + i) mod 65536, so every value changes every 100 ms
holding >= 100+N   not mapped: any read touching it gets exception 2 (illegal data address)
input 0-3          same as holding 0-3; input 4-15 zero; input >= 16 not mapped
coil 0-7           pattern: coil i is on when (whole seconds + i) is even, so all toggle each s
coil 8-15          off, writable;   coil >= 16 not mapped
discrete 0-7       inverse of coil 0-7; discrete 8-15 off; discrete >= 16 not mapped
=================  ===========================================================================

Values are computed when a request reads them, only for the addresses it reads, so the cost
does not grow with ``load_registers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable

from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger(__name__)

LOAD_START = 100
FIXED_HOLDING = LOAD_START  # holding 0..99 are the fixed map above
INPUT_REGISTERS = 16
BITS = 16
COUNTER_PERIOD_S = 0.1
SINE_PERIOD_S = 10.0

HOLDING_FIXTURES: dict[int, list[int]] = {
    10: list(struct.unpack(">H", struct.pack(">h", -1234))),
    11: list(struct.unpack(">2H", struct.pack(">I", 123456789))),
    13: list(struct.unpack(">2H", struct.pack(">f", -2.5))),
    15: list(struct.unpack(">4H", struct.pack(">d", 1234.5678))),
    20: list(struct.unpack(">8H", b"TANDEM-SIM".ljust(16, b"\x00"))),
    30: [0b1010_0101_0000_0011],
}

# Function codes grouped by the table they address (Modbus Application Protocol v1.1b3, 6).
_READ_COILS = 1
_READ_DISCRETES = 2
_HOLDING_CODES = frozenset({3, 6, 16, 22, 23})
_READ_INPUTS = 4


def _holding_values(load_registers: int) -> list[int]:
    values = [0] * (LOAD_START + load_registers)
    for address, words in HOLDING_FIXTURES.items():
        values[address : address + len(words)] = words
    return values


class PlcState:
    """The time-driven part of the map, written into the registers a request is about to read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()

    def dynamic_words(self) -> tuple[int, list[int]]:
        """(counter, [counter, sine hi, sine lo, ramp]) at this moment."""
        t = self._clock() - self._t0
        counter = int(t / COUNTER_PERIOD_S) & 0xFFFF
        sine = math.sin(2 * math.pi * t / SINE_PERIOD_S)
        hi, lo = struct.unpack(">2H", struct.pack(">f", sine))
        ramp = int(t * 100) % 1000
        return counter, [counter, hi, lo, ramp]

    def coil_word(self) -> int:
        second = int(self._clock() - self._t0)
        word = 0
        for i in range(8):
            if (second + i) % 2 == 0:
                word |= 1 << i
        return word

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus SimDevice action: refresh the addresses a read is about to return."""
        if set_values is not None:
            return None  # writes land as sent; time-driven registers overwrite them on next read
        if function_code in (_READ_COILS, _READ_DISCRETES):
            coils = self.coil_word()
            # Coil and discrete tables are separate lists; bits 8-15 keep whatever was written.
            low = coils if function_code == _READ_COILS else (~coils & 0xFF)
            registers[0] = (registers[0] & 0xFF00) | low
            return None
        end = address + count
        if address < 4:
            _, words = self.dynamic_words()
            offset = -start_address
            for i in range(address, min(end, 4)):
                registers[i + offset] = words[i]
        if function_code in _HOLDING_CODES and end > LOAD_START:
            counter, _ = self.dynamic_words()
            first = max(address, LOAD_START)
            offset = -start_address
            registers[first + offset : end + offset] = [
                (counter + a - LOAD_START) & 0xFFFF for a in range(first, end)
            ]
        return None


# --- faster register responses --------------------------------------------------------------
# pymodbus encodes a register response by packing and concatenating one register at a time
# (~40 us per 125 registers); benchmarks run the simulator flat out on shared cores, so the
# read requests are swapped, through the server's public custom_pdu hook, for ones whose
# response is packed in one struct call. Same bytes on the wire.

_RESPONSE_STRUCTS: dict[int, struct.Struct] = {}


def _pack_registers(registers: list[int]) -> bytes:
    count = len(registers)
    packer = _RESPONSE_STRUCTS.get(count)
    if packer is None:
        packer = _RESPONSE_STRUCTS.setdefault(count, struct.Struct(f">B{count}H"))
    return packer.pack(count * 2, *registers)


class _FastHoldingResponse(ReadHoldingRegistersResponse):
    def encode(self) -> bytes:
        return _pack_registers(list(self.registers))


class _FastInputResponse(ReadInputRegistersResponse):
    def encode(self) -> bytes:
        return _pack_registers(list(self.registers))


class _FastReadHoldingRequest(ReadHoldingRegistersRequest):
    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        response = await super().datastore_update(context, device_id)
        if type(response) is not ReadHoldingRegistersResponse:
            return response  # an exception response keeps its own encoding
        return _FastHoldingResponse(
            registers=response.registers,
            dev_id=response.dev_id,
            transaction_id=response.transaction_id,
        )


class _FastReadInputRequest(ReadInputRegistersRequest):
    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        response = await super().datastore_update(context, device_id)
        if type(response) is not ReadInputRegistersResponse:
            return response
        return _FastInputResponse(
            registers=response.registers,
            dev_id=response.dev_id,
            transaction_id=response.transaction_id,
        )


def build_device(load_registers: int = 1000, state: PlcState | None = None) -> SimDevice:
    """The simulated PLC as a pymodbus SimDevice (separate coil/discrete/holding/input tables)."""
    if not 0 <= load_registers <= 65536 - LOAD_START - 1:
        raise ValueError(f"load_registers must be 0..{65536 - LOAD_START - 1}")
    state = state or PlcState()
    return SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=[False] * BITS, datatype=DataType.BITS)],
            [SimData(0, values=[False] * BITS, datatype=DataType.BITS)],
            [SimData(0, values=_holding_values(load_registers), datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * INPUT_REGISTERS, datatype=DataType.REGISTERS)],
        ),
        action=state.on_access,
    )


async def serve(
    host: str,
    port: int,
    *,
    load_registers: int = 1000,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the simulated PLC until cancelled; ``on_ready`` gets the bound port (useful with 0)."""
    server = ModbusTcpServer(
        build_device(load_registers),
        address=(host, port),
        custom_pdu=[_FastReadHoldingRequest, _FastReadInputRequest],
    )
    await server.serve_forever(background=True)
    bound = _bound_port(server, port)
    log.info("PLC simulator on %s:%s with %s load registers", host, bound, load_registers)
    if on_ready is not None:
        on_ready(bound)
    try:
        await server.serving
    finally:
        await server.shutdown()


def _bound_port(server: ModbusTcpServer, requested: int) -> int:
    listener = server.transport
    sockets = getattr(listener, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return requested


def main(host: str = "127.0.0.1", port: int = 5020, load_registers: int = 1000) -> None:
    """Blocking entry for ``tandem simulate-plc``; prints the bound port once it accepts."""

    def announce(bound: int) -> None:
        print(f"PLC simulator listening on {host}:{bound}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, load_registers=load_registers, on_ready=announce))
