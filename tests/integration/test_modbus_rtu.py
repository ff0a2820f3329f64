"""Modbus RTU end to end: the simulator on one end of a socat PTY pair, pollers on the other.

Also RTU framing through a serial-to-TCP gateway (the simulator with --rtu-over-tcp).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tandem.config.hub import DeviceConfig, parse_device
from tandem.hub.codec import ERR_TIMEOUT, modbus_exception_error
from tandem.hub.modbus import DevicePoller, LinkPool
from tandem.hub.model import Sample
from tandem.sim.plc import UNIT_REGISTER
from tests.integration.plc import PtyPair, SimProcess, start_pty_pair, start_sim

LOAD = 200
# A PTY refuses parity settings; no parity takes two stop bits (Serial Line v1.02, 2.5.1).
PTY_SERIAL = {"parity": "N", "stopbits": 2, "baudrate": 19200}
TAGS: list[dict[str, Any]] = [
    {"name": "counter", "address": 0},
    {"name": "sine", "address": 1, "type": "float32"},
    {"name": "i16", "address": 10, "type": "int16"},
    {"name": "f64", "address": 15, "type": "float64"},
    {"name": "unit", "address": UNIT_REGISTER},
    {"name": "label", "address": 20, "type": "string", "length": 8},
    {"name": "c0", "area": "coil", "address": 0, "type": "bool"},
    {"name": "d0", "area": "discrete", "address": 0, "type": "bool"},
    {"name": "ghost", "address": 100 + LOAD + 10},
]


@pytest.fixture
def pty() -> Iterator[PtyPair]:
    pair = start_pty_pair()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def sims() -> Iterator[list[SimProcess]]:
    started: list[SimProcess] = []
    try:
        yield started
    finally:
        for sim in started:
            sim.stop()


def rtu_device(
    port: str, unit: int, *, timeout: float = 0.5, interval: float = 0.2
) -> DeviceConfig:
    return parse_device(
        {
            "name": f"meter{unit}",
            "protocol": "modbus-rtu",
            "unit": unit,
            "timeout": timeout,
            "serial": {"port": port, **PTY_SERIAL},
            "groups": [{"name": "g", "interval": interval, "tags": TAGS}],
        }
    )


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def good(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if set(s.errors) <= {"ghost"}]


async def test_rtu_poller_pty_values_and_exception_codes(
    pty: PtyPair, sims: list[SimProcess]
) -> None:
    sims.append(start_sim(["--rtu", pty.device, "--units", "1", "--load-registers", str(LOAD)]))
    samples: list[Sample] = []
    poller = DevicePoller(rtu_device(pty.hub, 1), source_node="edge-a", emit=samples.append)
    async with poller:
        await wait_for(lambda: len(good(samples)) >= 5, 15, "five RTU polls")
        status = poller.status()
    assert status.connected and status.active_path == pty.hub
    first, last = good(samples)[0], good(samples)[-1]
    assert first.values["unit"] == 1
    assert first.values["i16"] == -1234
    assert first.values["f64"] == pytest.approx(1234.5678)
    assert first.values["label"] == "TANDEM-SIM"
    assert isinstance(first.values["c0"], bool) and first.values["d0"] is not first.values["c0"]
    assert -1.0 <= first.values["sine"] <= 1.0  # type: ignore[operator]
    assert last.values["counter"] != first.values["counter"]
    # Past the simulator's map: the slave answers exception 2 over RTU, only for that tag.
    assert all(s.errors == {"ghost": modbus_exception_error(2)} for s in good(samples))


async def test_rtu_bus_three_units_share_one_serial_link(
    pty: PtyPair, sims: list[SimProcess]
) -> None:
    sims.append(start_sim(["--rtu", pty.device, "--units", "1-3", "--load-registers", str(LOAD)]))
    pool = LinkPool()
    streams: dict[int, list[Sample]] = {1: [], 2: [], 3: []}
    pollers = [
        DevicePoller(rtu_device(pty.hub, u), source_node="a", emit=streams[u].append, links=pool)
        for u in streams
    ]
    async with pollers[0], pollers[1], pollers[2]:
        await wait_for(
            lambda: all(len(good(s)) >= 5 for s in streams.values()), 20, "five polls per unit"
        )
    (link,) = pool.links()  # one serial connection for the whole bus
    assert link.label == pty.hub
    for unit, samples in streams.items():
        assert {s.values["unit"] for s in good(samples)} == {unit}, f"unit {unit} got another's"
        assert {s.node for s in samples} == {f"meter{unit}"}


async def test_rtu_bus_slow_unit_does_not_stall_others_beyond_its_timeout(
    pty: PtyPair, sims: list[SimProcess]
) -> None:
    timeout, interval = 0.4, 0.5
    # Unit 2 answers 0.6 s late: past the poller's timeout, so its answers arrive while the
    # poller talks to units 1 and 3.
    sims.append(
        start_sim(
            ["--rtu", pty.device, "--units", "1-3", "--slow", "2:600"]
            + ["--load-registers", str(LOAD)]
        )
    )
    pool = LinkPool()
    emitted: dict[int, list[tuple[float, Sample]]] = {1: [], 2: [], 3: []}

    def recorder(unit: int) -> Callable[[Sample], None]:
        return lambda sample: emitted[unit].append((time.time(), sample))

    pollers = [
        DevicePoller(
            rtu_device(pty.hub, u, timeout=timeout, interval=interval),
            source_node="a",
            emit=recorder(u),
            links=pool,
        )
        for u in emitted
    ]
    async with pollers[0], pollers[1], pollers[2]:
        await wait_for(lambda: len(emitted[1]) >= 10 and len(emitted[3]) >= 10, 30, "10 polls")
    for unit in (1, 3):
        rows = emitted[unit][2:]  # the first polls overlap the simulator's start
        assert all(set(s.errors) <= {"ghost"} for _, s in rows), [s.errors for _, s in rows]
        assert all(s.values["unit"] == unit for _, s in rows)
        # Held up by at most one of unit 2's timeouts per poll (plus bus time), not by one
        # per block of unit 2's group (8 blocks: 3.2 s); generous for a loaded machine.
        delays = [at - s.slot * interval for at, s in rows]
        assert max(delays) < 2 * timeout, delays
    slow = [s for _, s in emitted[2][2:]]
    assert slow and all(set(s.errors.values()) == {ERR_TIMEOUT} for s in slow)
    # Its late answers reached the poller and were dropped, never taken for someone else's.
    (link,) = pool.links()
    assert link.stray_frames >= 1


async def test_rtu_over_tcp_gateway_units_share_one_connection(sims: list[SimProcess]) -> None:
    sim = start_sim(
        ["--port", "0", "--rtu-over-tcp", "--units", "4,5", "--load-registers", str(LOAD)]
    )
    sims.append(sim)
    (port,) = sim.ports
    pool = LinkPool()
    streams: dict[int, list[Sample]] = {4: [], 5: []}
    pollers = [
        DevicePoller(
            parse_device(
                {
                    "name": f"drive{u}",
                    "protocol": "modbus-rtu-over-tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "unit": u,
                    "timeout": 0.5,
                    "groups": [{"name": "g", "interval": 0.1, "tags": TAGS}],
                }
            ),
            source_node="a",
            emit=streams[u].append,
            links=pool,
        )
        for u in streams
    ]
    async with pollers[0], pollers[1]:
        await wait_for(lambda: all(len(good(s)) >= 5 for s in streams.values()), 15, "polls")
    (link,) = pool.links()
    assert link.framing == "rtu" and link.label == f"127.0.0.1:{port}"
    for unit, samples in streams.items():
        assert {s.values["unit"] for s in good(samples)} == {unit}
        assert good(samples)[-1].values["i16"] == -1234
