"""A Modbus PLC simulator whose registers move with time, for the demo, tests and benchmarks.

It speaks Modbus TCP, RTU on a serial device (a PTY from socat, or a real port) or RTU
framing on TCP (a serial-to-TCP gateway); one process can serve many TCP ports and many
unit ids, and can make one unit answer late, for load and bus tests.

Register map (every unit id is answered unless ``units`` limits them, and then the others
stay silent as on a real bus; ``t`` = seconds since the simulator started):

=================  ===========================================================================
holding 0          counter, uint16, +1 every 100 ms, wraps at 65536
holding 1-2        sine, float32 (big word/byte order), sin(2*pi*t/10): period 10 s, -1..1
holding 3          ramp, uint16, 0..999, +1 every 10 ms (one full ramp per 10 s)
holding 4-9        zero, writable
holding 10         int16 fixture, -1234
holding 11-12      uint32 fixture, 123456789 (big word order)
holding 13-14      float32 fixture, -2.5
holding 15-18      float64 fixture, 1234.5678
holding 19         the unit id the simulated device answers as (0 when it answers every id)
holding 20-27      string fixture "TANDEM-SIM", 8 registers, NUL padded
holding 28-29      zero
holding 30         bit fixture 0b1010_0101_0000_0011
holding 31-49      zero, writable
holding 50-99      the write block: zero at start, keeps whatever is written (FC 6/16)
holding 100..      N load registers (``load_registers``, default 1000): register 100+i holds
                   (counter + i) mod 65536, so every value changes every 100 ms
holding >= 100+N   not mapped: any read touching it gets exception 2 (illegal data address)
input 0-3          same as holding 0-3; input 4-15 zero
input 16-17        write counter, uint32 (big word order): write requests (FC 5/6/15/16) this
                   process received at mapped addresses, on any table, unit or port
input >= 18        not mapped
coil 0-7           pattern: coil i is on when (whole seconds + i) is even, so all toggle each s
coil 8-15          off, keep whatever is written (FC 5/15);   coil >= 16 not mapped
discrete 0-7       inverse of coil 0-7; discrete 8-15 off; discrete >= 16 not mapped
=================  ===========================================================================

With ``write_log`` (``tandem simulate-plc --write-log FILE``) every write is also appended to
FILE as one JSON line, ``{"fc": 16, "address": 50, "values": [1, 2]}``, flushed before the
write is answered, so a test can check exactly which writes reached the device.

Values are computed when a request reads them, only for the addresses it reads, so the cost
does not grow with ``load_registers``.

A ``preset`` (``tandem simulate-plc --preset FILE``) fills the static part of the map with
known contents, for checking a decoding against a value worked out by hand: holding 4..99,
input 4 and up, coil and discrete 8 and up (the input and bit tables grow to fit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger(__name__)

LOAD_START = 100
FIXED_HOLDING = LOAD_START  # holding 0..99 are the fixed map above
INPUT_REGISTERS = 18
WRITE_COUNTER = 16  # input 16-17: writes received, uint32
WRITE_BLOCK = range(50, 100)
BITS = 16
UNIT_REGISTER = 19
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


Area = Literal["holding", "input", "coil", "discrete"]
Preset = dict[Area, dict[int, list[int]]]
"""Known contents by table: first address -> the words (or 0/1 bits) from there on."""

# Where a preset may write: the rest of the map changes with time or is the load area.
_PRESET_FIRST: dict[str, int] = {"holding": 4, "input": 4, "coil": 8, "discrete": 8}


def _check_preset(preset: Preset, load_registers: int) -> None:
    """Refuse a preset that would overlap the time-driven registers or the load area."""
    for area, blocks in preset.items():
        first = _PRESET_FIRST.get(area)
        if first is None:
            raise ValueError(f"preset: unknown table {area!r}; use {', '.join(_PRESET_FIRST)}")
        limit = LOAD_START if area == "holding" and load_registers else 65536
        for start, values in blocks.items():
            if start < first or start + len(values) > limit:
                raise ValueError(
                    f"preset: {area} {start}..{start + len(values) - 1} is outside "
                    f"{first}..{limit - 1}, the part of the map that keeps what it is given"
                )
            word_limit = 1 if area in ("coil", "discrete") else 0xFFFF
            if any(not 0 <= v <= word_limit for v in values):
                raise ValueError(f"preset: {area} {start}: values must be 0..{word_limit}")


def _apply(table: list[int], blocks: dict[int, list[int]], size: int) -> list[int]:
    table = table + [0] * max(0, size - len(table))
    for start, values in blocks.items():
        table[start : start + len(values)] = values
    return table


def _preset_size(blocks: dict[int, list[int]], minimum: int) -> int:
    return max([minimum, *(start + len(values) for start, values in blocks.items())])


def load_preset(text: str) -> Preset:
    """A preset from JSON: ``{"holding": {"40": [1, 2]}, "coil": {"8": [1, 0, 1]}}``."""
    import json

    try:
        raw = json.loads(text)
    except RecursionError:
        raise ValueError("preset: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ValueError("preset: the top level must be an object of tables")
    preset: Preset = {}
    for area, blocks in raw.items():
        if area not in _PRESET_FIRST or not isinstance(blocks, dict):
            raise ValueError(f"preset: {area!r} must be one of {', '.join(_PRESET_FIRST)}")
        parsed: dict[int, list[int]] = {}
        for start, values in blocks.items():
            if not str(start).isdigit() or not isinstance(values, list):
                raise ValueError(f"preset: {area} {start!r}: give an address and a list")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError(f"preset: {area} {start}: values must be integers")
            parsed[int(start)] = values
        preset[area] = parsed
    return preset


def _holding_values(load_registers: int) -> list[int]:
    values = [0] * (LOAD_START + load_registers)
    for address, words in HOLDING_FIXTURES.items():
        values[address : address + len(words)] = words
    return values


class PlcState:
    """The time-driven part of the map, written into the registers a request is about to read."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, write_log: str | None = None
    ) -> None:
        self._clock = clock
        self._t0 = clock()
        self.load_end = 65536  # first holding address after the load registers
        self.writes = 0  # write requests received (input 16-17)
        self._write_log = open(write_log, "a", encoding="utf-8") if write_log else None  # noqa: SIM115

    def note_write(self, function_code: int, address: int, values: list[int] | list[bool]) -> None:
        """Count a write (and log it) before it is applied and answered."""
        self.writes += 1
        if self._write_log is not None:
            line = {"fc": function_code, "address": address, "values": [int(v) for v in values]}
            self._write_log.write(json.dumps(line) + "\n")
            self._write_log.flush()

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
            self.note_write(function_code, address, set_values)
            return None  # writes land as sent; time-driven registers overwrite them on next read
        if function_code == _READ_INPUTS and address + count > WRITE_COUNTER:
            offset = -start_address
            tally = ((self.writes >> 16) & 0xFFFF, self.writes & 0xFFFF)
            for i in range(max(address, WRITE_COUNTER), min(address + count, WRITE_COUNTER + 2)):
                registers[i + offset] = tally[i - WRITE_COUNTER]
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
        last = min(end, self.load_end)  # a preset beyond the load registers keeps its values
        if function_code in _HOLDING_CODES and last > LOAD_START:
            counter, _ = self.dynamic_words()
            first = max(address, LOAD_START)
            offset = -start_address
            registers[first + offset : last + offset] = [
                (counter + a - LOAD_START) & 0xFFFF for a in range(first, last)
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


class _PinnedIds:
    """A late answer that keeps its own unit and transaction id.

    pymodbus's request handler stamps every response with the ids of the *last* request it
    received; a response delayed past the next request would go out labelled as that one's
    answer. A real slow device answers as itself, so a delayed response pins its ids.
    """

    _pinned: tuple[int, int] | None = None

    @property
    def dev_id(self) -> int:
        return self.__dict__.get("_dev_id", 0) if self._pinned is None else self._pinned[0]

    @dev_id.setter
    def dev_id(self, value: int) -> None:
        self.__dict__["_dev_id"] = value

    @property
    def transaction_id(self) -> int:
        return self.__dict__.get("_tid", 0) if self._pinned is None else self._pinned[1]

    @transaction_id.setter
    def transaction_id(self, value: int) -> None:
        self.__dict__["_tid"] = value


@dataclass(frozen=True, slots=True)
class UnitPolicy:
    """Which unit ids answer (empty: all of them) and which answer late, by how many seconds."""

    units: frozenset[int] = frozenset()
    slow: dict[int, float] = field(default_factory=dict)

    async def admit(self, device_id: int) -> float:
        """Wait out a slow unit's delay; raise NoSuchIdException for a unit not served."""
        if self.units and device_id not in self.units:
            raise NoSuchIdException(f"unit {device_id} is not served")
        delay = self.slow.get(device_id, 0.0)
        if delay:
            await asyncio.sleep(delay)
        return delay


def _pinned(response: ModbusPDU) -> ModbusPDU:
    late = type(f"Late{type(response).__name__}", (_PinnedIds, type(response)), {})
    ids = (response.dev_id, response.transaction_id)
    response.__class__ = late
    response._pinned = ids  # type: ignore[attr-defined]
    return response


_FAST_RESPONSES: dict[type[ModbusPDU], type[_FastHoldingResponse | _FastInputResponse]] = {
    ReadHoldingRegistersResponse: _FastHoldingResponse,
    ReadInputRegistersResponse: _FastInputResponse,
}


def _request_classes(policy: UnitPolicy) -> list[type[ModbusPDU]]:
    """Requests that apply ``policy``; register read responses are packed in one struct call."""

    def fast(response: ModbusPDU) -> ModbusPDU:
        kind = _FAST_RESPONSES.get(type(response))
        if kind is None:
            return response  # bits and exception responses keep their own encoding
        return kind(
            registers=response.registers,
            dev_id=response.dev_id,
            transaction_id=response.transaction_id,
        )

    def governed(base: type[ModbusPDU]) -> type[ModbusPDU]:
        async def datastore_update(
            self: ModbusPDU, context: ModbusServerContext, device_id: int
        ) -> ModbusPDU:
            ids = (self.dev_id, self.transaction_id)
            delay = await policy.admit(device_id)
            response = fast(await base.datastore_update(self, context, device_id))
            if delay:
                response.dev_id, response.transaction_id = ids
                response = _pinned(response)
            return response

        return type(f"Sim{base.__name__}", (base,), {"datastore_update": datastore_update})

    return [
        governed(base)
        for base in (
            ReadHoldingRegistersRequest,
            ReadInputRegistersRequest,
            ReadCoilsRequest,
            ReadDiscreteInputsRequest,
            # Writes too: a slow unit applies and confirms a write late, as a busy PLC does.
            WriteSingleCoilRequest,
            WriteMultipleCoilsRequest,
            WriteSingleRegisterRequest,
            WriteMultipleRegistersRequest,
        )
    ]


def build_device(
    load_registers: int = 1000,
    state: PlcState | None = None,
    unit: int = 0,
    preset: Preset | None = None,
) -> SimDevice:
    """The simulated PLC as a pymodbus SimDevice (separate coil/discrete/holding/input tables).

    ``unit`` 0 answers every unit id; holding 19 holds the unit, so a test can tell units apart.
    """
    if not 0 <= load_registers <= 65536 - LOAD_START - 1:
        raise ValueError(f"load_registers must be 0..{65536 - LOAD_START - 1}")
    preset = preset or {}
    _check_preset(preset, load_registers)
    state = state or PlcState()
    state.load_end = LOAD_START + load_registers
    holding = _holding_values(load_registers)
    holding[UNIT_REGISTER] = unit
    holding_blocks = preset.get("holding", {})
    holding = _apply(holding, holding_blocks, _preset_size(holding_blocks, len(holding)))
    tables: dict[str, list[int]] = {}
    sized: tuple[tuple[Area, int], ...] = (
        ("input", INPUT_REGISTERS),
        ("coil", BITS),
        ("discrete", BITS),
    )
    for area, minimum in sized:
        blocks = preset.get(area, {})
        size = _preset_size(blocks, minimum)
        if area != "input":
            size = -(-size // BITS) * BITS  # bit tables come in whole 16-bit words
        tables[area] = _apply([0] * minimum, blocks, size)

    def bits(area: str) -> SimData:
        return SimData(0, values=[v != 0 for v in tables[area]], datatype=DataType.BITS)

    return SimDevice(
        id=unit,
        simdata=(
            [bits("coil")],
            [bits("discrete")],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=tables["input"], datatype=DataType.REGISTERS)],
        ),
        action=state.on_access,
    )


def build_devices(
    load_registers: int,
    policy: UnitPolicy,
    preset: Preset | None = None,
    state: PlcState | None = None,
) -> list[SimDevice]:
    """One SimDevice per served unit (one shared clock), or one that answers every id."""
    state = state or PlcState()
    units = sorted(policy.units) or [0]
    return [build_device(load_registers, state, unit, preset) for unit in units]


async def serve(
    host: str,
    port: int,
    *,
    load_registers: int = 1000,
    on_ready: Callable[[int], None] | None = None,
    policy: UnitPolicy | None = None,
    framing: Literal["mbap", "rtu"] = "mbap",
    ports: int = 1,
    preset: Preset | None = None,
    write_log: str | None = None,
) -> None:
    """Serve the simulated PLC on ``ports`` TCP ports until cancelled.

    ``on_ready`` gets each bound port (port 0 lets the kernel choose; otherwise the ports are
    ``port``, ``port + 1``, ...). ``framing`` "rtu" makes it a serial-to-TCP gateway.
    """
    policy = policy or UnitPolicy()
    state = PlcState(write_log=write_log)  # one write counter for every port
    servers: list[ModbusTcpServer] = []
    try:
        for index in range(ports):
            wanted = 0 if port == 0 else port + index
            server = ModbusTcpServer(
                build_devices(load_registers, policy, preset, state),
                address=(host, wanted),
                framer=FramerType.RTU if framing == "rtu" else FramerType.SOCKET,
                ignore_missing_devices=True,
                custom_pdu=_request_classes(policy),
            )
            servers.append(server)
            await server.serve_forever(background=True)
            bound = _bound_port(server, wanted)
            log.info("PLC simulator (%s) on %s:%s", framing, host, bound)
            if on_ready is not None:
                on_ready(bound)
        await asyncio.gather(*(server.serving for server in servers))
    finally:
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]


async def serve_serial(
    device: str,
    *,
    load_registers: int = 1000,
    policy: UnitPolicy | None = None,
    baudrate: int = 19200,
    parity: str = "N",
    stopbits: int = 2,
    on_ready: Callable[[str], None] | None = None,
    preset: Preset | None = None,
    write_log: str | None = None,
) -> None:
    """Serve the simulated PLC as RTU slave(s) on a serial device until cancelled.

    No parity (with two stop bits, Serial Line v1.02 2.5.1) by default: a PTY, as socat
    makes them, refuses any parity setting.
    """
    policy = policy or UnitPolicy()
    server = ModbusSerialServer(
        build_devices(load_registers, policy, preset, PlcState(write_log=write_log)),
        framer=FramerType.RTU,
        port=device,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        ignore_missing_devices=True,
        custom_pdu=_request_classes(policy),
    )
    await server.serve_forever(background=True)
    log.info("PLC simulator (rtu) on %s", device)
    if on_ready is not None:
        on_ready(device)
    try:
        await server.serving
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def _bound_port(server: ModbusTcpServer, requested: int) -> int:
    listener = server.transport
    sockets = getattr(listener, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return requested


def main(
    host: str = "127.0.0.1",
    port: int = 5020,
    load_registers: int = 1000,
    *,
    ports: int = 1,
    units: Iterable[int] = (),
    slow: dict[int, float] | None = None,
    framing: Literal["mbap", "rtu"] = "mbap",
    rtu_device: str | None = None,
    preset: Preset | None = None,
    write_log: str | None = None,
) -> None:
    """Blocking entry for ``tandem simulate-plc``; prints one line per port once it accepts."""
    policy = UnitPolicy(frozenset(units), dict(slow or {}))
    build_device(load_registers, preset=preset)  # a bad preset fails here, before any port opens

    def announce(bound: int) -> None:
        print(f"PLC simulator listening on {host}:{bound}", flush=True)

    def announce_serial(device: str) -> None:
        print(f"PLC simulator serving RTU on {device}", flush=True)

    if rtu_device is not None:
        run = serve_serial(
            rtu_device,
            load_registers=load_registers,
            policy=policy,
            on_ready=announce_serial,
            preset=preset,
            write_log=write_log,
        )
    else:
        run = serve(
            host,
            port,
            load_registers=load_registers,
            on_ready=announce,
            policy=policy,
            framing=framing,
            ports=ports,
            preset=preset,
            write_log=write_log,
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run)
