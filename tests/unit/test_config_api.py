"""The config editing routes in process, on a fake node: roles, 409 on a backup, problems,
redaction, and the helpers (endpoints, CSV problem lines, sections written without defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from tandem.api.app import create_app
from tandem.api.auth import Security, flat_routes
from tandem.api.configedit import (
    ConfigEditor,
    Master,
    _csv_lines,
    endpoints_of,
    install,
    short_sections,
)
from tandem.config.edit import FieldProblem
from tandem.config.hub import TandemConfig, load_config_text
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tests.unit.test_api import FakeView

BASE = "http://localhost"

CONFIG = """\
node: unit-a  # this node
data_dir: {data}
mqtt:
  password: mqtt-secret-pw
devices:
  - name: plc1
    host: 10.0.0.5
    groups:
      - name: fast
        tags:
          - name: counter
            address: 0
  - name: ua
    protocol: opcua
    endpoint: opc.tcp://10.0.0.9:4841/srv
    username: op
    password_env: UA_PASSWORD_VAR
    groups:
      - name: g
        tags:
          - name: t
            node_id: ns=2;s=T
            type: float64
"""


@dataclass
class FakeTarget:
    """A node that takes (or refuses) changes and records what it was asked to write."""

    config_path: Path
    cfg: TandemConfig
    master_is: Master | None = None
    written: list[str] = field(default_factory=list)

    def running(self) -> TandemConfig:
        return self.cfg

    def master(self) -> Master | None:
        return self.master_is

    def synced(self) -> TandemConfig | None:
        return None

    def digest(self) -> str:
        return "d"

    async def write(self, text: str) -> None:
        self.written.append(text)
        self.config_path.write_text(text)
        self.cfg = load_config_text(text)


@dataclass
class Fixture:
    app: FastAPI
    target: FakeTarget
    tokens: dict[Role, str]


@pytest.fixture
def node(tmp_path: Path) -> Fixture:
    data = tmp_path / "data"
    path = tmp_path / "node.yaml"
    path.write_text(CONFIG.format(data=data))
    cfg = load_config_text(path.read_text())
    target = FakeTarget(path, cfg)
    app = create_app(FakeView(), security=Security.from_config(cfg))
    install(app, ConfigEditor(target))
    tokens = {role: create_token(data, role, f"unit-{role.value}") for role in Role}
    return Fixture(app, target, tokens)


def client(node: Fixture, role: Role | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {node.tokens[role]}"} if role is not None else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.app), base_url=BASE, headers=headers
    )


def editor_routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for route in flat_routes(app.routes):
        path = getattr(route, "path", "")
        if isinstance(route, Mount) or not (
            path.startswith("/api/v1/devices") or path.startswith("/api/v1/config/")
        ):
            continue
        found += [(m, path) for m in sorted(getattr(route, "methods", None) or {"GET"})]
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{device}", "plc1")
        .replace("{group}", "fast")
        .replace("{tag}", "counter")
        .replace("{ident}", "1")
    )


async def test_config_api_every_route_refuses_anonymous_and_lesser_roles(node: Fixture) -> None:
    routes = editor_routes(node.app)
    assert len(routes) >= 20
    operator_may = {
        "/api/v1/devices/{device}/test",
        "/api/v1/devices/{device}/groups/{group}/read",
    }
    async with (
        client(node) as anonymous,
        client(node, Role.VIEWER) as viewer,
        client(node, Role.OPERATOR) as operator,
    ):
        for method, path in routes:
            url = concrete(path)
            assert (await anonymous.request(method, url)).status_code == 401, url
            as_viewer = await viewer.request(method, url)
            as_operator = await operator.request(method, url)
            if method in ("GET", "HEAD"):
                assert as_viewer.status_code not in (401, 403), f"{method} {url}"
            elif path in operator_may:
                assert as_viewer.status_code == 403, f"{method} {url}"
                assert as_operator.status_code not in (401, 403), f"{method} {url}"
            else:
                assert as_viewer.status_code == 403, f"{method} {url}"
                assert as_operator.status_code == 403, f"{method} {url}"
    assert node.target.written == []


async def test_config_api_backup_answers_409_naming_master_and_writes_nothing(
    node: Fixture,
) -> None:
    node.target.master_is = Master(node="unit-b", url="http://10.0.0.2:8085")
    async with client(node, Role.ADMIN) as admin:
        state = (await admin.get("/api/v1/config/editor")).json()
        refused = await admin.put(
            "/api/v1/devices/plc1/groups/fast/tags/counter", json={"name": "counter", "address": 1}
        )
    assert state["writable"] is False and state["master"]["node"] == "unit-b"
    assert refused.status_code == 409
    assert refused.json() == {
        "reason": "backup",
        "message": "this node is a backup: change the config on unit-b",
        "master": {"node": "unit-b", "url": "http://10.0.0.2:8085"},
    }
    assert node.target.written == []


async def test_config_api_problems_relative_to_item_and_file_untouched(node: Fixture) -> None:
    before = node.target.config_path.read_text()
    async with client(node, Role.ADMIN) as admin:
        response = await admin.put(
            "/api/v1/devices/plc1", json={"name": "plc1", "host": "", "groups": [{"name": "g"}]}
        )
    assert response.status_code == 422
    fields = sorted(p["field"] for p in response.json()["problems"])
    assert fields == ["groups[0].tags", "host"]
    assert node.target.config_path.read_text() == before


async def test_config_api_secrets_redacted_and_kept_when_sent_back(node: Fixture) -> None:
    async with client(node, Role.ADMIN) as admin:
        device = (await admin.get("/api/v1/devices/ua")).json()["item"]
        assert device["password_env"] == "<redacted>"
        device["username"] = "op2"
        saved = await admin.put("/api/v1/devices/ua", json=device)
        assert saved.status_code == 200, saved.text
        version = await admin.get(f"/api/v1/config/versions/{saved.json()['version']['id']}")
    text = node.target.config_path.read_text()
    assert "password_env: UA_PASSWORD_VAR" in text and "username: op2" in text
    assert "# this node" in text
    body = version.json()
    assert "mqtt-secret-pw" not in body["text"] and "UA_PASSWORD_VAR" not in body["text"]


async def test_config_api_read_now_without_reader_answers_501(node: Fixture) -> None:
    async with client(node, Role.OPERATOR) as operator:
        response = await operator.post("/api/v1/devices/plc1/groups/fast/read")
    assert response.status_code == 501


def test_config_api_endpoints_of_each_protocol() -> None:
    assert endpoints_of({"host": "h", "port": 1502}) == [("h", 1502)]
    assert endpoints_of({"host": "h"}) == [("h", 502)]
    paths = {"paths": [{"host": "a"}, {"host": "b", "port": 5020}]}
    assert endpoints_of(paths) == [("a", 502), ("b", 5020)]
    assert endpoints_of({"protocol": "modbus-rtu", "serial": {"port": "/dev/ttyS9"}}) == [
        "/dev/ttyS9"
    ]
    assert endpoints_of({"protocol": "opcua", "endpoint": "opc.tcp://[::1]:4841/x"}) == [
        ("::1", 4841)
    ]
    assert endpoints_of({"protocol": "opcua", "endpoint": "opc.tcp://srv"}) == [("srv", 4840)]


def test_config_api_csv_lines_from_config_problems() -> None:
    problems = [
        FieldProblem("[1].address", "devices[0].groups[0].tags[1].address", "overlap"),
        FieldProblem("", "devices[0].groups[0].tags", "too short"),
    ]
    mapped = _csv_lines([2, 5], problems)
    assert [(p.line, p.column) for p in mapped] == [
        (5, "address"),
        (0, "devices[0].groups[0].tags"),
    ]


def test_config_api_short_sections_leave_defaults_out(tmp_path: Path) -> None:
    cfg = load_config_text(CONFIG.format(data=tmp_path))
    short: dict[str, Any] = short_sections(cfg)
    plc, ua = short["devices"]
    assert plc == {
        "name": "plc1",
        "host": "10.0.0.5",
        "groups": [{"name": "fast", "tags": [{"name": "counter", "address": 0}]}],
    }
    assert ua["protocol"] == "opcua" and list(ua)[-1] == "groups"
    assert short["outbox"] == {}
