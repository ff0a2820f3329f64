"""The gate in front of every route: host, credential, role, CSRF, body size, stream caps.

A pure ASGI middleware, because FastAPI reads and parses a body before any dependency runs:
here nothing of the body is read until the caller is known and allowed, and then at most
the route's limit of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.api.auth import (
    CSRF_HEADER,
    REFUSAL_DETAIL,
    REFUSAL_STATUS,
    SAFE_METHODS,
    Needs,
    Refusal,
    Security,
    route_needs,
)
from tandem.api.governor import SHED, LoopGovernor
from tandem.security.roles import Access, Principal, PrincipalKind

# Health probes never wait behind operator load (a keepalived check script times out); nor
# does the peer (see _ungoverned).
UNGOVERNED_PATHS = frozenset({"/api/v1/health"})
DASHBOARD_PATHS = frozenset({"/", "/index.html"})
LOGIN_PAGE = "/login"
DOCS_PREFIX = "/api/v1/docs"
STREAM_CHECK_S = 1.0
NEEDS_CACHE_SIZE = 512  # how soon an open stream ends after its credential does
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class BodyTooLarge(Exception):
    pass


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _origin_of(headers: Headers) -> str | None:
    """The Origin header, or the origin of the Referer when a browser sent no Origin."""
    origin = headers.get("origin")
    if origin:
        return origin.lower().rstrip("/")
    referer = headers.get("referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def same_origin(headers: Headers, tls: bool, *, required: bool) -> bool:
    """The request comes from a page of this very node (scheme and host, port included)."""
    origin = _origin_of(headers)
    if origin is None:
        return not required
    expected = f"{'https' if tls else 'http'}://{headers.get('host', '').lower()}"
    return hmac.compare_digest(origin.encode(), expected.encode())


class StreamSlots:
    """Open event streams of one app, in total and per caller."""

    def __init__(self) -> None:
        self.total = 0
        self.per: Counter[str] = Counter()

    def take(self, key: str, total_cap: int, per_cap: int) -> bool:
        if self.total >= total_cap or self.per[key] >= per_cap:
            return False
        self.total += 1
        self.per[key] += 1
        return True

    def give(self, key: str) -> None:
        self.total -= 1
        self.per[key] -= 1
        if self.per[key] <= 0:
            del self.per[key]


class SecurityMiddleware:
    """Decides about each HTTP request from its headers alone, then lets it through or not."""

    def __init__(self, app: ASGIApp, security: Security, router: Router) -> None:
        self.app = app
        self.security = security
        self.router = router
        self.streams = StreamSlots()
        # What a (method, path) needs, remembered: matching it against every route costs more
        # than the rest of the decision. Dropped whenever routes are added, bounded in size
        # (arbitrary paths from outside must not grow it).
        self._needs: dict[tuple[str, str], Needs] = {}
        self._routes_seen = -1

    def _route_needs(self, scope: Scope) -> Needs:
        routes = self.router.routes
        if len(routes) != self._routes_seen or len(self._needs) >= NEEDS_CACHE_SIZE:
            self._needs.clear()
            self._routes_seen = len(routes)
        key = (scope["method"], scope["path"])
        found = self._needs.get(key)
        if found is None:
            found = self._needs[key] = route_needs(routes, scope)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route speaks WebSocket; refused before any handshake, as nothing is open.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        headers = Headers(scope=scope)
        sec = self.security
        if not sec.hosts.allows(headers.get("host")):
            await self._refuse(scope, send, Refusal.BAD_HOST)
            return
        need = self._route_needs(scope)
        principal = self._authenticate(need, headers)
        if isinstance(principal, Refusal):
            await self._refuse(scope, send, principal)
            return
        refusal = self._check(scope, headers, need, principal)
        if refusal is not None:
            await self._refuse(scope, send, refusal)
            return
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        limit = need.max_body or sec.limits.max_body
        try:
            receive = await self._read_body(scope, headers, receive, limit)
        except BodyTooLarge:
            await self._refuse(scope, send, Refusal.BODY_TOO_LARGE)
            return
        if need.stream and principal is not None:
            await self._stream(scope, receive, send, principal, headers)
        elif sec.governor is None or _ungoverned(scope, principal):
            await self.app(scope, receive, send)
        else:
            await self._governed(scope, receive, send, sec.governor)

    async def _governed(
        self, scope: Scope, receive: Receive, send: Send, governor: LoopGovernor
    ) -> None:
        """Run the request in its turn for the API's share of the loop, or refuse it: busy."""
        if await governor.admit() in SHED:
            await self._refuse(scope, send, Refusal.BUSY)
            return
        started = governor.started()
        try:
            await self.app(scope, receive, send)
        finally:
            governor.finished(started)

    # ---- deciding ----

    def _authenticate(self, need: Needs, headers: Headers) -> Principal | Refusal | None:
        cookie = cookie_parser(headers.get("cookie", "")).get(self.security.cookie_name)
        found = self.security.authenticate(need.access, headers.get("authorization"), cookie)
        if need.access is Access.PUBLIC:
            # A public route still learns who calls, but a bad credential does not block it.
            return found if isinstance(found, Principal) else None
        return found

    def _check(
        self, scope: Scope, headers: Headers, need: Needs, principal: Principal | None
    ) -> Refusal | None:
        method = scope["method"]
        if principal is not None and not principal.allows(need.access):
            return Refusal.FORBIDDEN
        if method in SAFE_METHODS:
            return None
        public = need.access is Access.PUBLIC
        cookie_based = (
            not public and principal is not None and principal.kind is PrincipalKind.SESSION
        )
        # A state change riding on a browser's cookie must come from our own page (Origin or
        # Referer) and carry the session's CSRF token, which another site cannot read.
        if (cookie_based or public) and not same_origin(
            headers, self.security.tls, required=cookie_based
        ):
            return Refusal.CROSS_ORIGIN
        if cookie_based:
            assert principal is not None
            expected = self.security.csrf_token(principal) or ""
            given = headers.get(CSRF_HEADER, "")
            if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                return Refusal.CSRF_TOKEN
        return None

    # ---- the body ----

    async def _read_body(
        self, scope: Scope, headers: Headers, receive: Receive, limit: int
    ) -> Receive:
        """The whole body, at most `limit` bytes, then a receive that replays it."""
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                raise BodyTooLarge
            if int(length) == 0 and not chunked:
                return receive
        elif not chunked:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return _replay([body], receive)

    # ---- streams ----

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, headers: Headers
    ) -> None:
        lim = self.security.limits
        if not self.streams.take(principal.key, lim.max_streams, lim.max_streams_per_principal):
            await self._refuse(scope, send, Refusal.STREAMS_FULL)
            return
        authorization = headers.get("authorization")
        pending: asyncio.Future[Message] | None = None

        async def watched() -> Message:
            # The stream's disconnect listener waits here for as long as the client stays; a
            # logout, a revoked token or an expired login must end it as a disconnect would,
            # so the wait is cut into STREAM_CHECK_S slices with a credential check between.
            # The receive itself is never cancelled half-way: it is kept for the next call.
            nonlocal pending
            while True:
                if not self.security.still_valid(principal, authorization):
                    return {"type": "http.disconnect"}
                task = pending if pending is not None else asyncio.ensure_future(receive())
                pending = task
                done, _ = await asyncio.wait({task}, timeout=STREAM_CHECK_S)
                if done:
                    if pending is task:
                        pending = None
                    return task.result()

        progress = {"started": False, "ended": False}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                progress["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                progress["ended"] = True
            await send(message)

        try:
            await self.app(scope, watched, tracked)
            if progress["started"] and not progress["ended"]:
                # Ended because the credential did: close the body properly, so the client
                # sees the end of a stream rather than a broken connection.
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.streams.give(principal.key)
            if pending is not None:
                pending.cancel()

    # ---- answers ----

    async def _refuse(self, scope: Scope, send: Send, reason: Refusal) -> None:
        self.security.refused(reason, scope["method"], scope["path"], _client(scope))
        path = scope["path"]
        if reason in (Refusal.NO_CREDENTIAL, Refusal.SESSION_ENDED) and path in DASHBOARD_PATHS:
            await _respond(send, 303, b"", [(b"location", LOGIN_PAGE.encode())])
            return
        status = REFUSAL_STATUS[reason]
        extra: list[tuple[bytes, bytes]] = []
        if status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="tandem"'))
        if reason is Refusal.BODY_TOO_LARGE:
            extra.append((b"connection", b"close"))
        if status == 503:
            extra.append((b"retry-after", b"1"))
        body = json.dumps({"detail": REFUSAL_DETAIL[reason], "reason": reason.value}).encode()
        await _respond(send, status, body, [(b"content-type", b"application/json"), *extra])

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        """Hardening headers on every answer (the docs page loads its own scripts: no CSP)."""
        path: str = scope["path"]
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
        ]
        if not path.startswith(DOCS_PREFIX):
            extra.append((b"content-security-policy", CSP.encode()))
        if self.security.tls:
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in extra if n not in present]
                if path.startswith("/api/") and b"cache-control" not in present:
                    added.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        return wrapped


def _ungoverned(scope: Scope, principal: Principal | None) -> bool:
    """Outside the API's share of the loop: the pair's control traffic (watermarks, handover,
    config sync: it keeps the pair correct), health probes, and changes of state (see
    tandem.api.governor)."""
    peer = principal is not None and principal.kind is PrincipalKind.PEER
    return peer or scope["method"] not in SAFE_METHODS or scope["path"] in UNGOVERNED_PATHS


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    all_headers: list[Any] = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
