"""The API's defences, in process: every route refuses without a credential, roles, CSRF,
Host, body limits, stream caps, logins and their throttle, live token changes, no secret out.

The app is built as a node builds it: the hub API, the peer link and the config routes.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from tandem.api.app import bound_port, create_app, serve
from tandem.api.auth import Refusal, Security, flat_routes
from tandem.api.governor import LoopGovernor
from tandem.config.hub import TandemConfig
from tandem.ha.configsync import ConfigSync
from tandem.ha.peer import HandoverAnswer, HandoverRequest, PeerState, peer_router
from tandem.security.keys import peer_bearer
from tandem.security.roles import Role
from tandem.security.tokens import TokenStore, create_token
from tandem.security.users import UserStore
from tests.unit.test_api import FakeView

SECRET = "unit-test-cluster-secret"
MQTT_PASSWORD = "mqtt-pa55word-xyz"
PASSWORD = "correct horse battery"
BASE = "http://localhost"
ORIGIN = "http://localhost"


def node_config(tmp_path: Path, **api: Any) -> TandemConfig:
    return TandemConfig.model_validate(
        {
            "node": "node-a",
            "data_dir": str(tmp_path / "data"),
            "api": {"host": "127.0.0.1", "port": 0, **api},
            "mqtt": {"username": "hub", "password": MQTT_PASSWORD},
            "ha": {
                "peer_url": "http://127.0.0.2:8085",
                "secret": SECRET,
                "vrrp": {
                    "transport": "udp",
                    "unicast_src_ip": "127.0.0.1",
                    "unicast_peers": ["127.0.0.2"],
                },
            },
        }
    )


def peer_state() -> PeerState:
    return PeerState(
        node="node-a",
        role="MASTER",
        coordinator_state="MASTER",
        publishing=True,
        term=1,
        priority=100,
        base_priority=100,
        standby="hot",
        watermarks={},
        buffer_from={},
        healthy=True,
        started_at=0.0,
    )


@dataclass
class Node:
    app: FastAPI
    security: Security
    view: FakeView
    data_dir: Path
    tokens: dict[Role, str]
    handovers: list[HandoverRequest]


def build_node(tmp_path: Path, *, provision: bool = True, **api: Any) -> Node:
    """The app a pair node serves: hub API, peer link with config sync, config routes.

    `provision` adds a token and a user (with a password) per role.
    """
    cfg = node_config(tmp_path, **api)
    security = Security.from_config(cfg)
    view = FakeView()
    app = create_app(view, security=security)
    handovers: list[HandoverRequest] = []

    async def on_handover(req: HandoverRequest) -> HandoverAnswer:
        handovers.append(req)
        return HandoverAnswer(accepted=True, reason="ok")

    async def apply(_: TandemConfig) -> None:
        return None

    sync = ConfigSync(cfg, None, apply, None, lambda message, detail: None)
    sync.main_routes(app)

    def extra(router: Any, auth: Any) -> None:
        sync.routes(router, auth)

        @router.post("/switchover")  # as the HA node adds it: declares nothing itself
        async def forwarded() -> dict[str, Any]:
            return {"ok": True}

    app.include_router(peer_router(SECRET, peer_state, 0.05, on_handover, extra=extra))
    tokens: dict[Role, str] = {}
    if provision:
        tokens = {role: create_token(cfg.data_dir, role, f"unit-{role.value}") for role in Role}
        users = UserStore(cfg.data_dir)
        for role in Role:
            users.add(role.value, role, PASSWORD)
    return Node(app, security, view, cfg.data_dir, tokens, handovers)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-security")


@pytest.fixture(scope="module")
def node(module_dir: Path) -> Node:
    """Shared by the tests that only read: hashing users' passwords is slow on purpose."""
    return build_node(module_dir)


def client(node: Node, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url=BASE, **kw)


def bearer(node: Node, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.tokens[role]}"}


async def login(c: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    return await c.post(
        "/api/v1/login", json={"username": user, "password": password}, headers={"Origin": ORIGIN}
    )


# ---- every route, from the route table -----------------------------------------------------------

PUBLIC = {("GET", "/api/v1/health"), ("GET", "/login"), ("POST", "/api/v1/login")}


def route_table(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers opened up."""
    for route in flat_routes(app.routes):
        if isinstance(route, Mount):
            yield "GET", f"{route.path}/app.js"
            continue
        path = getattr(route, "path", None)
        assert isinstance(path, str) and path.startswith("/"), f"unexpected route {route!r}"
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            yield method, path


def _collect_routes() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as scratch:  # config sync writes its version file
        return sorted(set(route_table(build_node(Path(scratch), provision=False).app)))


ROUTES = _collect_routes()


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r not in PUBLIC])
async def test_api_route_without_credential_refused(node: Node, method: str, path: str) -> None:
    async with client(node) as c:
        response = await c.request(method, path, headers={"Origin": ORIGIN})
    if path == "/":
        assert response.status_code == 303 and response.headers["location"] == "/login"
    else:
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_api_route_table_covers_every_kind_of_route() -> None:
    """The generated list must really hold the routes it is meant to guard."""
    for expected in [
        ("POST", "/api/v1/switchover"),
        ("PUT", "/api/v1/config"),
        ("POST", "/api/v1/peer/handover"),
        ("GET", "/api/v1/peer/stream"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/static/app.js"),
    ]:
        assert expected in ROUTES


@pytest.mark.parametrize("path", ["/api/v1/peer/state", "/api/v1/peer/config"])
async def test_api_peer_route_admin_token_refused_peer_bearer_accepted(
    node: Node, path: str
) -> None:
    async with client(node) as c:
        as_admin = await c.get(path, headers=bearer(node, Role.ADMIN))
        as_peer = await c.get(path, headers={"Authorization": f"Bearer {peer_bearer(SECRET)}"})
        raw_secret = await c.get(path, headers={"Authorization": f"Bearer {SECRET}"})
    assert as_admin.status_code == 401
    assert raw_secret.status_code == 401  # only the derived bearer opens the link
    assert as_peer.status_code == 200


async def test_api_public_routes_answer_without_credential(node: Node) -> None:
    async with client(node) as c:
        health = await c.get("/api/v1/health")
        page = await c.get("/login")
        script = await c.get("/static/login.js")
    assert health.status_code == 200 and set(health.json()) <= {"ok", "checks", "reasons"}
    assert page.status_code == 200 and "login-form" in page.text
    assert script.status_code == 200


# ---- bodies are not read before the caller is known ----------------------------------------------


async def test_api_handover_without_credential_body_never_read(node: Node) -> None:
    reads: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        reads.append("read")
        return {"type": "http.request", "body": b'{"from_node": "x"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/peer/handover",
        "raw_path": b"/api/v1/peer/handover",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-length", b"18")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8085),
    }
    await node.app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert reads == []
    assert node.handovers == []


# ---- roles ---------------------------------------------------------------------------------------


async def test_api_switchover_viewer_forbidden_operator_and_admin_allowed(node: Node) -> None:
    async with client(node) as c:
        viewer = await c.post("/api/v1/switchover", headers=bearer(node, Role.VIEWER))
        operator = await c.post("/api/v1/switchover", headers=bearer(node, Role.OPERATOR))
        admin = await c.post("/api/v1/switchover", headers=bearer(node, Role.ADMIN))
    assert viewer.status_code == 403
    assert operator.status_code == 200 and admin.status_code == 200


async def test_api_config_put_needs_admin(node: Node) -> None:
    async with client(node) as c:
        operator = await c.put("/api/v1/config", content=b"x", headers=bearer(node, Role.OPERATOR))
        admin = await c.put("/api/v1/config", content=b"node: x", headers=bearer(node, Role.ADMIN))
    assert operator.status_code == 403
    assert admin.status_code == 400  # past auth: this test node has no config file


async def test_api_config_get_redacts_every_secret(node: Node) -> None:
    async with client(node) as c:
        response = await c.get("/api/v1/config", headers=bearer(node, Role.VIEWER))
        peer = await c.get(
            "/api/v1/peer/config", headers={"Authorization": f"Bearer {peer_bearer(SECRET)}"}
        )
    assert response.status_code == 200
    assert MQTT_PASSWORD not in response.text and SECRET not in response.text
    assert response.json()["shared"]["mqtt"]["password"] == "<redacted>"
    assert response.json()["shared"]["mqtt"]["username"] == "hub"
    # The peer needs the real one to publish after a takeover.
    assert peer.json()["shared"]["mqtt"]["password"] == MQTT_PASSWORD


async def test_api_metrics_need_viewer_unless_public(tmp_path: Path) -> None:
    open_node = build_node(tmp_path, metrics_public=True)
    async with client(open_node) as c:
        public = await c.get("/metrics")
        status = await c.get("/api/v1/status")
    assert public.status_code == 200 and "tandem_api_refused_total" in public.text
    assert status.status_code == 401


# ---- sessions, CSRF, origins ---------------------------------------------------------------------


async def test_api_login_cookie_flags_and_session_info(node: Node) -> None:
    async with client(node) as c:
        response = await login(c, "operator")
        info = await c.get("/api/v1/session")
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; Secure under TLS
    assert info.json()["user"] == "operator" and info.json()["role"] == "operator"
    assert info.json()["csrf_token"] == response.json()["csrf_token"]


async def test_api_cookie_post_without_csrf_header_refused(node: Node) -> None:
    async with client(node) as c:
        await login(c, "operator")
        response = await c.post("/api/v1/switchover", headers={"Origin": ORIGIN})
    assert response.status_code == 403 and response.json()["reason"] == "csrf_token"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "https://localhost"},  # another scheme is another origin
        {"Referer": "http://evil.example/page"},
        {},  # a cookie-based change must say where it comes from
    ],
)
async def test_api_cookie_post_foreign_or_missing_origin_refused(
    node: Node, headers: dict[str, str]
) -> None:
    async with client(node) as c:
        csrf = (await login(c, "operator")).json()["csrf_token"]
        response = await c.post("/api/v1/switchover", headers={**headers, "X-CSRF-Token": csrf})
    assert response.status_code == 403 and response.json()["reason"] == "cross_origin"


async def test_api_cookie_post_same_origin_with_csrf_allowed(node: Node) -> None:
    async with client(node) as c:
        csrf = (await login(c, "operator")).json()["csrf_token"]
        by_origin = await c.post(
            "/api/v1/switchover", headers={"Origin": ORIGIN, "X-CSRF-Token": csrf}
        )
        by_referer = await c.post(
            "/api/v1/switchover", headers={"Referer": f"{ORIGIN}/", "X-CSRF-Token": csrf}
        )
    assert by_origin.status_code == 200 and by_referer.status_code == 200


async def test_api_bearer_post_needs_no_csrf_token(node: Node) -> None:
    async with client(node) as c:
        response = await c.post(
            "/api/v1/switchover",
            headers={**bearer(node, Role.OPERATOR), "Origin": "http://evil.example"},
        )
    assert response.status_code == 200


async def test_api_login_cross_site_refused(node: Node) -> None:
    async with client(node) as c:
        response = await c.post(
            "/api/v1/login",
            json={"username": "viewer", "password": PASSWORD},
            headers={"Origin": "http://evil.example"},
        )
    assert response.status_code == 403


async def test_api_login_form_encoded_refused(node: Node) -> None:
    async with client(node) as c:
        response = await c.post("/api/v1/login", data={"username": "viewer", "password": PASSWORD})
    assert response.status_code == 415


async def test_api_logout_ends_the_session(node: Node) -> None:
    async with client(node) as c:
        csrf = (await login(c, "viewer")).json()["csrf_token"]
        cookie = dict(c.cookies)
        out = await c.post("/api/v1/logout", headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
    assert out.status_code == 200
    async with client(node, cookies=cookie) as c:
        after = await c.get("/api/v1/status")
    assert after.status_code == 401 and after.json()["reason"] == "session_ended"


async def test_api_session_idle_timeout_ends_login(tmp_path: Path) -> None:
    n = build_node(tmp_path, session_idle_timeout=60, session_lifetime=600)
    now = [1000.0]
    n.security.clock = lambda: now[0]
    async with client(n) as c:
        await login(c, "viewer")
        now[0] += 59
        assert (await c.get("/api/v1/status")).status_code == 200
        now[0] += 61
        assert (await c.get("/api/v1/status")).status_code == 401


async def test_api_user_removed_while_logged_in_refused(tmp_path: Path) -> None:
    n = build_node(tmp_path)
    async with client(n) as c:
        await login(c, "admin")
        assert (await c.get("/api/v1/status")).status_code == 200
        UserStore(n.data_dir).remove("admin")
        assert (await c.get("/api/v1/status")).status_code == 401


# ---- logins --------------------------------------------------------------------------------------


async def test_api_login_wrong_password_and_unknown_user_same_answer(tmp_path: Path) -> None:
    n = build_node(tmp_path)
    async with client(n) as c:
        wrong = await login(c, "viewer", "not the password")
        unknown = await login(c, "nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


async def test_api_login_repeated_failures_throttled_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = build_node(tmp_path)
    caplog.set_level(logging.INFO)
    async with client(n) as c:
        answers = [(await login(c, "viewer", f"guess {i}")).status_code for i in range(4)]
        right_but_throttled = await login(c, "viewer")
    assert answers[:3] == [401, 401, 401]
    assert answers[3] == 429 or right_but_throttled.status_code == 429
    assert right_but_throttled.status_code == 429
    assert int(right_but_throttled.headers["retry-after"]) >= 1
    assert n.security.refusals["login_throttled"] >= 1
    assert "login_throttled" in caplog.text


# ---- hosts, bodies, streams ----------------------------------------------------------------------


async def test_api_wrong_host_refused_even_on_health(node: Node) -> None:
    async with client(node) as c:
        response = await c.get("/api/v1/health", headers={"Host": "rebind.evil.example"})
        with_port = await c.get("/api/v1/health", headers={"Host": "localhost:8085"})
    assert response.status_code == 400 and response.json()["reason"] == "bad_host"
    assert with_port.status_code == 200


async def test_api_allowed_hosts_from_config(tmp_path: Path) -> None:
    n = build_node(tmp_path, allowed_hosts=["hub.plant.example"])
    async with client(n) as c:
        ours = await c.get("/api/v1/health", headers={"Host": "hub.plant.example"})
        local = await c.get("/api/v1/health")
    assert ours.status_code == 200 and local.status_code == 400


async def test_api_oversized_body_413_before_the_route(node: Node) -> None:
    big = b"x" * (node.security.limits.max_body + 1)
    async with client(node) as c:
        declared = await c.post("/api/v1/switchover", content=big, headers=bearer(node, Role.ADMIN))

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"y" * 1024

        chunked = await c.post(
            "/api/v1/peer/handover",
            content=chunks(),
            headers={"Authorization": f"Bearer {peer_bearer(SECRET)}"},
        )
        login_big = await c.post(
            "/api/v1/login", content=big, headers={"Content-Type": "application/json"}
        )
    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert login_big.status_code == 413
    assert node.handovers == []


async def test_api_config_put_larger_body_allowed(node: Node) -> None:
    body = b"# " + b"x" * (node.security.limits.max_body * 2) + b"\nnode: other\n"
    async with client(node) as c:
        response = await c.put("/api/v1/config", content=body, headers=bearer(node, Role.ADMIN))
    assert response.status_code == 400  # read and parsed, not refused for its size


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    n = build_node(tmp_path, max_streams=3, max_streams_per_principal=2)
    n.view.endless = True
    ready = asyncio.Event()
    task = asyncio.create_task(serve(n.app, "127.0.0.1", 0, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield n, f"http://localhost:{bound_port(n.app)}"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_api_event_streams_capped_per_principal_and_per_app(
    served: tuple[Node, str],
) -> None:
    n, url = served
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as c:

        async def open_stream(role: Role) -> tuple[Any, httpx.Response]:
            cm = c.stream("GET", "/api/v1/events", headers=bearer(n, role))
            response = await cm.__aenter__()
            return cm, response

        opened = [await open_stream(Role.VIEWER), await open_stream(Role.VIEWER)]
        try:
            third_same = await c.get("/api/v1/events", headers=bearer(n, Role.VIEWER))
            opened.append(await open_stream(Role.OPERATOR))
            over_app = await c.get("/api/v1/events", headers=bearer(n, Role.ADMIN))
            assert [r.status_code for _, r in opened] == [200, 200, 200]
            assert third_same.status_code == 503
            assert over_app.status_code == 503
        finally:
            for cm, _ in opened:
                await cm.__aexit__(None, None, None)
        # Closed streams give their slots back.
        for _ in range(50):
            async with c.stream("GET", "/api/v1/events", headers=bearer(n, Role.ADMIN)) as r:
                if r.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status_code == 200


async def test_api_token_created_while_running_accepted_and_revoked_refused(
    served: tuple[Node, str],
) -> None:
    n, url = served
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as c:
        info, token = TokenStore(n.data_dir).create(Role.VIEWER, "late")
        headers = {"Authorization": f"Bearer {token}"}
        accepted = await c.get("/api/v1/status", headers=headers)
        async with c.stream("GET", "/api/v1/events", headers=headers) as stream:
            assert stream.status_code == 200
            TokenStore(n.data_dir).revoke(info.id)
            refused = await c.get("/api/v1/status", headers=headers)

            async def drain() -> None:
                async for _ in stream.aiter_bytes():
                    pass

            # The open stream ends too, within its disconnect check.
            await asyncio.wait_for(drain(), timeout=5)
    assert accepted.status_code == 200
    assert refused.status_code == 401


# ---- no secret leaves ----------------------------------------------------------------------------


async def test_api_secrets_absent_from_responses_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    n = build_node(tmp_path)
    answers: list[str] = []
    async with client(n) as c:
        for response in [
            await login(c, "admin"),
            await login(c, "viewer", "wrong " + PASSWORD),
            await c.get("/api/v1/config", headers=bearer(n, Role.ADMIN)),
            await c.get("/api/v1/status", headers=bearer(n, Role.VIEWER)),
            await c.get("/api/v1/status", headers={"Authorization": "Bearer tdm_bad"}),
            await c.get("/api/v1/openapi.json", headers=bearer(n, Role.VIEWER)),
            await c.get("/metrics", headers=bearer(n, Role.VIEWER)),
            await c.get("/api/v1/session", headers=bearer(n, Role.VIEWER)),
            await c.get("/api/v1/health"),
        ]:
            answers.append(response.text + str(response.headers))
    logs = caplog.text
    assert "logged in" in logs and "refused" in logs  # the log was captured at all
    secrets = [PASSWORD, MQTT_PASSWORD, SECRET, peer_bearer(SECRET), *n.tokens.values()]
    for secret in secrets:
        assert secret not in logs
        for answer in answers:
            assert secret not in answer
    stored = (n.data_dir / "tokens.json").read_text() + (n.data_dir / "users.json").read_text()
    assert not any(t in stored for t in n.tokens.values()) and PASSWORD not in stored


async def test_api_websocket_refused_before_handshake(node: Node) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8085),
        "subprotocols": [],
    }
    await node.app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_api_reads_past_the_loop_share_wait_then_busy_but_peer_health_and_writes_pass(
    tmp_path: Path,
) -> None:
    node = build_node(tmp_path)
    governor = LoopGovernor(share=0.001, burst=0.001, queue=1, max_wait=0.3)
    node.security.governor = governor
    started = governor.started()
    await asyncio.sleep(0.05)
    governor.finished(started)  # the API has used its share: ~50 s to pay back at this rate
    viewer = bearer(node, Role.VIEWER)
    async with client(node) as c:
        waited, queue_full = await asyncio.gather(
            c.get("/api/v1/status", headers=viewer), c.get("/api/v1/tags", headers=viewer)
        )
        peer = await c.get(
            "/api/v1/peer/state", headers={"Authorization": f"Bearer {peer_bearer(SECRET)}"}
        )
        health = await c.get("/api/v1/health")
        write = await c.post("/api/v1/switchover", headers=bearer(node, Role.OPERATOR))
    for busy in (waited, queue_full):
        assert busy.status_code == 503, busy.text
        assert busy.json()["reason"] == "busy" and busy.headers["retry-after"] == "1"
    assert governor.stats.shed == {"queue_full": 1, "waited_too_long": 1}
    assert peer.status_code == 200 and health.status_code == 200
    assert write.status_code != 503
    assert node.security.refusals[Refusal.BUSY] == 2
