"""Tag writes end to end: `tandem run`, the PLC simulator, mosquitto, Neuron's MQTT shapes."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from pymodbus.client import AsyncModbusTcpClient

from tandem.config.hub import load_config
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tandem.security.users import UserStore
from tests.integration.broker import Broker
from tests.integration.plc import SimProcess, free_port, start_sim
from tests.integration.test_dashboard_browser import log_in
from tests.integration.test_hub_e2e import NodeProcess, running_node, wait_until, write_config
from tests.integration.writes_client import RequestClient

NODE = "w-a"
RTU_PORT: dict[Path, int] = {}  # the RTU-over-TCP gateway simulator of each test
PASSWORD = "writes test password"

WRITE_TAGS: list[dict[str, Any]] = [
    {"name": "u16", "address": 50, "type": "uint16", "access": "write"},
    {"name": "i32", "address": 51, "type": "int32", "word_order": "little", "access": "read_write"},
    {"name": "f64", "address": 53, "type": "float64", "access": "read_write"},
    {
        "name": "temp",
        "address": 57,
        "type": "int16",
        "scale": 0.1,
        "offset": 20.0,
        "access": "read_write",
    },
    {"name": "flag3", "address": 58, "type": "bit", "bit": 3, "access": "read_write"},
    {"name": "label", "address": 60, "type": "string", "length": 4, "access": "read_write"},
    {"name": "c8", "area": "coil", "address": 8, "type": "bool", "access": "read_write"},
    {"name": "c9", "area": "coil", "address": 9, "type": "bool", "access": "read_write"},
    {"name": "counter", "address": 0, "type": "uint16"},
    {"name": "nowhere", "address": 5000, "type": "uint16", "access": "write"},
]


def device(name: str, port: int, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "timeout": 0.5,
        "reconnect_max": 0.5,
        "groups": [{"name": "w", "interval": 0.2, "tags": tags}],
        **extra,
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with Broker(workdir) as b:
        yield b


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[tuple[SimProcess, SimProcess, Path]]:
    log = tmp_path / "writes.jsonl"
    main = start_sim(["--port", "0", "--write-log", str(log)])
    slow = start_sim(["--port", "0", "--slow", "2:1500"])
    gateway = start_sim(["--port", "0", "--rtu-over-tcp", "--units", "3"])
    RTU_PORT[tmp_path] = gateway.ports[0]
    try:
        yield main, slow, log
    finally:
        main.stop()
        slow.stop()
        gateway.stop()
        RTU_PORT.pop(tmp_path, None)


@pytest.fixture
async def node(
    tmp_path: Path, broker: Broker, sims: tuple[SimProcess, SimProcess, Path]
) -> AsyncIterator[NodeProcess]:
    main, slow, _ = sims
    plain = [{"name": "x", "address": 50, "type": "uint16", "access": "write"}]
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmp_path / "data",
        broker_port=broker.port,
        node=NODE,
        devices=[
            device("plc", main.ports[0], WRITE_TAGS),
            device("down", free_port(), plain),
            device("slow", slow.ports[0], plain, unit=2, timeout=0.3),
            device(
                "rtu",
                RTU_PORT[tmp_path],
                [
                    *plain,
                    {"name": "c", "area": "coil", "address": 8, "type": "bool", "access": "write"},
                ],
                protocol="modbus-rtu-over-tcp",
                unit=3,
            ),
        ],
    )
    users = UserStore(tmp_path / "data")
    users.add("op", Role.OPERATOR, PASSWORD)
    users.add("vera", Role.VIEWER, PASSWORD)
    with running_node(config, tmp_path / "node.log") as n:
        await n.wait_ready()
        await wait_until(lambda: _connected(n, "plc"), 15, "plc connected")
        yield n


def _connected(node: NodeProcess, name: str) -> bool:
    return any(d["name"] == name and d["connected"] for d in node.status()["devices"])


@pytest.fixture
async def client(broker: Broker, node: NodeProcess) -> AsyncIterator[RequestClient]:
    async with RequestClient(broker.host, broker.port, NODE) as c:
        # The node's listener subscribes a moment after the API listens.
        probe = {"uuid": "probe", "node": "plc", "group": "w"}
        await c.publish("read/req", probe)
        for _ in range(100):
            if "probe" in c.responses:
                break
            await asyncio.sleep(0.1)
            await c.publish("read/req", probe)
        yield c


async def registers(port: int, address: int, count: int) -> list[int]:
    async with AsyncModbusTcpClient("127.0.0.1", port=port) as plc:
        reply = await plc.read_holding_registers(address, count=count)
        return list(reply.registers)


async def coils(port: int, address: int, count: int) -> list[bool]:
    async with AsyncModbusTcpClient("127.0.0.1", port=port) as plc:
        reply = await plc.read_coils(address, count=count)
        return list(reply.bits[:count])


async def write_count(port: int) -> int:
    async with AsyncModbusTcpClient("127.0.0.1", port=port) as plc:
        reply = await plc.read_input_registers(16, count=2)
        return int(reply.registers[0]) << 16 | int(reply.registers[1])


def new_uuid() -> str:
    return str(uuidlib.uuid4())


async def test_writes_mqtt_single_and_multi_tag_change_registers_and_answer_zero(
    client: RequestClient, sims: tuple[SimProcess, SimProcess, Path]
) -> None:
    main, _, log = sims
    port = main.ports[0]
    single = {"uuid": new_uuid(), "node": "plc", "group": "w", "tag": "u16", "value": 1234}
    assert await client.request("write", single) == {"uuid": single["uuid"], "error": 0}
    assert await registers(port, 50, 1) == [1234]

    multi = {
        "uuid": new_uuid(),
        "node": "plc",
        "group": "w",
        "tags": [
            {"tag": "i32", "value": -70000},
            {"tag": "f64", "value": 2.5},
            {"tag": "temp", "value": 21.5},
            {"tag": "flag3", "value": True},
            {"tag": "label", "value": "ok!"},
            {"tag": "c8", "value": True},
            {"tag": "c9", "value": True},
        ],
    }
    assert await client.request("write", multi) == {"uuid": multi["uuid"], "error": 0}
    words = await registers(port, 51, 13)
    assert words[0:2] == [0xEE90, 0xFFFE]  # -70000 = 0xFFFEEE90, low word first
    assert words[2:6] == [0x4004, 0, 0, 0]  # 2.5 as float64
    assert words[6] == 15  # (21.5 - 20) / 0.1
    assert words[7] == 0b1000
    assert words[9:13] == [ord("o") << 8 | ord("k"), ord("!") << 8, 0, 0]
    assert await coils(port, 8, 2) == [True, True]
    # One FC 16 for i32+f64+temp, the bit's FC 6 (after its read), FC 16 for the string,
    # FC 15 for the two coils, and the single write's FC 6.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(w["fc"], w["address"]) for w in lines] == [
        (6, 50),
        (16, 51),
        (6, 58),
        (16, 60),
        (15, 8),
    ]
    assert await write_count(port) == len(lines)
    off = {"uuid": new_uuid(), "node": "plc", "group": "w", "tag": "c8", "value": False}
    assert (await client.request("write", off))["error"] == 0
    assert await coils(port, 8, 2) == [False, True]
    assert json.loads(log.read_text().splitlines()[-1])["fc"] == 5

    # A retried uuid gets the recorded answer and is not written again.
    again = dict(single, value=999)
    await client.publish("write/req", again)
    await wait_until(lambda: len(client.responses[single["uuid"]]) == 2, 10, "second answer")
    assert client.responses[single["uuid"]][1]["error"] == 0
    assert await registers(port, 50, 1) == [1234]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"node": "nope", "group": "w", "tag": "u16", "value": 1}, 2003),
        ({"node": "plc", "group": "nope", "tag": "u16", "value": 1}, 2106),
        ({"node": "plc", "group": "w", "tag": "nope", "value": 1}, 2201),
        ({"node": "plc", "group": "w", "tag": "counter", "value": 1}, 3004),
        ({"node": "plc", "group": "w", "tag": "u16", "value": "12"}, 3007),
        ({"node": "plc", "group": "w", "tag": "u16", "value": 70000}, 4001),
        ({"node": "plc", "group": "w", "tag": "temp", "value": 99999.0}, 4001),
        ({"node": "down", "group": "w", "tag": "x", "value": 1}, 3002),
        ({"node": "plc", "group": "w", "tag": "nowhere", "value": 1}, 3001),
        ({"node": "plc", "group": "w", "tag": "u16"}, 1002),
        ({"node": "plc", "group": "w", "tags": [{"tag": "u16", "value": 1}, {"tag": "x"}]}, 1002),
    ],
)
async def test_writes_mqtt_each_error_code_is_answered(
    client: RequestClient, body: dict[str, Any], code: int
) -> None:
    uuid = new_uuid()
    assert await client.request("write", {"uuid": uuid, **body}) == {"uuid": uuid, "error": code}


async def test_writes_mqtt_timeout_is_outcome_unknown_and_never_retried(
    client: RequestClient, node: NodeProcess, sims: tuple[SimProcess, SimProcess, Path]
) -> None:
    _, slow, _ = sims
    await wait_until(lambda: _connected(node, "slow"), 15, "slow device connected")
    uuid = new_uuid()
    body = {"uuid": uuid, "node": "slow", "group": "w", "tag": "x", "value": 77}
    assert await client.request("write", body) == {"uuid": uuid, "error": 4003}
    await asyncio.sleep(2.0)  # the late answer lands: the write did happen
    written = await write_count(slow.ports[0])
    assert await registers(slow.ports[0], 50, 1) == [77]
    await client.publish("write/req", body)
    await wait_until(lambda: len(client.responses[uuid]) == 2, 10, "the retry's answer")
    assert client.responses[uuid][1]["error"] == 4003
    await asyncio.sleep(1.0)
    assert await write_count(slow.ports[0]) == written


async def test_writes_mqtt_hostile_requests_are_dropped_and_counted(
    client: RequestClient, node: NodeProcess
) -> None:
    await client.publish("write/req", b"\xff\xfe not json")
    await client.publish("write/req", b"[1, 2, 3]")
    await client.publish("write/req", b"[" * 60_000)  # deep nesting, under the size cap
    await client.publish("write/req", json.dumps({"uuid": "x" * 500}).encode())
    await client.publish("write/req", b" " * 70_000)
    bad = {"uuid": "ok-uuid", "node": "plc", "group": "w", "tag": "u16", "value": 1, "extra": 1}
    assert (await client.request("write", bad))["error"] == 1002
    # Still alive and answering after all that.
    good = {"uuid": new_uuid(), "node": "plc", "group": "w", "tag": "u16", "value": 5}
    assert (await client.request("write", good))["error"] == 0
    uuids = {json.loads(raw).get("uuid") for raw in client.raw}
    assert uuids == {"probe", "ok-uuid", good["uuid"]}, "only the answerable ones are answered"
    metrics = node.get("/metrics").text
    assert 'tandem_request_drops_total{reason="unparsable"} 4.0' in metrics
    assert 'tandem_request_drops_total{reason="too_large"} 1.0' in metrics
    assert 'tandem_write_requests_total{error="0"}' in metrics


async def test_writes_mqtt_read_request_answers_latest_values(client: RequestClient) -> None:
    uuid = new_uuid()
    answer = await client.request("read", {"uuid": uuid, "node": "plc", "group": "w"})
    assert answer["uuid"] == uuid and answer["node"] == "plc" and answer["group"] == "w"
    by_name = {t["name"]: t for t in answer["tags"]}
    assert isinstance(by_name["counter"]["value"], int)
    assert by_name["nowhere"]["error"] == 2002  # the unmapped register, as polled
    missing = await client.request("read", {"uuid": new_uuid(), "node": "nope", "group": "w"})
    assert missing["error"] == 2003


async def test_writes_rest_operator_writes_and_viewer_is_refused(
    node: NodeProcess, tmp_path: Path, sims: tuple[SimProcess, SimProcess, Path]
) -> None:
    data_dir = load_config(node.config).data_dir
    operator = {"Authorization": f"Bearer {create_token(data_dir, Role.OPERATOR)}"}
    body = {"node": "plc", "group": "w", "tags": [{"tag": "u16", "value": 4321}]}
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        viewer = await http.post("/api/v1/write", json=body, headers=node.headers)
        assert viewer.status_code == 403
        done = await http.post("/api/v1/write", json=body, headers=operator)
        assert done.status_code == 200, done.text
        assert done.json()["error"] == 0 and done.json()["uuid"]
        bad = await http.post("/api/v1/write", json={**body, "tags": []}, headers=operator)
        assert bad.status_code == 400 and bad.json()["error"] == 1002
        down = await http.post(
            "/api/v1/write",
            json={"node": "down", "group": "w", "tag": "x", "value": 1},
            headers=operator,
        )
        assert down.status_code == 503 and down.json()["error"] == 3002
    assert await registers(sims[0].ports[0], 50, 1) == [4321]


@pytest.mark.slow
async def test_writes_dashboard_operator_writes_a_tag_and_viewer_sees_no_control(
    node: NodeProcess, browser: Browser, sims: tuple[SimProcess, SimProcess, Path]
) -> None:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = await context.new_page()
        await page.goto(node.url + "/")
        await log_in(page, "op", PASSWORD)
        row = page.locator('#tags tr[data-key="plc/w/u16"]')
        await expect(row.get_by_test_id("write-btn")).to_be_visible(timeout=15_000)
        assert await page.locator('#tags tr[data-key="plc/w/counter"] .write-btn').count() == 0
        await row.get_by_test_id("write-btn").click()
        await page.get_by_test_id("write-value").fill("777")
        await page.get_by_test_id("write-send").click()
        await expect(page.get_by_test_id("write-result")).to_have_text("written (777)")
        assert await registers(sims[0].ports[0], 50, 1) == [777]
        await page.get_by_test_id("write-value").fill("70000")
        await page.get_by_test_id("write-send").click()
        await expect(page.get_by_test_id("write-result")).to_contain_text("error 4001")
        await context.clear_cookies()

        viewer = await context.new_page()
        await viewer.goto(node.url + "/")
        await log_in(viewer, "vera", PASSWORD)
        await expect(viewer.locator('#tags tr[data-key="plc/w/u16"]')).to_be_visible(timeout=15_000)
        await viewer.wait_for_timeout(1000)
        assert await viewer.get_by_test_id("write-btn").count() == 0
    finally:
        await context.close()


async def test_writes_rtu_over_tcp_frames_write_and_confirm(
    client: RequestClient, node: NodeProcess, tmp_path: Path
) -> None:
    await wait_until(lambda: _connected(node, "rtu"), 15, "rtu device connected")
    body = {
        "uuid": new_uuid(),
        "node": "rtu",
        "group": "w",
        "tags": [{"tag": "x", "value": 31337}],
    }
    assert (await client.request("write", body))["error"] == 0
    coil = {"uuid": new_uuid(), "node": "rtu", "group": "w", "tag": "c", "value": True}
    assert (await client.request("write", coil))["error"] == 0
    # The next polls read back what was written, through the same RTU framing.
    for _ in range(50):
        read = await client.request("read", {"uuid": new_uuid(), "node": "rtu", "group": "w"})
        values = {t["name"]: t.get("value") for t in read["tags"]}
        if values == {"x": 31337, "c": True}:
            break
        await asyncio.sleep(0.1)
    assert values == {"x": 31337, "c": True}
