"""Config editing over REST on a real single `tandem run` node with the PLC simulator and mosquitto.

CRUD of devices, groups and tags applied live, validation problems at their field, the tag
CSV round trip with a bad line, roles, versions and restore, and the YAML's comments kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tandem.security.users import UserStore
from tests.integration.broker import Broker
from tests.integration.plc import start_plc
from tests.integration.test_dashboard_browser import log_in
from tests.integration.test_hub_e2e import NodeProcess, running_node

pytestmark = pytest.mark.slow

PASSWORD = "a config rest test password"

CONFIG = """\
# Line 1 edge hub: keep this comment
node: rest-a
data_dir: {data_dir}
api:
  host: 127.0.0.1
  port: 0
mqtt:
  host: 127.0.0.1
  port: {broker}  # the site broker
  keepalive: 5
devices:
  - name: plc1  # the press
    host: 127.0.0.1
    port: {plc}
    timeout: 0.5
    reconnect_max: 0.5
    groups:
      - name: fast
        interval: 0.2
        tags:
          - name: counter  # parts made
            address: 0
            type: uint16
"""


@dataclass
class Node:
    proc: NodeProcess
    path: Path
    tokens: dict[Role, str]

    def client(self, role: Role) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.AsyncClient(base_url=self.proc.url, headers=headers, timeout=10)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    plc = start_plc()
    try:
        with Broker(tmp_path) as broker:
            data = tmp_path / "data"
            path = tmp_path / "node.yaml"
            path.write_text(CONFIG.format(data_dir=data, broker=broker.port, plc=plc.port))
            tokens = {role: create_token(data, role, f"{role.value}-token") for role in Role}
            users = UserStore(data)
            users.add("vera", Role.VIEWER, PASSWORD)
            users.add("ada", Role.ADMIN, PASSWORD)
            with running_node(path, tmp_path / "node.log", tokens[Role.VIEWER]) as proc:
                await proc.wait_ready()
                yield Node(proc, path, tokens)
    finally:
        plc.stop()


async def tag_values(client: httpx.AsyncClient, device: str) -> dict[str, Any]:
    response = await client.get("/api/v1/tags")
    response.raise_for_status()
    return {t["tag"]: t for t in response.json() if t["device"] == device}


async def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


PLC2 = {
    "name": "plc2",
    "host": "127.0.0.1",
    "timeout": 0.5,
    "groups": [{"name": "g1", "interval": 0.2, "tags": [{"name": "c", "address": 0}]}],
}


async def test_config_rest_device_crud_applies_live_and_keeps_comments(node: Node) -> None:
    async with node.client(Role.ADMIN) as admin, node.client(Role.VIEWER) as viewer:
        plc2 = {**PLC2, "port": int(node.proc.status()["devices"][0]["active_path"].split(":")[1])}
        created = await admin.post("/api/v1/devices", json=plc2)
        assert created.status_code == 200, created.text
        assert created.json()["item"]["name"] == "plc2"

        async def plc2_has_values() -> bool:
            values = await tag_values(viewer, "plc2")
            return "c" in values and values["c"]["value"] is not None

        await wait_for(plc2_has_values, 15, "plc2 values")

        tag = {"name": "counter", "address": 0, "type": "uint16", "scale": 2.0}
        edited = await admin.put("/api/v1/devices/plc1/groups/fast/tags/counter", json=tag)
        assert edited.status_code == 200, edited.text
        added = await admin.post(
            "/api/v1/devices/plc1/groups/fast/tags",
            json={"name": "sine", "address": 1, "type": "float32"},
        )
        assert added.status_code == 200, added.text
        listed = await viewer.get("/api/v1/devices/plc1/groups/fast/tags")
        assert [t["name"] for t in listed.json()["tags"]] == ["counter", "sine"]

        text = node.path.read_text()
        for comment in ("# Line 1 edge hub", "# the site broker", "# the press", "# parts made"):
            assert comment in text, text
        assert "scale: 2.0" in text

        dup = await admin.post("/api/v1/devices/plc2/duplicate", json={"name": "plc3"})
        assert dup.status_code == 200, dup.text
        gone = await admin.delete("/api/v1/devices/plc3")
        assert gone.status_code == 200, gone.text
        devices = (await viewer.get("/api/v1/devices")).json()
        assert [d["name"] for d in devices["devices"]] == ["plc1", "plc2"]
        assert devices["state"]["writable"] is True

        read = await admin.post("/api/v1/devices/plc1/groups/fast/read")
        assert read.status_code == 200, read.text
        assert set(read.json()["values"]) == {"counter", "sine"}
        test = await admin.post("/api/v1/devices/plc1/test")
        assert test.status_code == 200 and test.json()["paths"][0]["ok"] is True, test.text

        missing = await viewer.get("/api/v1/devices/nope")
        assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
        exists = await admin.post("/api/v1/devices", json=plc2)
        assert exists.status_code == 409 and exists.json()["reason"] == "exists"


async def test_config_rest_invalid_edit_answers_field_paths_and_changes_nothing(
    node: Node,
) -> None:
    before = node.path.read_text()
    async with node.client(Role.ADMIN) as admin:
        bad = await admin.post(
            "/api/v1/devices/plc1/groups/fast/tags",
            json={"name": "t2", "address": 70000, "type": "float32", "colour": "red"},
        )
        assert bad.status_code == 422, bad.text
        fields = {p["field"]: p for p in bad.json()["problems"]}
        assert set(fields) == {"address", "colour"}
        assert fields["address"]["path"] == "devices[0].groups[0].tags[1].address"

        overlap = await admin.post(
            "/api/v1/devices/plc1/groups/fast/tags", json={"name": "t3", "address": 0}
        )
        assert overlap.status_code == 422
        assert [p["field"] for p in overlap.json()["problems"]] == ["address"]

        device = await admin.put("/api/v1/devices/plc1", json={"name": "plc1", "groups": []})
        assert device.status_code == 422
        assert [p["field"] for p in device.json()["problems"]] == ["groups"]

        not_object = await admin.post("/api/v1/devices", json=[1, 2])
        assert not_object.status_code == 422
        hostile = await admin.post(
            "/api/v1/devices", content=b"{" * 5000, headers={"content-type": "application/json"}
        )
        assert hostile.status_code in (400, 413, 422)
        deep = b'{"name": "d", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        refused = await admin.post(
            "/api/v1/devices", content=deep, headers={"content-type": "application/json"}
        )
        assert refused.status_code in (400, 413, 422), refused.text
        nested: Any = 1
        for _ in range(40):
            nested = [nested]
        nested = {"name": "d", "x": nested}
        refused = await admin.post("/api/v1/devices", json=nested)
        assert refused.status_code == 422 and refused.json()["reason"] == "bad_body"
        weird = await admin.post("/api/v1/devices", json={**PLC2, "name": "a\u0000b\n- c"})
        assert weird.status_code == 422
        assert [p["field"] for p in weird.json()["problems"]] == ["name"]
    assert node.path.read_text() == before
    assert node.proc.process.poll() is None


async def test_config_rest_tag_csv_round_trip_and_bad_line(node: Node) -> None:
    url = "/api/v1/devices/plc1/groups/fast/tags.csv"
    async with node.client(Role.ADMIN) as admin:
        exported = await admin.get(url)
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        lines = exported.text.splitlines()
        assert lines[0].split(",")[:3] == ["name", "area", "address"]
        assert lines[1].startswith("counter,,0,uint16")

        header = "name,address,type,scale\n"
        bad = header + "counter,0,uint16,\nsine,1,float32,0.5\nbroken,zero,uint16,\n"
        refused = await admin.put(url, content=bad.encode(), headers={"content-type": "text/csv"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["problems"] == [
            {"line": 4, "column": "address", "message": "'zero' is not a valid int"}
        ]
        overlap = header + "counter,0,uint16,\nsine,1,float32,0.5\nclash,2,uint16,\n"
        refused = await admin.put(url, content=overlap.encode())
        assert refused.status_code == 422
        assert [(p["line"], p["column"]) for p in refused.json()["problems"]] == [(4, "address")]

        good = header + "counter,0,uint16,\nsine,1,float32,0.5\n"
        imported = await admin.put(url, content=good.encode())
        assert imported.status_code == 200, imported.text
        again = await admin.get(url)
        rows = again.text.splitlines()
        assert len(rows) == 3 and rows[2].startswith("sine,,1,float32")
        assert "# parts made" in node.path.read_text()


async def test_config_rest_viewer_and_operator_refused_changes(node: Node) -> None:
    for role in (Role.VIEWER, Role.OPERATOR):
        async with node.client(role) as client:
            assert (await client.get("/api/v1/devices")).status_code == 200
            assert (await client.post("/api/v1/devices", json=PLC2)).status_code == 403
            assert (await client.delete("/api/v1/devices/plc1")).status_code == 403
            put = await client.put("/api/v1/devices/plc1/groups/fast/tags.csv", content=b"name\n")
            assert put.status_code == 403
            assert (await client.post("/api/v1/config/versions/1/restore")).status_code == 403
    async with httpx.AsyncClient(base_url=node.proc.url) as anonymous:
        assert (await anonymous.get("/api/v1/devices")).status_code == 401


async def test_config_rest_versions_record_who_and_diff_and_restore(node: Node) -> None:
    original = node.path.read_text()
    async with node.client(Role.ADMIN) as admin:
        tag = {"name": "counter", "address": 0, "type": "uint16", "precision": 1}
        assert (
            await admin.put("/api/v1/devices/plc1/groups/fast/tags/counter", json=tag)
        ).status_code == 200
        versions = (await admin.get("/api/v1/config/versions")).json()
        assert [v["id"] for v in versions] == [2, 1]
        assert versions[0]["who"] == "admin-token"
        assert versions[1]["who"] == "file"
        detail = (await admin.get("/api/v1/config/versions/2")).json()
        assert "+            precision: 1" in detail["diff"]

        restored = await admin.post("/api/v1/config/versions/1/restore")
        assert restored.status_code == 200, restored.text
        assert restored.json()["version"]["id"] == 3
        assert restored.json()["version"]["action"] == "restore of version 1"
        assert node.path.read_text() == original
        assert (await admin.get("/api/v1/config/versions/99")).status_code == 404

        schema = (await admin.get("/api/v1/openapi.json")).json()
        for path in (
            "/api/v1/devices",
            "/api/v1/devices/{device}/groups/{group}/tags/{tag}",
            "/api/v1/devices/{device}/groups/{group}/tags.csv",
            "/api/v1/config/versions/{ident}/restore",
        ):
            assert path in schema["paths"], path
        body = schema["paths"]["/api/v1/devices"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/DeviceBody"}
        assert "ModbusTcpDevice" in schema["components"]["schemas"]
        put_tag = schema["paths"]["/api/v1/devices/{device}/groups/{group}/tags/{tag}"]["put"]
        assert put_tag["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Problems"
        }


async def test_config_rest_browser_viewer_read_only_and_cookie_change_needs_csrf(
    node: Node, browser: Browser
) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await context.new_page()
        await page.goto(f"{node.proc.url}/")
        await log_in(page, "vera", PASSWORD)
        await page.get_by_test_id("tab-config").click()
        state = page.get_by_test_id("config-state")
        await expect(state).to_contain_text("needs the admin role")
        await expect(page.get_by_test_id("config-device-plc1")).to_be_visible()
        await expect(page.get_by_test_id("save-device")).to_be_disabled()
        await expect(page.get_by_test_id("tag-counter-address")).to_be_disabled()
        await page.get_by_test_id("logout").click()

        await log_in(page, "ada", PASSWORD)
        await page.get_by_test_id("tab-config").click()
        await expect(page.get_by_test_id("config-state")).to_have_attribute("data-admin", "true")
        await expect(page.get_by_test_id("save-device")).to_be_enabled()
        # The session cookie alone (no CSRF header) changes nothing.
        refused = await context.request.post(f"{node.proc.url}/api/v1/devices", data={"name": "x"})
        assert refused.status == 403
        # Export is a plain link the browser downloads with its cookie.
        async with page.expect_download() as download:
            await page.get_by_test_id("export-csv").click()
        saved = await (await download.value).path()
        assert saved is not None
        assert Path(saved).read_text().startswith("name,area,address")
    finally:
        await context.close()
