"""Redundant device paths against real simulator processes: failover, return, trigger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tandem.config.hub import parse_device
from tandem.hub.modbus import DeviceEvent, DeviceEventKind, DevicePoller
from tandem.hub.model import Sample
from tests.integration.plc import SimProcess, start_sim

INTERVAL, TIMEOUT = 0.2, 0.3


@pytest.fixture
def sims() -> Iterator[list[SimProcess]]:
    started: list[SimProcess] = []
    try:
        yield started
    finally:
        for sim in started:
            sim.stop()


def two_path_device(primary: int, secondary: int, **redundancy: Any) -> Any:
    return parse_device(
        {
            "name": "plc",
            "timeout": TIMEOUT,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "paths": [
                {"host": "127.0.0.1", "port": primary},
                {"host": "127.0.0.1", "port": secondary},
            ],
            "redundancy": {"probe_interval": 0.2, **redundancy},
            "groups": [
                {
                    "name": "g",
                    "interval": INTERVAL,
                    "tags": [{"name": "counter", "address": 0}, {"name": "load", "address": 150}],
                }
            ],
        }
    )


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def clean_after(samples: list[tuple[float, Sample]], since: float) -> list[float]:
    return [at for at, s in samples if at > since and not s.errors]


async def test_paths_primary_killed_secondary_serves_within_a_poll_and_timeout_then_back(
    sims: list[SimProcess],
) -> None:
    primary, secondary = start_sim(["--port", "0"]), start_sim(["--port", "0"])
    sims += [primary, secondary]
    (port_a,), (port_b,) = primary.ports, secondary.ports
    samples: list[tuple[float, Sample]] = []
    events: list[DeviceEvent] = []
    poller = DevicePoller(
        two_path_device(port_a, port_b, mode="switch-on-failure"),
        source_node="a",
        emit=lambda s: samples.append((time.monotonic(), s)),
        on_event=events.append,
    )
    async with poller:
        await wait_for(lambda: len(clean_after(samples, 0)) >= 3, 10, "polls on the primary")
        assert poller.status().active_path == f"127.0.0.1:{port_a}"
        primary.process.kill()
        killed = time.monotonic()
        await wait_for(lambda: clean_after(samples, killed), 5, "a clean poll after the kill")
        served = clean_after(samples, killed)[0] - killed
        assert served <= INTERVAL + TIMEOUT + 0.15, served
        assert poller.status().active_path == f"127.0.0.1:{port_b}"

        # The primary returns on its port: a probe finds it and the device goes back.
        sims.append(start_sim(["--port", str(port_a)]))
        await wait_for(
            lambda: poller.status().active_path == f"127.0.0.1:{port_a}", 10, "back on primary"
        )
        status = poller.status()
    switches = [e for e in events if e.kind is DeviceEventKind.PATH_SWITCH]
    assert [e.detail["reason"] for e in switches] == ["path_failed", "primary_back"]
    assert status.path_switches == 2 and status.connected
    slots = [s.slot for _, s in samples]
    assert slots == sorted(set(slots)), "a slot repeated or went backwards across the switch"


async def test_paths_trigger_bad_quality_moves_to_secondary_and_back_when_cleared(
    sims: list[SimProcess],
) -> None:
    # The primary lacks the "load" register (exception 2 for that tag): bad quality, not a
    # failure; after 3 such polls the device moves; a fixed primary brings it back.
    primary = start_sim(["--port", "0", "--load-registers", "0"])
    secondary = start_sim(["--port", "0"])
    sims += [primary, secondary]
    (port_a,), (port_b,) = primary.ports, secondary.ports
    samples: list[Sample] = []
    poller = DevicePoller(
        two_path_device(port_a, port_b, mode="switch-on-trigger", bad_polls=3),
        source_node="a",
        emit=samples.append,
    )
    async with poller:
        await wait_for(
            lambda: poller.status().active_path == f"127.0.0.1:{port_b}", 10, "the trigger"
        )
        bad_before = sum(1 for s in samples if s.errors)
        assert bad_before >= 3
        await wait_for(lambda: len(samples) > 0 and not samples[-1].errors, 5, "clean polls")
        primary.stop()
        sims.append(start_sim(["--port", str(port_a)]))
        await wait_for(
            lambda: poller.status().active_path == f"127.0.0.1:{port_a}", 10, "trigger cleared"
        )
        mark = len(samples)
        await wait_for(lambda: len(samples) >= mark + 3, 5, "polls on the fixed primary")
    assert all(not s.errors for s in samples[mark:])
