"""Who is calling and what a route needs: credentials, route access levels, refusals.

Every route declares what it needs with `needs(Access.X)` in its dependencies; the security
middleware (api/middleware.py) reads that declaration from the route table and decides before
the request body is read. A route that declares nothing needs a viewer for GET/HEAD and an
admin for anything else (the peer link under /api/v1/peer: the peer), so a new route is never
open by accident. The dependency checks again inside FastAPI, in case the middleware is absent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

from tandem.api.governor import LoopGovernor
from tandem.api.hosts import AllowedHosts, default_extra_hosts
from tandem.api.sessions import LoginThrottle, SessionStore, session_key
from tandem.security.keys import bearer_matches, peer_bearer
from tandem.security.roles import Access, Principal, PrincipalKind
from tandem.security.tls import ServerTls
from tandem.security.tokens import TokenStore
from tandem.security.users import UserStore

if TYPE_CHECKING:
    from tandem.config.hub import TandemConfig

log = logging.getLogger(__name__)

API = "/api/v1"
PEER_PREFIX = f"{API}/peer/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "tandem_session"
# Under TLS the __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only
# and for path /: nothing on another subdomain or over plain HTTP can set or shadow it.
SESSION_COOKIE_TLS = "__Host-tandem_session"
CSRF_HEADER = "x-csrf-token"
# The login page and what it loads: the only static files served without a credential.
PUBLIC_STATIC = frozenset({"/static/login.js", "/static/style.css", "/static/auth.css"})
REFUSAL_LOG_EVERY_S = 5.0


class Refusal(StrEnum):
    """Why a request was refused; each is counted and logged (rate-limited)."""

    NO_CREDENTIAL = "no_credential"
    BAD_CREDENTIAL = "bad_credential"
    SESSION_ENDED = "session_ended"
    FORBIDDEN = "forbidden"
    CSRF_TOKEN = "csrf_token"
    CROSS_ORIGIN = "cross_origin"
    BAD_HOST = "bad_host"
    BODY_TOO_LARGE = "body_too_large"
    STREAMS_FULL = "streams_full"
    LOGIN_FAILED = "login_failed"
    LOGIN_THROTTLED = "login_throttled"
    BUSY = "busy"


REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.NO_CREDENTIAL: 401,
    Refusal.BAD_CREDENTIAL: 401,
    Refusal.SESSION_ENDED: 401,
    Refusal.FORBIDDEN: 403,
    Refusal.CSRF_TOKEN: 403,
    Refusal.CROSS_ORIGIN: 403,
    Refusal.BAD_HOST: 400,
    Refusal.BODY_TOO_LARGE: 413,
    Refusal.STREAMS_FULL: 503,
    Refusal.LOGIN_FAILED: 401,
    Refusal.LOGIN_THROTTLED: 429,
    Refusal.BUSY: 503,
}

REFUSAL_DETAIL: dict[Refusal, str] = {
    Refusal.NO_CREDENTIAL: "log in, or send Authorization: Bearer <token>",
    Refusal.BAD_CREDENTIAL: "the credential is not valid",
    Refusal.SESSION_ENDED: "the login has ended; log in again",
    Refusal.FORBIDDEN: "your role may not do this",
    Refusal.CSRF_TOKEN: "missing or wrong X-CSRF-Token header",
    Refusal.CROSS_ORIGIN: "cross-site request refused",
    Refusal.BAD_HOST: "this Host is not served here",
    Refusal.BODY_TOO_LARGE: "request body too large",
    Refusal.STREAMS_FULL: "too many open event streams",
    Refusal.LOGIN_FAILED: "wrong user name or password",
    Refusal.LOGIN_THROTTLED: "too many failed logins; try again later",
    Refusal.BUSY: "the node is busy polling; try again in a second",
}


@dataclass(frozen=True, slots=True)
class Needs:
    """A route's requirement, used as a FastAPI dependency and read by the middleware.

    `stream` routes count against the open-stream caps; `max_body` overrides the body limit.
    """

    access: Access
    stream: bool = False
    max_body: int | None = None

    async def __call__(self, request: Request) -> Principal | None:
        principal = principal_of(request.scope)
        if self.access is Access.PUBLIC:
            return principal
        if principal is None:
            raise HTTPException(401, REFUSAL_DETAIL[Refusal.NO_CREDENTIAL])
        if not principal.allows(self.access):
            raise HTTPException(403, REFUSAL_DETAIL[Refusal.FORBIDDEN])
        return principal


def needs(access: Access, *, stream: bool = False, max_body: int | None = None) -> Any:
    """`dependencies=[needs(Access.OPERATOR)]` on a route (a `Depends` of a Needs)."""
    from fastapi import Depends

    return Depends(Needs(access, stream, max_body))


def principal_of(scope: Scope) -> Principal | None:
    state = scope.get("state")
    value = state.get("principal") if isinstance(state, dict) else None
    return value if isinstance(value, Principal) else None


# ---- what a route needs ----------------------------------------------------------------------


def default_needs(method: str, path: str) -> Needs:
    if path.startswith(PEER_PREFIX):
        return Needs(Access.PEER)
    return Needs(Access.VIEWER if method in SAFE_METHODS else Access.ADMIN)


def flat_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, with included routers opened up.

    Newer FastAPI keeps an included router as one nested entry that resolves to its routes
    (`effective_route_contexts`); older versions copy its routes in. Both look the same here.
    """
    for route in routes:
        nested = getattr(route, "effective_route_contexts", None)
        if callable(nested):
            yield from nested()
        else:
            yield route


def _declared(route: Any) -> Needs | None:
    found = [
        d.dependency
        for d in getattr(route, "dependencies", None) or []
        if isinstance(getattr(d, "dependency", None), Needs)
    ]
    if not found:
        return None
    order = list(Access)
    strictest = max(found, key=lambda n: order.index(n.access))
    limits = [n.max_body for n in found if n.max_body is not None]
    return Needs(strictest.access, any(n.stream for n in found), max(limits) if limits else None)


def route_needs(routes: Iterable[BaseRoute], scope: Scope) -> Needs:
    """What the route this request goes to needs; the default for an undeclared one."""
    method, path = scope["method"], scope["path"]
    for route in flat_routes(routes):
        match, _ = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            if path in PUBLIC_STATIC and method in SAFE_METHODS:
                return Needs(Access.PUBLIC)
            break
        return _declared(route) or default_needs(method, path)
    return default_needs(method, path)


# ---- the node's credentials ------------------------------------------------------------------


@dataclass(slots=True)
class Limits:
    max_body: int = 16384
    max_config_body: int = 4 * 1024 * 1024
    max_streams: int = 64
    max_streams_per_principal: int = 8


@dataclass
class Security:
    """Everything the API needs to tell callers apart; one per app."""

    users: UserStore
    tokens: TokenStore
    sessions: SessionStore
    hosts: AllowedHosts
    peer_bearer: str | None = None
    server_tls: ServerTls | None = None
    metrics_public: bool = False
    limits: Limits = field(default_factory=Limits)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    governor: LoopGovernor | None = None  # the API's share of the event loop; None: unbounded
    clock: Callable[[], float] = time.monotonic
    refusals: Counter[Refusal] = field(default_factory=Counter)
    _logged_at: dict[Refusal, float] = field(default_factory=dict)
    _suppressed: Counter[Refusal] = field(default_factory=Counter)

    @classmethod
    def from_config(cls, cfg: TandemConfig) -> Security:
        api = cfg.api
        extra: list[str] = []
        bearer = None
        if cfg.ha is not None:
            extra += [str(v.ip) for v in cfg.ha.vrrp.vips]
            if cfg.ha.vrrp.unicast_src_ip is not None:
                extra.append(str(cfg.ha.vrrp.unicast_src_ip))
            bearer = peer_bearer(cfg.ha.shared_secret())
        return cls(
            users=UserStore(cfg.data_dir),
            tokens=TokenStore(cfg.data_dir),
            sessions=SessionStore(api.session_idle_timeout, api.session_lifetime),
            hosts=AllowedHosts(api.allowed_hosts, default_extra_hosts(api.host, extra)),
            peer_bearer=bearer,
            server_tls=ServerTls.from_config(api.tls),
            metrics_public=api.metrics_public,
            limits=Limits(
                api.max_body_bytes,
                api.max_config_bytes,
                api.max_streams,
                api.max_streams_per_principal,
            ),
            governor=(
                LoopGovernor(api.loop_share, queue=api.max_waiting_requests)
                if api.loop_share is not None
                else None
            ),
        )

    @property
    def tls(self) -> bool:
        return self.server_tls is not None

    @property
    def cookie_name(self) -> str:
        return SESSION_COOKIE_TLS if self.tls else SESSION_COOKIE

    # ---- credentials ----

    def authenticate(
        self, access: Access, authorization: str | None, cookie: str | None
    ) -> Principal | Refusal:
        """The caller behind these headers, or why there is none. Never raises."""
        if access is Access.PEER:
            return self._peer(authorization)
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            info = self.tokens.check(value.strip()) if scheme.lower() == "bearer" else None
            if info is None:
                return Refusal.BAD_CREDENTIAL
            return Principal(PrincipalKind.TOKEN, info.name, info.role, token_id=info.id)
        if cookie:
            return self._session(session_key(cookie))
        return Refusal.NO_CREDENTIAL

    def _peer(self, authorization: str | None) -> Principal | Refusal:
        if authorization is None:
            return Refusal.NO_CREDENTIAL
        if self.peer_bearer is None or not bearer_matches(authorization, self.peer_bearer):
            return Refusal.BAD_CREDENTIAL
        return Principal(PrincipalKind.PEER, "peer", None)

    def _session(self, key: str) -> Principal | Refusal:
        session = self.sessions.lookup(key, self.clock())
        if session is None:
            return Refusal.SESSION_ENDED
        user = self.users.get(session.user)
        if user is None:  # removed while logged in: the login ends with it
            self.sessions.end(key)
            return Refusal.SESSION_ENDED
        return Principal(PrincipalKind.SESSION, user.name, user.role, session_id=key)

    def still_valid(self, principal: Principal, authorization: str | None) -> bool:
        """For long streams: has the credential been revoked, logged out or expired since?"""
        if principal.kind is PrincipalKind.PEER:
            return True
        if principal.kind is PrincipalKind.TOKEN:
            value = (authorization or "").partition(" ")[2].strip()
            return self.tokens.check(value) is not None
        key = principal.session_id
        return (
            key is not None
            and self.sessions.alive(key, self.clock())
            and self.users.get(principal.name) is not None
        )

    def csrf_token(self, principal: Principal) -> str | None:
        if principal.session_id is None:
            return None
        session = self.sessions.lookup(principal.session_id, self.clock(), touch=False)
        return None if session is None else session.csrf

    # ---- refusals ----

    def refused(self, reason: Refusal, method: str, path: str, client: str) -> None:
        """Count a refusal and log it, at most one line per reason every few seconds."""
        self.refusals[reason] += 1
        now = self.clock()
        if now - self._logged_at.get(reason, float("-inf")) < REFUSAL_LOG_EVERY_S:
            self._suppressed[reason] += 1
            return
        more = self._suppressed.pop(reason, 0)
        self._logged_at[reason] = now
        log.warning(
            "refused %s %s from %s: %s%s",
            method,
            path,
            client,
            reason.value,
            f" (and {more} more since the last report)" if more else "",
        )
