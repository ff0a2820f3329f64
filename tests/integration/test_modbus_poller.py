"""DevicePoller against the real PLC simulator subprocess: values, slots, outages, exceptions."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from tandem.config.hub import DeviceConfig, parse_device
from tandem.hub.codec import (
    ERR_DISCONNECTED,
    ERR_IO,
    ERR_TIMEOUT,
    modbus_exception_error,
)
from tandem.hub.modbus import DevicePoller
from tandem.hub.model import Sample
from tests.integration.plc import PlcProcess, free_port, running_plc, start_plc

LOAD = 200


@pytest.fixture
def plc() -> Iterator[PlcProcess]:
    with running_plc(load_registers=LOAD) as process:
        yield process


def device(port: int, groups: list[dict[str, Any]], **extra: Any) -> DeviceConfig:
    return parse_device(
        {"name": "plc", "host": "127.0.0.1", "port": port, "groups": groups, **extra}
    )


FAST_TAGS: list[dict[str, Any]] = [
    {"name": "counter", "address": 0},
    {"name": "sine", "address": 1, "type": "float32"},
    {"name": "ramp", "address": 3, "scale": 0.1, "offset": 1.0},
    {"name": "i16", "address": 10, "type": "int16"},
    {"name": "u32", "address": 11, "type": "uint32"},
    {"name": "f32", "address": 13, "type": "float32"},
    {"name": "f64", "address": 15, "type": "float64"},
    {"name": "label", "address": 20, "type": "string", "length": 8},
    {"name": "flag0", "address": 30, "type": "bit", "bit": 0},
    {"name": "flag2", "address": 30, "type": "bit", "bit": 2},
    {"name": "in_counter", "area": "input", "address": 0},
    {"name": "c0", "area": "coil", "address": 0, "type": "bool"},
    {"name": "c1", "area": "coil", "address": 1, "type": "bool"},
    {"name": "d0", "area": "discrete", "address": 0, "type": "bool"},
]


async def collect_until(
    poller: DevicePoller,
    samples: list[Sample],
    done: Callable[[list[Sample]], bool],
    timeout: float,
) -> None:
    """Run the poller until ``done(samples)`` holds; fail the test if it never does."""
    async with poller:
        deadline = time.monotonic() + timeout
        while not done(samples):
            assert time.monotonic() < deadline, f"condition not met in {timeout}s: {samples[-3:]}"
            await asyncio.sleep(0.02)


async def test_device_poller_simulator_values_have_right_types_and_scaling(
    plc: PlcProcess,
) -> None:
    samples: list[Sample] = []
    config = device(plc.port, [{"name": "fast", "interval": 0.1, "tags": FAST_TAGS}])
    poller = DevicePoller(config, source_node="edge-a", emit=samples.append)
    good = lambda s: [x for x in s if not x.errors]  # noqa: E731
    await collect_until(poller, samples, lambda s: len(good(s)) >= 12, timeout=10)

    ok = good(samples)
    first, last = ok[0], ok[-1]
    assert set(first.values) == {t["name"] for t in FAST_TAGS}
    assert (first.node, first.group, first.source_node, first.seq) == ("plc", "fast", "edge-a", 0)
    assert isinstance(first.values["counter"], int)
    assert last.values["counter"] > first.values["counter"]  # +1 per 100 ms, 12 polls apart
    for sample in ok:
        sine = sample.values["sine"]
        assert isinstance(sine, float) and -1.0 <= sine <= 1.0
        ramp = sample.values["ramp"]
        assert isinstance(ramp, float) and 1.0 <= ramp <= 1.0 + 99.9 + 1e-9
        assert isinstance(sample.values["c0"], bool)
        assert sample.values["d0"] is (not sample.values["c0"])
        assert sample.values["c1"] is (not sample.values["c0"])
    assert first.values["i16"] == -1234
    assert first.values["u32"] == 123456789
    assert first.values["f32"] == -2.5
    assert first.values["f64"] == pytest.approx(1234.5678)
    assert first.values["label"] == "TANDEM-SIM"
    assert (first.values["flag0"], first.values["flag2"]) == (True, False)
    assert abs(first.values["in_counter"] - first.values["counter"]) <= 1
    assert len({s.values["sine"] for s in ok}) > 1, "the sine never moved"


async def test_device_poller_100ms_group_slots_are_consecutive_on_the_grid(
    plc: PlcProcess,
) -> None:
    samples: list[Sample] = []
    config = device(plc.port, [{"name": "fast", "interval": 0.1, "tags": FAST_TAGS[:3]}])
    poller = DevicePoller(config, source_node="edge-a", emit=samples.append)
    await collect_until(poller, samples, lambda s: len(s) >= 20, timeout=10)

    slots = [s.slot for s in samples]
    steps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert all(step >= 1 for step in steps), slots
    # Any gap must be an overrun the poller counted, never a silent loss.
    (status,) = poller.status().groups
    assert sum(step - 1 for step in steps) <= status.overruns
    assert steps.count(1) >= 0.8 * len(steps), steps
    for sample in samples:
        scheduled_ms = sample.slot * 100
        # Polls start at (or just after) their grid point, generous bound for a busy host.
        assert -5 <= sample.timestamp_ms - scheduled_ms <= 80, (sample.slot, sample.timestamp_ms)
    assert status.polls >= len(samples)
    assert status.last_slot == samples[-1].slot or status.last_slot > samples[-1].slot


async def test_device_poller_unmapped_address_gets_modbus_exception_code(
    plc: PlcProcess,
) -> None:
    beyond_map = 100 + LOAD  # first holding register the simulator does not map
    samples: list[Sample] = []
    tags = [
        {"name": "counter", "address": 0},
        {"name": "ghost", "address": beyond_map + 50},
        {"name": "ghost2", "address": beyond_map + 51, "type": "int16"},
    ]
    poller = DevicePoller(
        device(plc.port, [{"name": "g", "interval": 0.05, "tags": tags}]),
        source_node="edge-a",
        emit=samples.append,
    )
    await collect_until(poller, samples, lambda s: len(s) >= 3, timeout=10)

    illegal_address = modbus_exception_error(2)
    for sample in samples[1:]:
        assert sample.errors == {"ghost": illegal_address, "ghost2": illegal_address}
        assert "counter" in sample.values and "ghost" not in sample.values
    status = poller.status()
    assert status.last_error is not None and "exception 2" in status.last_error
    assert status.groups[0].errors >= 2


async def test_plc_simulator_several_clients_are_served_concurrently(plc: PlcProcess) -> None:
    streams: list[list[Sample]] = [[], [], []]
    pollers = [
        DevicePoller(
            device(plc.port, [{"name": "g", "interval": 0.05, "tags": FAST_TAGS[:3]}]),
            source_node=f"edge-{i}",
            emit=stream.append,
        )
        for i, stream in enumerate(streams)
    ]
    async with pollers[0], pollers[1], pollers[2]:
        await wait_for(lambda: all(sum(not x.errors for x in s) >= 5 for s in streams), 10)
    assert all(p.status().groups[0].polls >= 5 for p in pollers)
    # Same grid, same device: the nodes agree on slots for polls made at the same time.
    common = {s.slot for s in streams[0]} & {s.slot for s in streams[1]}
    assert len(common) >= 3


async def test_device_poller_unreachable_device_emits_disconnected_samples() -> None:
    samples: list[Sample] = []
    config = device(
        free_port(),
        [{"name": "g", "interval": 0.05, "tags": FAST_TAGS[:3]}],
        reconnect_min=0.05,
        reconnect_max=0.2,
    )
    poller = DevicePoller(config, source_node="edge-a", emit=samples.append)
    await collect_until(poller, samples, lambda s: len(s) >= 5, timeout=10)

    for sample in samples:
        assert sample.values == {}
        assert sample.errors == dict.fromkeys(("counter", "sine", "ramp"), ERR_DISCONNECTED)
    slots = [s.slot for s in samples]
    assert slots == sorted(set(slots))
    status = poller.status()
    assert status.connected is False
    assert status.last_error is not None and "cannot connect" in status.last_error


async def test_device_poller_simulator_restart_resumes_polling_by_itself() -> None:
    samples: list[Sample] = []
    plc = start_plc(load_registers=LOAD)
    try:
        config = device(
            plc.port,
            [{"name": "g", "interval": 0.1, "tags": FAST_TAGS[:3]}],
            timeout=0.5,
            reconnect_min=0.05,
            reconnect_max=0.4,
        )
        poller = DevicePoller(config, source_node="edge-a", emit=samples.append)
        async with poller:
            await wait_for(lambda: any(not s.errors for s in samples), 10)
            plc.stop()
            await wait_for(lambda: _trailing_disconnected(samples) >= 3, 10)
            assert poller.status().connected is False
            outage = len(samples)
            plc = start_plc(plc.port, load_registers=LOAD)
            await wait_for(lambda: any(not s.errors for s in samples[outage:]), 15)
            assert poller.status().connected is True
    finally:
        plc.stop()
    codes = {code for s in samples for code in s.errors.values()}
    # A request cut off by the outage may report a timeout or I/O error; nothing else.
    assert codes <= {ERR_DISCONNECTED, ERR_TIMEOUT, ERR_IO}
    assert ERR_DISCONNECTED in codes
    slots = [s.slot for s in samples]
    assert slots == sorted(set(slots)), "a slot repeated or went backwards across the outage"


async def test_device_poller_silent_device_is_unreachable_while_its_link_is_still_up() -> None:
    """A device behind a live TCP connection that stops answering: the HA health check must
    see it at the first unanswered poll, not after the link gives up on it."""
    silent = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(260):
            if not silent.is_set():  # answer "read holding registers" with zeros
                tid, count = data[0:2], int.from_bytes(data[10:12], "big")
                body = bytes([data[6], 3, 2 * count]) + bytes(2 * count)
                writer.write(tid + b"\x00\x00" + len(body).to_bytes(2, "big") + body)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    samples: list[Sample] = []
    config = device(port, [{"name": "g", "interval": 0.1, "tags": FAST_TAGS[:1]}], timeout=1.0)
    poller = DevicePoller(config, source_node="edge-a", emit=samples.append)
    async with server, poller:
        await wait_for(lambda: any(not s.errors for s in samples), 10)
        assert poller.reachable
        silent.set()
        await wait_for(lambda: ERR_TIMEOUT in samples[-1].errors.values(), 10)
        assert poller.connected and not poller.reachable
        silent.clear()  # answering again: reachable at the first answered poll
        await wait_for(lambda: poller.reachable, 10)
        assert not samples[-1].errors


def _trailing_disconnected(samples: list[Sample]) -> int:
    count = 0
    for sample in reversed(samples):
        if not sample.errors or set(sample.errors.values()) != {ERR_DISCONNECTED}:
            break
        count += 1
    return count


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_device_poller_throughput_probe_prints_rates() -> None:
    """Not a pass/fail benchmark: prints poller vs bare-pymodbus tag values per second."""
    registers = 1000
    seconds = 3.0
    with running_plc(load_registers=registers) as plc:
        tags = [{"name": f"r{i}", "address": 100 + i} for i in range(registers)]
        samples: list[Sample] = []
        poller = DevicePoller(
            device(plc.port, [{"name": "load", "interval": 0.01, "tags": tags}]),
            source_node="edge-a",
            emit=samples.append,
        )
        async with poller:
            await asyncio.sleep(0.5)
            start_count, started = len(samples), time.perf_counter()
            await asyncio.sleep(seconds)
            window = samples[start_count:]
            elapsed = time.perf_counter() - started
        polled = sum(len(s.values) for s in window) / elapsed
        (group,) = poller.status().groups

        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port)
        await client.connect()
        try:
            reads, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for start in range(100, 100 + registers, 125):
                    response = await client.read_holding_registers(start, count=125, device_id=1)
                    assert not response.isError()
                    reads += 125
            bare = reads / (time.perf_counter() - started)
        finally:
            client.close()
    print(
        f"\nthroughput probe, {registers} registers: poller at 10 ms {polled:,.0f} values/s "
        f"({len(window)} polls, {group.overruns} overruns, last latency "
        f"{group.last_latency_ms:.1f} ms); bare pymodbus loop {bare:,.0f} values/s"
    )
    assert polled > 0 and bare > 0
    assert all(not s.errors for s in window)
    assert math.isfinite(polled)
