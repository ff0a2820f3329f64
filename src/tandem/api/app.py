"""The HTTP surface: REST, server-sent events, /metrics, the dashboard, and an in-loop server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic_core import to_jsonable_python

from tandem.api.assets import StaticAssets
from tandem.api.auth import Security, needs, principal_of
from tandem.api.live_routes import live_router
from tandem.api.login import add_login_routes
from tandem.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tandem.api.metrics import render_metrics
from tandem.api.middleware import SecurityMiddleware
from tandem.api.secmetrics import render_security_metrics
from tandem.api.view import Health, HubView, LiveEvent, Status, TagValue, TimelineEvent
from tandem.errors import TandemError
from tandem.security.roles import Access

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API = "/api/v1"

# How long a browser waits before reconnecting an EventSource after the stream ends.
SSE_RETRY_MS = 2000
# Events held per client between the subscription and the socket: one, so a slow client's
# backlog stays in the live feed, where a newer value of a row replaces the queued one.
SSE_QUEUE_SIZE = 1
# Upper bound on how long a stream takes to notice a vanished client or a shutdown
# when nothing else wakes it.
SSE_CHECK_S = 1.0


class LiveStreams:
    """The open event streams of one app, so a server shutdown can end them at once.

    Without this, uvicorn waits for every open stream until its graceful timeout and then
    cancels it, which makes every shutdown as slow as that timeout.
    """

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[LiveEvent | None]] = set()
        self.closing = False

    def open(self) -> asyncio.Queue[LiveEvent | None]:
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(maxsize=SSE_QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    def release(self, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._queues.discard(queue)

    def close_all(self) -> None:
        """Ask every stream to end; a full queue is caught by the stream's periodic check."""
        self.closing = True
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._queues)


def format_sse(event: LiveEvent) -> str:
    """One server-sent event; JSON has no raw newlines, so `data` is always a single line."""
    payload = json.dumps(to_jsonable_python(event.data), separators=(",", ":"))
    return f"event: {event.type}\ndata: {payload}\n\n"


async def _pump(events: AsyncIterator[LiveEvent], queue: asyncio.Queue[LiveEvent | None]) -> None:
    """Move one subscription into a queue, so the stream can wait on it with a timeout.

    Waiting on the subscription's __anext__ with a timeout would cancel it mid-step and leave
    a generator half-run; a queue can be abandoned at any point.
    """
    try:
        async for event in events:
            await queue.put(event)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("live subscription failed; ending the stream")
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    # The subscription ended on its own: end the stream (after what is queued), the browser
    # reconnects.
    await queue.put(None)


async def event_stream(
    request: Request, view: HubView, streams: LiveStreams, heartbeat_s: float
) -> AsyncIterator[str]:
    """The body of GET /events: live events, a heartbeat comment when idle, an end on exit."""
    queue = streams.open()
    pump = asyncio.create_task(_pump(view.subscribe(), queue), name="sse-pump")
    check_s = min(SSE_CHECK_S, heartbeat_s)
    last_sent = time.monotonic()
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        while not streams.closing:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=check_s)
            except TimeoutError:
                if await request.is_disconnected():
                    break
                if time.monotonic() - last_sent >= heartbeat_s:
                    # A comment line: ignored by EventSource, but it keeps proxies from idling
                    # the connection out and makes a dead client show up as a send error.
                    last_sent = time.monotonic()
                    yield ": heartbeat\n\n"
                continue
            if event is None:
                break
            last_sent = time.monotonic()
            yield format_sse(event)
    finally:
        streams.release(queue)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


def create_app(
    view: HubView, *, security: Security, title: str = "Tandem", heartbeat_s: float = 10.0
) -> FastAPI:
    """The API and dashboard for one hub runtime; `view` is read on every request.

    Every route declares what it needs (`needs(...)`); `security` decides before any body is
    read (SecurityMiddleware). Only /api/v1/health and the login page are public.
    """
    app = FastAPI(
        title=title, version="1", docs_url=f"{API}/docs", openapi_url=f"{API}/openapi.json"
    )
    streams = LiveStreams()
    app.state.view = view
    app.state.streams = streams
    app.state.security = security
    app.state.assets = StaticAssets(STATIC_DIR)
    app.add_middleware(SecurityMiddleware, security=security, router=app.router)
    _add_read_routes(app, view, streams, heartbeat_s)
    _add_control_routes(app, view, security)
    add_login_routes(app, security, STATIC_DIR)
    app.include_router(live_router(view), prefix=API)
    app.mount("/static", app.state.assets, name="static")
    return app


def _add_read_routes(app: FastAPI, view: HubView, streams: LiveStreams, heartbeat_s: float) -> None:
    # Every handler is `async def` on purpose: the view is read on the event loop thread that
    # owns the runtime's state; plain `def` handlers would run in a thread pool and race it.

    @app.get(
        f"{API}/health",
        response_model=Health,
        responses={503: {"model": Health}},
        dependencies=[needs(Access.PUBLIC)],
    )
    async def health() -> JSONResponse:
        result = view.health()
        return JSONResponse(result.model_dump(mode="json"), status_code=200 if result.ok else 503)

    @app.get(f"{API}/status", response_model=Status, dependencies=[needs(Access.VIEWER)])
    async def status() -> Status:
        return view.status()

    @app.get(f"{API}/tags", response_model=list[TagValue], dependencies=[needs(Access.VIEWER)])
    async def tags() -> Response:
        """The latest value or error of every tag, at most 0.25 s behind the pollers."""
        return Response(view.tags_json(), media_type="application/json")

    @app.get(
        f"{API}/timeline",
        response_model=list[TimelineEvent],
        dependencies=[needs(Access.VIEWER)],
    )
    async def timeline(limit: int = Query(100, ge=1, le=10_000)) -> list[TimelineEvent]:
        return view.timeline(limit)

    @app.get(
        f"{API}/events",
        response_class=StreamingResponse,
        dependencies=[needs(Access.VIEWER, stream=True)],
    )
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            event_stream(request, view, streams, heartbeat_s),
            media_type="text/event-stream",
            # no-transform and X-Accel-Buffering keep reverse proxies from buffering the stream.
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )


def _add_control_routes(app: FastAPI, view: HubView, security: Security) -> None:
    @app.post(f"{API}/switchover", dependencies=[needs(Access.OPERATOR)])
    async def switchover(request: Request) -> dict[str, Any]:
        principal = principal_of(request.scope)
        log.info("switchover asked by %s", principal.key if principal else "?")
        try:
            return await view.switchover()
        except NotImplementedError as exc:
            raise HTTPException(501, str(exc) or "switchover is not available") from exc
        except TandemError as exc:
            raise HTTPException(409, str(exc)) from exc

    metrics_access = Access.PUBLIC if security.metrics_public else Access.VIEWER

    @app.get("/metrics", response_class=Response, dependencies=[needs(metrics_access)])
    async def metrics() -> Response:
        text = render_metrics(view.status()) + render_security_metrics(security)
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    @app.get("/", include_in_schema=False, dependencies=[needs(Access.VIEWER)])
    async def dashboard(request: Request) -> Response:
        assets: StaticAssets = request.app.state.assets
        return assets.response("index.html", request)


class _InLoopServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process and ends live streams on shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process's own shutdown code owns SIGINT/SIGTERM; uvicorn must not take them.
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        streams = getattr(getattr(self.config.app, "state", None), "streams", None)
        if isinstance(streams, LiveStreams):
            streams.close_all()
        await super().shutdown(sockets=sockets)


def bind_listener(host: str, port: int) -> socket.socket:
    """A bound TCP socket; binding here (not in uvicorn) turns failures into errors, not exit."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise TandemError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def bound_port(app: FastAPI) -> int:
    """The port `serve()` listens on, valid once its `ready` event is set (useful with port 0)."""
    address = getattr(app.state, "bound_address", None)
    if address is None:
        raise TandemError("the API server is not listening yet")
    return int(address[1])


async def serve(app: FastAPI, host: str, port: int, *, ready: asyncio.Event | None = None) -> None:
    """Run the API inside the current event loop until cancelled, then shut down gracefully.

    Sets `ready` once connections are accepted; `bound_port(app)` then tells the real port.
    Raises TandemError if the address cannot be bound.
    """
    security = getattr(app.state, "security", None)
    tls = security.server_tls if isinstance(security, Security) else None
    if tls is not None:
        tls.check()
    sock = bind_listener(host, port)
    app.state.bound_address = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
        lifespan="off",
        # uvicorn would otherwise trust X-Forwarded-For from localhost and log a spoofed client.
        proxy_headers=False,
        server_header=False,
        **(tls.uvicorn_options() if tls is not None else {}),
    )
    server = _InLoopServer(config)
    running = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
    try:
        while not server.started and not running.done():
            await asyncio.sleep(0.01)
        if server.started:
            scheme = "https" if tls is not None else "http"
            log.info("API listening on %s://%s:%s", scheme, *app.state.bound_address)
            if ready is not None:
                ready.set()
        # Shielded: a cancellation of serve() must turn into a graceful stop, not kill uvicorn
        # half-way through a response.
        await asyncio.shield(running)
    except asyncio.CancelledError:
        server.should_exit = True
        # A second cancellation reaches `running` through this await and stops it hard.
        await running
        raise
    finally:
        if not running.done():
            running.cancel()
        sock.close()
