"""Unit tests of the REST API, live events, metrics and the in-loop server, with a fake view."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tandem.api.app import bound_port, create_app, format_sse, serve
from tandem.api.auth import Security
from tandem.api.live import LiveFeed
from tandem.api.metrics import render_metrics
from tandem.api.view import (
    DeviceInfo,
    GroupInfo,
    HaInfo,
    Health,
    HubView,
    LiveEvent,
    OutboxInfo,
    PublisherInfo,
    Status,
    TagValue,
    TimelineEvent,
)
from tandem.config.hub import TandemConfig
from tandem.errors import TandemError
from tandem.security.roles import Role
from tandem.security.tokens import create_token


def make_status(**overrides: Any) -> Status:
    base: dict[str, Any] = {
        "node": "edge-a",
        "role": "MASTER",
        "term": 7,
        "uptime_s": 12.5,
        "devices": [
            DeviceInfo(
                name="plc1",
                connected=True,
                groups=[
                    GroupInfo(
                        name="fast",
                        interval=0.1,
                        last_poll_ms=1_700_000_000_000,
                        last_slot=17_000_000_000,
                        polls=120,
                        errors=3,
                        overruns=1,
                        last_latency_ms=4.0,
                    )
                ],
            ),
            DeviceInfo(name="plc2", connected=False, last_error="connection refused"),
        ],
        "outbox": OutboxInfo(depth=42, overflow_dropped=5),
        "publisher": PublisherInfo(
            connected=True, published_total=1000, publish_rate=9.5, values_rate=95.0, reconnects=2
        ),
    }
    base.update(overrides)
    return Status(**base)


TAGS = [
    TagValue(device="plc1", group="fast", tag="temp", value=21.5, timestamp_ms=1, slot=10),
    TagValue(device="plc1", group="fast", tag="alarm", error=1002, timestamp_ms=1, slot=10),
]


@dataclass
class FakeView:
    """A HubView in memory; `endless` keeps the subscription open like a real runtime."""

    healthy: bool = True
    current: Status = field(default_factory=make_status)
    events: list[LiveEvent] = field(default_factory=list)
    endless: bool = False
    tick_s: float = 0.05
    switchover_error: Exception | None = None
    timeline_limits: list[int] = field(default_factory=list)
    subscriptions_open: int = 0
    subscriptions_closed: int = 0

    reader_threads: set[int] = field(default_factory=set)
    live: LiveFeed = field(init=False)

    def __post_init__(self) -> None:
        self.live = LiveFeed(self.status)

    def health(self) -> Health:
        self.reader_threads.add(threading.get_ident())
        return Health(ok=self.healthy, checks={"outbox": True, "poller": self.healthy})

    def status(self) -> Status:
        self.reader_threads.add(threading.get_ident())
        return self.current

    def tags(self) -> list[TagValue]:
        self.reader_threads.add(threading.get_ident())
        return list(TAGS)

    def tags_json(self) -> bytes:
        self.reader_threads.add(threading.get_ident())
        return json.dumps([t.model_dump() for t in TAGS]).encode()

    def timeline(self, limit: int) -> list[TimelineEvent]:
        self.reader_threads.add(threading.get_ident())
        self.timeline_limits.append(limit)
        events = [
            TimelineEvent(ts_ms=i, kind="info", message=f"event {i}", detail={"i": i})
            for i in range(50)
        ]
        return events[:limit]

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        self.subscriptions_open += 1
        try:
            for event in self.events:
                yield event
            n = 0
            while self.endless:
                await asyncio.sleep(self.tick_s)
                n += 1
                yield LiveEvent("rows", [TAGS[0].model_copy(update={"value": float(n)})])
        finally:
            self.subscriptions_closed += 1

    async def switchover(self) -> dict[str, Any]:
        if self.switchover_error is not None:
            raise self.switchover_error
        return {"accepted": True, "term": self.current.term + 1}


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a server-sent event body; comments and retry lines skipped."""
    out: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own credential stores; the apps below use them."""
    monkeypatch.setattr(sys.modules[__name__], "DATA_DIR", tmp_path)
    return tmp_path


DATA_DIR = Path("/nonexistent")
HEADERS: dict[str, str] = {}  # the served app's operator token


def authed_app(view: FakeView, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    """An app on this test's data dir, and the headers of an operator token for it."""
    security = Security.from_config(TandemConfig(node="test", data_dir=DATA_DIR))
    token = create_token(DATA_DIR, Role.OPERATOR, "test-operator")
    return create_app(view, security=security, **kwargs), {"Authorization": f"Bearer {token}"}


def client_for(view: FakeView, **kwargs: Any) -> httpx.AsyncClient:
    app, headers = authed_app(view, **kwargs)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers
    )


async def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def test_fake_view_satisfies_protocol() -> None:
    assert isinstance(FakeView(), HubView)


async def test_health_all_checks_pass_returns_200() -> None:
    async with client_for(FakeView()) as client:
        response = await client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "checks": {"outbox": True, "poller": True},
        "reasons": {},
    }


async def test_health_failing_check_returns_503_with_body() -> None:
    async with client_for(FakeView(healthy=False)) as client:
        response = await client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["checks"]["poller"] is False
    assert response.json()["ok"] is False


async def test_status_view_snapshot_returned_as_schema() -> None:
    view = FakeView(current=make_status(ha=HaInfo(peer="edge-b", watermark_lag=3)))
    async with client_for(view) as client:
        response = await client.get("/api/v1/status")
    assert response.status_code == 200
    body = response.json()
    assert Status.model_validate(body) == view.current
    assert body["devices"][1]["last_error"] == "connection refused"
    assert body["ha"]["peer"] == "edge-b"


async def test_tags_values_and_errors_returned() -> None:
    async with client_for(FakeView()) as client:
        response = await client.get("/api/v1/tags")
    assert response.status_code == 200
    assert [TagValue.model_validate(t) for t in response.json()] == TAGS
    assert response.json()[1]["value"] is None


async def test_timeline_limit_query_passed_to_view() -> None:
    view = FakeView()
    async with client_for(view) as client:
        response = await client.get("/api/v1/timeline", params={"limit": 3})
        default = await client.get("/api/v1/timeline")
    assert [e["message"] for e in response.json()] == ["event 0", "event 1", "event 2"]
    assert view.timeline_limits == [3, 100]
    assert len(default.json()) == 50


async def test_timeline_zero_limit_rejected_with_422() -> None:
    view = FakeView()
    async with client_for(view) as client:
        response = await client.get("/api/v1/timeline", params={"limit": 0})
    assert response.status_code == 422
    assert view.timeline_limits == []


async def test_reads_any_endpoint_view_called_on_event_loop_thread() -> None:
    view = FakeView()
    async with client_for(view) as client:
        for path in ("/api/v1/health", "/api/v1/status", "/api/v1/tags", "/api/v1/timeline"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
    assert view.reader_threads == {threading.get_ident()}


async def test_switchover_supported_returns_view_result() -> None:
    async with client_for(FakeView()) as client:
        response = await client.post("/api/v1/switchover")
    assert response.status_code == 200
    assert response.json() == {"accepted": True, "term": 8}


async def test_switchover_not_implemented_returns_501() -> None:
    view = FakeView(switchover_error=NotImplementedError("no HA configured"))
    async with client_for(view) as client:
        response = await client.post("/api/v1/switchover")
    assert response.status_code == 501
    assert response.json()["detail"] == "no HA configured"


async def test_switchover_refused_by_runtime_returns_409() -> None:
    view = FakeView(switchover_error=TandemError("peer is not ready"))
    async with client_for(view) as client:
        response = await client.post("/api/v1/switchover")
    assert response.status_code == 409
    assert "peer is not ready" in response.json()["detail"]


async def test_metrics_endpoint_exposition_parses() -> None:
    async with client_for(FakeView()) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("tandem_role", (("role", "MASTER"),))] == 1
    assert samples[("tandem_role", (("role", "BACKUP"),))] == 0
    assert samples[("tandem_term", ())] == 7
    assert samples[("tandem_device_connected", (("device", "plc1"),))] == 1
    assert samples[("tandem_device_connected", (("device", "plc2"),))] == 0
    assert samples[("tandem_devices_connected", ())] == 1
    group = (("device", "plc1"), ("group", "fast"))
    assert samples[("tandem_group_polls_total", group)] == 120
    assert samples[("tandem_group_errors_total", group)] == 3
    assert samples[("tandem_group_overruns_total", group)] == 1
    assert samples[("tandem_group_poll_latency_seconds", group)] == pytest.approx(0.004)
    assert samples[("tandem_outbox_depth", ())] == 42
    assert samples[("tandem_outbox_overflow_dropped_total", ())] == 5
    assert samples[("tandem_published_total", ())] == 1000
    assert samples[("tandem_publish_rate", ())] == 9.5
    assert samples[("tandem_values_rate", ())] == 95.0
    assert samples[("tandem_publisher_reconnects_total", ())] == 2
    assert all(name.startswith("tandem_") for name, _ in samples)


def test_metrics_unknown_role_gets_its_own_series() -> None:
    text = render_metrics(make_status(role="ODD")).decode()
    roles = {
        s.labels["role"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "tandem_role"
        for s in f.samples
    }
    known = {"MASTER", "BACKUP", "FAULT", "SINGLE", "INIT", "STOPPED"}
    assert roles == {**dict.fromkeys(known, 0), "ODD": 1}


def test_metrics_role_series_do_not_grow_with_terms_or_phases() -> None:
    names = set()
    for term, phase in ((1, "barrier"), (2, "quiet"), (3, "active"), (9, "acquiring")):
        text = render_metrics(make_status(role="MASTER", term=term, phase=phase)).decode()
        names |= {
            s.labels["role"]
            for f in text_string_to_metric_families(text)
            if f.name == "tandem_role"
            for s in f.samples
        }
    assert names == {"MASTER", "BACKUP", "FAULT", "SINGLE", "INIT", "STOPPED"}


def test_metrics_watermark_lag_only_when_known() -> None:
    without = render_metrics(make_status(ha=HaInfo(peer="edge-b"))).decode()
    with_lag = render_metrics(make_status(ha=HaInfo(watermark_lag=12))).decode()
    assert "tandem_ha_watermark_lag" not in without
    assert "tandem_ha_watermark_lag 12.0" in with_lag


def test_format_sse_model_data_is_one_event() -> None:
    event = LiveEvent("timeline", TimelineEvent(ts_ms=5, kind="device", message="a\nb"))
    text = format_sse(event)
    assert text.startswith("event: timeline\ndata: ")
    assert text.endswith("\n\n")
    assert text.count("\n") == 3  # the newline in the message is escaped inside the JSON
    assert parse_sse(text) == [
        ("timeline", {"ts_ms": 5, "kind": "device", "message": "a\nb", "detail": {}})
    ]


async def test_events_finite_subscription_streams_each_event_then_ends() -> None:
    view = FakeView(
        events=[
            LiveEvent("rows", TAGS),
            LiveEvent("status", make_status(role="BACKUP")),
            LiveEvent("timeline", {"ts_ms": 1, "kind": "role", "message": "became BACKUP"}),
        ]
    )
    async with client_for(view) as client:
        response = await asyncio.wait_for(client.get("/api/v1/events"), timeout=10)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["rows", "status", "timeline"]
    assert events[0][1][0]["tag"] == "temp"
    assert events[1][1]["role"] == "BACKUP"
    assert view.subscriptions_closed == 1


# ---- the same app behind the real in-loop server: streaming, disconnects, shutdown ----


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeView, str, asyncio.Task[None]]]:
    view = FakeView(endless=True)
    app, headers = authed_app(view, heartbeat_s=0.2)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(app, "127.0.0.1", 0, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        HEADERS.clear()
        HEADERS.update(headers)
        yield view, f"http://127.0.0.1:{bound_port(app)}", task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_serve_port_zero_answers_on_bound_port(
    served: tuple[FakeView, str, asyncio.Task[None]],
) -> None:
    _, url, _ = served
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, trust_env=False) as client:
        health = await client.get("/api/v1/health")
        page = await client.get("/")
        script = await client.get("/static/app.js")
    assert health.status_code == 200
    assert page.status_code == 200 and 'id="role"' in page.text
    assert script.status_code == 200 and "EventSource" in script.text


async def test_events_client_closes_stream_subscription_released(
    served: tuple[FakeView, str, asyncio.Task[None]],
) -> None:
    view, url, _ = served
    received: list[tuple[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=url, headers=HEADERS, trust_env=False, timeout=10) as client,
        client.stream("GET", "/api/v1/events") as response,
    ):
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            received = parse_sse(buffer.rsplit("\n\n", 1)[0] + "\n\n")
            if len(received) >= 2:
                break
    assert [name for name, _ in received[:2]] == ["rows", "rows"]
    assert received[1][1][0]["value"] > received[0][1][0]["value"]
    assert await wait_until(lambda: view.subscriptions_closed == 1)
    assert view.subscriptions_open == 1


async def test_events_idle_stream_sends_heartbeat_comment(
    served: tuple[FakeView, str, asyncio.Task[None]],
) -> None:
    view, url, _ = served
    view.endless = False  # the subscription stays open but silent
    view.events = []

    async def silent() -> AsyncIterator[LiveEvent]:
        await asyncio.Event().wait()
        yield LiveEvent("info", None)  # type: ignore[arg-type]  # never reached

    view.subscribe = silent  # type: ignore[method-assign]
    async with (
        httpx.AsyncClient(base_url=url, headers=HEADERS, trust_env=False, timeout=10) as client,
        client.stream("GET", "/api/v1/events") as response,
    ):
        seen = ""
        async for chunk in response.aiter_text():
            seen += chunk
            if ": heartbeat" in seen:
                break
    assert ": heartbeat\n\n" in seen
    assert "event:" not in seen


async def test_serve_cancelled_with_open_stream_stops_promptly(
    served: tuple[FakeView, str, asyncio.Task[None]],
) -> None:
    view, url, task = served
    async with httpx.AsyncClient(
        base_url=url, headers=HEADERS, trust_env=False, timeout=10
    ) as client:
        async with client.stream("GET", "/api/v1/events") as response:
            stream = response.aiter_text()
            await anext(stream)
            started = time.monotonic()
            task.cancel()
            # The server ends the stream itself; the client sees a clean end of body.
            async for _ in stream:
                pass
        with pytest.raises(asyncio.CancelledError):
            await task
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"shutdown took {elapsed:.1f} s"
    assert view.subscriptions_closed == 1


async def test_serve_address_in_use_raises_tandem_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(TandemError, match="cannot listen"):
            await serve(authed_app(FakeView())[0], "127.0.0.1", port)


def test_metrics_include_vrrp_counters_when_status_has_vrrp() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tandem.api.metrics import vrrp_metrics

    vrrp = {
        "priority": 70,
        "adverts_sent": 12,
        "adverts_received": 30,
        "drops": {"auth_mismatch": 4},
        "transitions": {"startup": 1, "master_down_timer_expired": 2},
        "checks": {"broker": True, "devices": False},
    }
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield from vrrp_metrics(vrrp)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("tandem_vrrp_priority", ())] == 70
    assert samples[("tandem_vrrp_adverts_sent_total", ())] == 12
    assert samples[("tandem_vrrp_adverts_dropped_total", (("reason", "auth_mismatch"),))] == 4
    key = ("tandem_vrrp_transitions_total", (("reason", "master_down_timer_expired"),))
    assert samples[key] == 2
    assert samples[("tandem_health_check", (("check", "devices"),))] == 0


def test_metrics_ha_phase_drops_and_spurious_takeovers() -> None:
    vrrp = {"broker_drops": {"unsigned": 3, "future_slot": 1}, "spurious_takeovers": 2}
    status = make_status(phase="quiet", publishing=False, vrrp=vrrp, ha=HaInfo(peer="edge-b"))
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(status).decode())}
    phases = {s.labels["phase"]: s.value for s in families["tandem_ha_phase"].samples}
    assert phases["quiet"] == 1 and sum(phases.values()) == 1
    drops = {
        s.labels["reason"]: s.value
        for s in families["tandem_broker_messages_dropped"].samples
        if s.name.endswith("_total")
    }
    assert drops == {"unsigned": 3, "future_slot": 1}
    spurious = families["tandem_vrrp_spurious_takeovers"].samples
    assert [s.value for s in spurious if s.name.endswith("_total")] == [2]
    assert families["tandem_publishing"].samples[0].value == 0
