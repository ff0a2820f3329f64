"""The OPC UA southbound poller against a real asyncua server (the OPC UA simulator).

Values and their types, bad status codes, hostile values (arrays, NaN, wrong types, long
strings), user name tokens, Basic256Sha256 Sign and SignAndEncrypt with certificates made
here, a pinned server certificate that does not match, reconnects and subscription mode.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from tandem.config.hub import OpcUaDevice, parse_device
from tandem.hub.codec import ERR_DECODE, ERR_DISCONNECTED, ERR_TYPE
from tandem.hub.model import Sample
from tandem.hub.opcua_client import OpcUaPoller
from tandem.sim.opcua import OpcUaSimulator
from tests.integration.opcua_helpers import (
    CertPair,
    make_certificate,
    start_simulator,
    stop_simulator,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

INTERVAL = 0.1
WAIT_S = 20.0  # generous: a loaded 2-core machine; the polls themselves take milliseconds
BAD_SENSOR = ua.StatusCodes.BadSensorFailure


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[OpcUaSimulator]:
    async with OpcUaSimulator(port=0) as server:
        yield server


def device(endpoint: str, tags: list[dict[str, Any]], **extra: Any) -> OpcUaDevice:
    parsed = parse_device(
        {
            "protocol": "opcua",
            "name": "ua1",
            "endpoint": endpoint,
            "timeout": 2.0,
            "reconnect_min": 0.1,
            "reconnect_max": 0.5,
            "groups": [{"name": "g", "interval": INTERVAL, "tags": tags}],
            **extra,
        }
    )
    assert isinstance(parsed, OpcUaDevice)
    return parsed


def tag(name: str, node: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "node_id": f"ns=2;s={node}", "type": kind, **extra}


async def wait_for_sample(
    got: list[Sample], ok: Callable[[Sample], bool], timeout: float = WAIT_S
) -> Sample:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sample in reversed(got):
            if ok(sample):
                return sample
        await asyncio.sleep(0.05)
    last = got[-1] if got else None
    raise AssertionError(f"no matching sample in {timeout} s; last: {last}")


def connected_sample(sample: Sample) -> bool:
    return ERR_DISCONNECTED not in sample.errors.values()


async def test_opcua_poller_typed_values_arrive_with_their_types(sim: OpcUaSimulator) -> None:
    tags = [
        tag("counter", "Counter", "uint32"),
        tag("sine", "Sine", "float64"),
        tag("ramp", "Ramp", "float32"),
        tag("toggle", "Toggle", "bool"),
        tag("level", "Level", "int16"),
        tag("total", "Total", "int64"),
        tag("text", "Text", "string"),
        tag("widened", "Level", "int32"),  # Int16 widens to int32 without loss
    ]
    got: list[Sample] = []
    async with OpcUaPoller(device(sim.endpoint, tags), source_node="n1", emit=got.append) as p:
        sample = await wait_for_sample(got, connected_sample)
        later = await wait_for_sample(got, lambda s: s.slot > sample.slot + 3)
        status = p.status()
    assert sample.errors == {}, sample.errors
    values = sample.values
    assert isinstance(values["counter"], int) and values["counter"] >= 0
    assert isinstance(values["sine"], float) and -1.0 <= values["sine"] <= 1.0
    assert isinstance(values["ramp"], float) and 0.0 <= values["ramp"] < 1000.0
    assert isinstance(values["toggle"], bool)
    assert values["level"] == -1234 and values["widened"] == -1234
    assert values["total"] == 2**40 + 1
    assert values["text"] == "TANDEM-SIM"
    assert isinstance(later.values["counter"], int) and later.values["counter"] > values["counter"]
    assert status.connected and status.active_path == sim.endpoint
    assert status.groups[0].polls >= 4


async def test_opcua_poller_slots_follow_the_grid_one_sample_per_slot(
    sim: OpcUaSimulator,
) -> None:
    got: list[Sample] = []
    dev = device(sim.endpoint, [tag("counter", "Counter", "uint32")])
    async with OpcUaPoller(dev, source_node="n1", emit=got.append):
        first = await wait_for_sample(got, connected_sample)
        await wait_for_sample(got, lambda s: s.slot >= first.slot + 10)
    slots = [s.slot for s in got if s.slot >= first.slot]
    assert slots == sorted(set(slots)), "a slot twice or out of order"
    assert slots[:10] == list(range(first.slot, first.slot + 10)), "a slot was skipped"
    for s in got:
        assert abs(s.timestamp_ms / 1000 - s.slot * INTERVAL) < 1.0


async def test_opcua_poller_bad_status_codes_become_tag_errors(sim: OpcUaSimulator) -> None:
    tags = [
        tag("sine", "Sine", "float64"),
        tag("level", "Level", "int16"),
        {"name": "missing", "node_id": "ns=2;s=NoSuchVariable", "type": "float64"},
        {"name": "other_ns", "node_id": "nsu=urn:not:there;s=X", "type": "float64"},
    ]
    got: list[Sample] = []
    sim.set_status("Level", BAD_SENSOR)
    try:
        async with OpcUaPoller(device(sim.endpoint, tags), source_node="n1", emit=got.append):
            sample = await wait_for_sample(
                got, lambda s: connected_sample(s) and "sine" in s.values
            )
            sim.set_status("Level", None)
            healed = await wait_for_sample(got, lambda s: "level" in s.values)
    finally:
        sim.set_status("Level", None)
    assert sample.errors["level"] == BAD_SENSOR
    assert sample.errors["missing"] == ua.StatusCodes.BadNodeIdUnknown
    assert sample.errors["other_ns"] == ua.StatusCodes.BadNodeIdUnknown
    assert "level" not in sample.values
    assert healed.values["level"] == -1234 and "level" not in healed.errors


async def test_opcua_poller_hostile_values_are_tag_errors_and_polling_goes_on(
    sim: OpcUaSimulator,
) -> None:
    tags = [
        tag("array", "Sine", "float64"),
        tag("nan", "Ramp", "float32"),
        tag("huge", "Text", "string", max_length=64),
        tag("wrong", "Counter", "int16"),  # a UInt32 for an int16 tag
        tag("null", "Level", "int16"),
        tag("good", "Total", "int64"),
    ]
    got: list[Sample] = []
    sim.pin("Sine", ua.Variant([1.0, 2.0, 3.0], ua.VariantType.Double))
    sim.pin("Ramp", ua.Variant(math.nan, ua.VariantType.Float))
    sim.pin("Text", ua.Variant("x" * 100_000, ua.VariantType.String))
    sim.pin("Level", ua.Variant(None, ua.VariantType.Null))
    try:
        async with OpcUaPoller(device(sim.endpoint, tags), source_node="n1", emit=got.append) as p:
            first = await wait_for_sample(got, lambda s: "good" in s.values)
            await wait_for_sample(got, lambda s: s.slot >= first.slot + 5)
            status = p.status()
    finally:
        for name in ("Sine", "Ramp", "Text", "Level"):
            sim.pin(name, None)
    assert first.errors == {
        "array": ERR_TYPE,
        "nan": ERR_DECODE,
        "huge": ERR_DECODE,
        "wrong": ERR_TYPE,
        "null": ERR_TYPE,
    }
    assert first.values == {"good": 2**40 + 1}
    assert status.connected


async def test_opcua_poller_server_restart_reconnects_and_marks_the_gap() -> None:
    got: list[Sample] = []
    process, port = await asyncio.to_thread(start_simulator, 0)
    dev = device(f"opc.tcp://127.0.0.1:{port}/", [tag("counter", "Counter", "uint32")])
    try:
        async with OpcUaPoller(dev, source_node="n1", emit=got.append) as poller:
            up = await wait_for_sample(got, connected_sample)
            stop_simulator(process)  # kill -9: no goodbye on the wire
            # After the connected one: the polls before the first connect are disconnected too.
            down = await wait_for_sample(
                got, lambda s: s.slot > up.slot and s.errors.get("counter") == ERR_DISCONNECTED
            )
            assert not poller.status().connected
            assert poller.status().last_error
            process, _ = await asyncio.to_thread(start_simulator, port)
            back = await wait_for_sample(
                got, lambda s: s.slot > down.slot and "counter" in s.values, timeout=40
            )
            assert poller.reconnects >= 1
    finally:
        stop_simulator(process)
    slots = [s.slot for s in got if down.slot <= s.slot <= back.slot]
    assert slots == list(range(down.slot, back.slot + 1)), "slots lost while disconnected"


async def test_opcua_poller_subscription_mode_samples_the_latest_on_the_grid(
    sim: OpcUaSimulator,
) -> None:
    dev = parse_device(
        {
            "protocol": "opcua",
            "name": "ua1",
            "endpoint": sim.endpoint,
            "groups": [
                {
                    "name": "s",
                    "interval": INTERVAL,
                    "mode": "subscription",
                    "tags": [tag("counter", "Counter", "uint32")],
                }
            ],
        }
    )
    assert isinstance(dev, OpcUaDevice)
    got: list[Sample] = []
    async with OpcUaPoller(dev, source_node="n1", emit=got.append):
        first = await wait_for_sample(got, lambda s: "counter" in s.values)
        later = await wait_for_sample(
            got, lambda s: s.values.get("counter", -1) > first.values["counter"]
        )
    assert later.slot > first.slot
    assert [s.slot for s in got] == sorted({s.slot for s in got})


# --- user name tokens ----------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def user_sim() -> AsyncIterator[OpcUaSimulator]:
    async with OpcUaSimulator(port=0, users={"operator": "s3cret-pass"}) as server:
        yield server


async def test_opcua_poller_password_file_logs_in(user_sim: OpcUaSimulator, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o600)
    dev = device(
        user_sim.endpoint,
        [tag("counter", "Counter", "uint32")],
        username="operator",
        password_file=str(secret),
    )
    got: list[Sample] = []
    async with OpcUaPoller(dev, source_node="n1", emit=got.append):
        sample = await wait_for_sample(got, lambda s: "counter" in s.values)
    assert sample.errors == {}


async def test_opcua_poller_wrong_password_stays_disconnected_without_the_secret(
    user_sim: OpcUaSimulator,
) -> None:
    dev = device(
        user_sim.endpoint,
        [tag("counter", "Counter", "uint32")],
        username="operator",
        password_env="TANDEM_TEST_UA_PASSWORD",
    )
    got: list[Sample] = []
    env = {"TANDEM_TEST_UA_PASSWORD": "not-the-password"}
    async with OpcUaPoller(dev, source_node="n1", emit=got.append, environ=env) as poller:
        await wait_for_sample(got, lambda s: len(got) >= 10)
        await asyncio.sleep(1.0)
        status = poller.status()
    assert not status.connected
    assert all(s.errors == {"counter": ERR_DISCONNECTED} for s in got)
    assert status.last_error and "not-the-password" not in status.last_error


# --- Basic256Sha256 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertPair]:
    base = tmp_path_factory.mktemp("opcua-pki")
    return {
        "server": make_certificate(base, "server", "urn:tandem:sim:server"),
        "client": make_certificate(base, "client", "urn:tandem:test:client"),
        "stranger": make_certificate(base, "stranger", "urn:tandem:test:stranger"),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure_sim(certs: dict[str, CertPair]) -> AsyncIterator[OpcUaSimulator]:
    server = certs["server"]
    async with OpcUaSimulator(
        port=0, certificate=server.certificate, private_key=server.private_key
    ) as sim:
        yield sim


def secure_device(endpoint: str, certs: dict[str, CertPair], mode: str, pin: str) -> OpcUaDevice:
    return device(
        endpoint,
        [tag("counter", "Counter", "uint32"), tag("text", "Text", "string")],
        security={
            "policy": "Basic256Sha256",
            "mode": mode,
            "certificate": str(certs["client"].certificate),
            "private_key": str(certs["client"].private_key),
            "server_certificate": str(certs[pin].certificate),
        },
    )


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_opcua_poller_basic256sha256_reads_values(
    secure_sim: OpcUaSimulator, certs: dict[str, CertPair], mode: str
) -> None:
    got: list[Sample] = []
    dev = secure_device(secure_sim.endpoint, certs, mode, "server")
    async with OpcUaPoller(dev, source_node="n1", emit=got.append):
        sample = await wait_for_sample(got, lambda s: "counter" in s.values)
    assert sample.values["text"] == "TANDEM-SIM" and sample.errors == {}


async def test_opcua_poller_unpinned_server_certificate_is_refused(
    secure_sim: OpcUaSimulator, certs: dict[str, CertPair]
) -> None:
    got: list[Sample] = []
    dev = secure_device(secure_sim.endpoint, certs, "SignAndEncrypt", "stranger")
    async with OpcUaPoller(dev, source_node="n1", emit=got.append) as poller:
        # The server cannot decrypt what was encrypted for another key: no answer, a timeout.
        deadline = time.monotonic() + WAIT_S
        while poller.last_error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        status = poller.status()
    assert not status.connected, "connected to a server that is not the pinned one"
    assert status.last_error is not None and status.last_error.startswith("connect to")
    assert got and all("counter" not in s.values for s in got)
