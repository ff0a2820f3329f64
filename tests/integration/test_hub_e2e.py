"""The data hub end to end: `tandem run` as a real process, the PLC simulator, a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.config.hub import load_config
from tandem.hub.outbox import Outbox
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tests.integration.broker import Broker, Received, RecordingSubscriber
from tests.integration.plc import PlcProcess, start_plc

# The acceptance run uses 30 s; set TANDEM_TEST_OUTAGE_S lower for a quicker local run.
OUTAGE_S = float(os.environ.get("TANDEM_TEST_OUTAGE_S", "30"))
START_TIMEOUT_S = 20.0
LISTENING = re.compile(r"API listening on (?:https?://)?[\d.]+:(\d+)")


# ---- helpers shared with the other hub test modules -------------------------------------------


class NodeProcess:
    """`tandem run -c <config>` in a subprocess; the API port is read from its log (port 0)."""

    def __init__(self, config: Path, log: Path, token: str | None = None) -> None:
        self.config = config
        self.log = log
        self.port: int | None = None
        # A viewer token for the node's data dir, made before it starts (read-only tests); a
        # restart on a data dir that has since become read-only passes the earlier one.
        token = token or create_token(load_config(config).data_dir, Role.VIEWER)
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tandem", "run", "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def url(self) -> str:
        assert self.port is not None, "node not ready"
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tandem run exited with {self.process.returncode}:\n{self.log_text()}")
            found = LISTENING.findall(self.log_text())
            if found:
                self.port = int(found[-1])
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"tandem run not listening within {timeout} s:\n{self.log_text()}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=5, headers=self.headers)

    def status(self) -> dict[str, Any]:
        response = self.get("/api/v1/status")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def astatus(self) -> dict[str, Any]:
        """status() without blocking the test's event loop (and the subscriber on it)."""
        async with httpx.AsyncClient(timeout=5, headers=self.headers) as client:
            response = await client.get(f"{self.url}/api/v1/status")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; a node that does not stop in time is killed and the test fails."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"tandem run ignored SIGTERM for {timeout} s:\n{self.log_text()}")
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def running_node(config: Path, log: Path, token: str | None = None) -> Iterator[NodeProcess]:
    """A node for the block; killed afterwards if the test did not stop it."""
    node = NodeProcess(config, log, token)
    try:
        yield node
    finally:
        node.kill()


def write_config(
    path: Path,
    *,
    data_dir: Path,
    broker_port: int,
    devices: list[dict[str, Any]],
    node: str = "e2e-a",
) -> Path:
    """A node config on loopback with an ephemeral API port; JSON is valid YAML."""
    import json

    config = {
        "node": node,
        "data_dir": str(data_dir),
        "api": {"host": "127.0.0.1", "port": 0},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "keepalive": 5},
        "devices": devices,
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def counter_device(plc_port: int, name: str = "plc1", interval: float = 0.1) -> dict[str, Any]:
    """One device with one fast group reading the simulator's counter and sine."""
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": plc_port,
        "timeout": 0.5,
        "reconnect_max": 0.5,
        "groups": [
            {
                "name": "fast",
                "interval": interval,
                "tags": [
                    {"name": "counter", "address": 0, "type": "uint16"},
                    {"name": "sine", "address": 1, "type": "float32"},
                ],
            }
        ],
    }


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def bodies_by_group(messages: list[Received]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        body = m.json()
        out[body["group"]].append(body)
    return out


# QoS 1 is at-least-once on each hop: a message in flight (to or from the broker) at the instant
# the broker stops is delivered again after it returns, byte for byte, as the protocol demands.
# Those redeliveries are bounded by the publisher's inflight window and dropped here by identity;
# a slot that arrives twice with different content (polled twice) still fails.
MAX_REDELIVERIES = 20


def drop_redeliveries(bodies: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The bodies with exact repeats of an earlier message removed, and how many there were."""
    # (node, group, seq): seq counts per device and group, and group names repeat per device
    seen: set[tuple[str, str, int]] = set()
    first: dict[tuple[str, str, int], dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    repeats = 0
    for body in bodies:
        key = (body["node"], body["group"], body["seq"])
        if key in seen:
            assert body == first[key], f"seq {key} arrived twice with different content"
            repeats += 1
            continue
        seen.add(key)
        first[key] = body
        kept.append(body)
    return kept, repeats


def assert_every_slot_once_in_order(slots: list[int]) -> None:
    """The consecutive range from the first to the last slot seen, none missing, none twice."""
    assert slots, "no samples"
    duplicates = sorted({s for s in slots if slots.count(s) > 1})
    assert not duplicates, f"slots received twice: {duplicates[:20]}"
    expected = list(range(slots[0], slots[-1] + 1))
    missing = sorted(set(expected) - set(slots))
    assert not missing, f"{len(missing)} slot(s) missing, e.g. {missing[:20]}"
    assert slots == expected, "slots out of order"


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def plc() -> Iterator[PlcProcess]:
    process = start_plc()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    # Persistent, so a subscriber's session and its queued messages survive a broker restart.
    with Broker(workdir, persistent=True) as b:
        yield b


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[RecordingSubscriber]:
    async with RecordingSubscriber(
        broker.host, broker.port, "/neuron/#", client_id="e2e-recorder"
    ) as sub:
        yield sub


# ---- tests ------------------------------------------------------------------------------------


TYPED_DEVICE_GROUPS = [
    {
        "name": "types",
        "interval": 0.2,
        "tags": [
            {"name": "i16", "address": 10, "type": "int16"},
            {"name": "u32", "address": 11, "type": "uint32"},
            {"name": "f32", "address": 13, "type": "float32"},
            {"name": "f64", "address": 15, "type": "float64"},
            {"name": "label", "address": 20, "type": "string", "length": 8},
            {"name": "flag0", "address": 30, "type": "bit", "bit": 0},
            {"name": "flag2", "address": 30, "type": "bit", "bit": 2},
            {"name": "ramp", "address": 3, "type": "uint16"},
            {"name": "c0", "area": "coil", "address": 0, "type": "bool"},
            {"name": "in_counter", "area": "input", "address": 0, "type": "uint16"},
        ],
    }
]
# A second device on the same simulator, so the same registers can be read with scaling.
SCALED_DEVICE_GROUPS = [
    {
        "name": "scaled",
        "interval": 0.2,
        "tags": [
            {"name": "temp", "address": 10, "type": "int16", "scale": 0.1, "offset": 100.0},
            {"name": "pct", "address": 3, "type": "uint16", "scale": 0.1},
        ],
    }
]


async def test_hub_values_arrive_with_types_and_scaling(
    tmp_path: Path, plc: PlcProcess, broker: Broker, subscriber: RecordingSubscriber
) -> None:
    base = {"host": "127.0.0.1", "port": plc.port, "timeout": 0.5}
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmp_path / "data",
        broker_port=broker.port,
        devices=[
            {**base, "name": "plc1", "groups": TYPED_DEVICE_GROUPS},
            {**base, "name": "plc2", "groups": SCALED_DEVICE_GROUPS},
        ],
    )
    with running_node(config, tmp_path / "node.log") as node:
        await node.wait_ready()

        def good(group: str) -> list[dict[str, Any]]:
            return [b for b in bodies_by_group(subscriber.messages)[group] if not b["errors"]]

        await wait_until(
            lambda: len(good("types")) >= 3 and len(good("scaled")) >= 3, 20, "clean samples"
        )
        assert node.terminate() == 0

    types, scaled = good("types")[-1], good("scaled")[-1]
    topics = {m.topic for m in subscriber.messages}
    assert topics == {"/neuron/plc1", "/neuron/plc2"}
    values = types["values"]
    assert values["i16"] == -1234 and isinstance(values["i16"], int)
    assert values["u32"] == 123456789
    assert values["f32"] == -2.5 and isinstance(values["f32"], float)
    assert values["f64"] == pytest.approx(1234.5678)
    assert values["label"] == "TANDEM-SIM"
    assert (values["flag0"], values["flag2"]) == (True, False)
    assert isinstance(values["c0"], bool)
    assert isinstance(values["ramp"], int) and 0 <= values["ramp"] <= 999
    assert isinstance(values["in_counter"], int)
    assert scaled["values"]["temp"] == pytest.approx(-1234 * 0.1 + 100.0)
    assert 0.0 <= scaled["values"]["pct"] <= 99.9 + 1e-9
    assert (types["node"], types["source_node"], types["term"]) == ("plc1", "e2e-a", 0)
    seqs = [b["seq"] for b in bodies_by_group(subscriber.messages)["types"]]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
async def test_hub_broker_outage_every_slot_arrives_once_in_order(
    tmp_path: Path, plc: PlcProcess, broker: Broker, subscriber: RecordingSubscriber
) -> None:
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmp_path / "data",
        broker_port=broker.port,
        devices=[counter_device(plc.port)],
    )
    with running_node(config, tmp_path / "node.log") as node:
        await node.wait_ready()
        await subscriber.wait_for_count(10, timeout=15)
        # Off the event loop: a blocked loop would hold back the subscriber's PUBACKs at the
        # moment the broker goes down, and the broker would rightly deliver those again.
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(OUTAGE_S)
        outage = await node.astatus()
        await asyncio.to_thread(broker.start)
        deadline = time.monotonic() + 60
        while (await node.astatus())["outbox"]["depth"] >= 5:
            assert time.monotonic() < deadline, "outbox did not drain"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        final = await node.astatus()
        assert node.terminate() == 0
    await asyncio.sleep(1.0)  # the last PUBACKed messages on their way to the subscriber

    # ~10 samples/s were held back for the whole outage
    assert not outage["publisher"]["connected"]
    assert outage["outbox"]["depth"] >= OUTAGE_S * 10 * 0.8
    assert final["publisher"]["reconnects"] >= 1
    bodies, repeats = drop_redeliveries(bodies_by_group(subscriber.messages)["fast"])
    assert repeats <= MAX_REDELIVERIES
    slots = [b["slot"] for b in bodies]
    assert_every_slot_once_in_order(slots)
    assert len(slots) >= (OUTAGE_S + 2) * 10 * 0.8
    seqs = [b["seq"] for b in bodies]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@pytest.mark.slow
async def test_hub_kill9_during_broker_outage_loses_nothing_committed(
    tmp_path: Path, plc: PlcProcess, broker: Broker, subscriber: RecordingSubscriber
) -> None:
    data_dir = tmp_path / "data"
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=data_dir,
        broker_port=broker.port,
        devices=[counter_device(plc.port)],
    )
    with running_node(config, tmp_path / "node-1.log") as first:
        await first.wait_ready()
        await subscriber.wait_for_count(5, timeout=15)
        broker.stop()
        await wait_until(lambda: first.status()["outbox"]["depth"] >= 30, 20, "rows held back")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    assert first.process.returncode == -signal.SIGKILL

    with Outbox(data_dir / "outbox.sqlite3") as outbox:
        rows = outbox.peek(1_000_000)
        committed = {(r.group, r.slot) for r in rows}
        max_committed_seq = max(r.seq for r in rows)
    assert len(committed) >= 30

    with running_node(config, tmp_path / "node-2.log") as second:
        await second.wait_ready()
        await asyncio.sleep(0.5)  # the restarted node polls on while the broker is still away
        broker.start()

        def received() -> set[tuple[str, int]]:
            return {(b["group"], b["slot"]) for b in (m.json() for m in subscriber.messages)}

        await wait_until(lambda: committed <= received(), 30, "every committed row")
        await wait_until(lambda: second.status()["outbox"]["depth"] < 5, 30, "outbox to drain")
        assert second.terminate() == 0

    bodies, repeats = drop_redeliveries(bodies_by_group(subscriber.messages)["fast"])
    assert repeats <= MAX_REDELIVERIES
    # the sequence continues across the kill: seq is stored with the rows, not in memory
    seqs = [b["seq"] for b in bodies]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert_every_slot_once_in_order([b["slot"] for b in bodies if b["seq"] <= max_committed_seq])
    assert {b["source_node"] for b in bodies} == {"e2e-a"}


async def test_hub_plc_outage_shows_errors_and_polling_resumes_by_itself(
    tmp_path: Path, broker: Broker, subscriber: RecordingSubscriber
) -> None:
    plc = start_plc()
    try:
        config = write_config(
            tmp_path / "node.yaml",
            data_dir=tmp_path / "data",
            broker_port=broker.port,
            devices=[counter_device(plc.port)],
        )
        with running_node(config, tmp_path / "node.log") as node:
            await node.wait_ready()
            await wait_until(lambda: node.status()["devices"][0]["connected"], 15, "connect")
            assert node.get("/api/v1/health").status_code == 200

            plc.stop()
            outage_from = len(subscriber.messages)

            def errors_since(index: int) -> list[dict[str, int]]:
                return [m.json()["errors"] for m in subscriber.messages[index:]]

            await wait_until(
                lambda: any(e.get("counter") in (1001, 1002) for e in errors_since(outage_from)),
                15,
                "error codes in payloads",
            )
            await wait_until(
                lambda: not node.status()["devices"][0]["connected"], 15, "status to show it"
            )
            health = node.get("/api/v1/health")
            assert health.status_code == 503
            assert health.json()["checks"]["devices"] is False
            down = [e for e in errors_since(outage_from) if e]
            assert all(set(e.values()) <= {1001, 1002, 1003} for e in down)
            assert all(set(e) == {"counter", "sine"} for e in down)

            plc = start_plc(plc.port)
            back_from = len(subscriber.messages)
            await wait_until(
                lambda: any(
                    not m.json()["errors"] and "counter" in m.json()["values"]
                    for m in subscriber.messages[back_from:]
                ),
                20,
                "values after the PLC came back",
            )
            await wait_until(lambda: node.status()["devices"][0]["connected"], 10, "reconnect")
            timeline = node.get("/api/v1/timeline").json()
            assert node.terminate() == 0
    finally:
        plc.stop()

    device_events = [e["message"] for e in timeline if e["kind"] == "device"]
    # newest first: connected again, after a disconnect, after the first connect
    assert device_events[0] == "plc1 connected"
    assert any("plc1 disconnected" in m for m in device_events)


async def test_hub_health_ok_and_metrics_carry_real_values(
    tmp_path: Path, plc: PlcProcess, broker: Broker, subscriber: RecordingSubscriber
) -> None:
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmp_path / "data",
        broker_port=broker.port,
        devices=[counter_device(plc.port)],
    )
    with running_node(config, tmp_path / "node.log") as node:
        await node.wait_ready()
        await subscriber.wait_for_count(20, timeout=15)
        await wait_until(lambda: node.get("/api/v1/health").status_code == 200, 10, "health")
        health = node.get("/api/v1/health").json()
        metrics = node.get("/metrics").text
        status = node.status()
        assert node.terminate() == 0

    assert health == {
        "ok": True,
        "checks": {"loops": True, "devices": True, "broker": True, "outbox": True},
        "reasons": {},
    }

    def metric(name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        return float(match.group(1))

    assert metric('tandem_info{node="e2e-a"}') == 1
    assert metric('tandem_role{role="SINGLE"}') == 1
    assert metric('tandem_device_connected{device="plc1"}') == 1
    assert metric("tandem_published_total") >= 20
    assert metric('tandem_group_polls_total{device="plc1",group="fast"}') >= 20
    assert metric("tandem_publisher_connected") == 1
    assert metric("tandem_outbox_writable") == 1
    assert metric("tandem_outbox_write_errors_total") == 0
    assert metric("tandem_outbox_recovered_total") == 0
    assert metric("tandem_uptime_seconds") > 0
    assert status["role"] == "SINGLE" and status["term"] == 0
