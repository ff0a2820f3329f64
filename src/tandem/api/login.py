"""Login, logout and "who am I" for the dashboard; the login page itself."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.api.auth import API, REFUSAL_DETAIL, Refusal, Security, needs, principal_of
from tandem.security.roles import Access, Principal, PrincipalKind
from tandem.security.users import MAX_PASSWORD, PASSWORD_CHECKS

log = logging.getLogger(__name__)


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class SessionInfo(BaseModel):
    user: str
    role: str | None
    kind: str
    csrf_token: str | None = None
    idle_timeout_s: float | None = None


def _refusal(reason: Refusal, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(
        401 if reason is Refusal.LOGIN_FAILED else 429,
        REFUSAL_DETAIL[reason],
        headers=headers,
    )


def _parse(body: bytes, content_type: str) -> LoginRequest:
    # Only JSON: a cross-site form post cannot send it without a CORS preflight.
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the login as application/json")
    try:
        return LoginRequest.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, "expected {username, password}") from exc


def session_info(security: Security, principal: Principal) -> SessionInfo:
    return SessionInfo(
        user=principal.name,
        role=principal.role.value if principal.role else None,
        kind=principal.kind.value,
        csrf_token=security.csrf_token(principal),
        idle_timeout_s=(
            security.sessions.idle_s if principal.kind is PrincipalKind.SESSION else None
        ),
    )


async def log_in(request: Request, security: Security, checking: asyncio.Semaphore) -> JSONResponse:
    """POST /api/v1/login: throttle, check the password in a worker thread, open a session."""
    form = _parse(await request.body(), request.headers.get("content-type", ""))
    client = request.client.host if request.client else "?"
    keys = (f"user:{form.username}", f"addr:{client}")
    wait = max(security.throttle.wait_s(k, security.clock()) for k in keys)
    if wait > 0:
        security.refused(Refusal.LOGIN_THROTTLED, "POST", f"{API}/login", client)
        raise _refusal(Refusal.LOGIN_THROTTLED, {"Retry-After": str(math.ceil(wait))})
    async with checking:
        user = await asyncio.get_running_loop().run_in_executor(
            PASSWORD_CHECKS, security.users.verify, form.username, form.password
        )
    if user is None:
        for key in keys:
            security.throttle.failed(key, security.clock())
        security.refused(Refusal.LOGIN_FAILED, "POST", f"{API}/login", client)
        raise _refusal(Refusal.LOGIN_FAILED)
    for key in keys:
        security.throttle.succeeded(key)
    previous = principal_of(request.scope)
    if previous is not None and previous.session_id is not None:
        security.sessions.end(previous.session_id)  # a fresh session id on every login
    cookie, session = security.sessions.create(user.name, user.role, security.clock())
    log.info("user %s (%s) logged in from %s", user.name, user.role.value, client)
    body = SessionInfo(
        user=user.name,
        role=user.role.value,
        kind=PrincipalKind.SESSION.value,
        csrf_token=session.csrf,
        idle_timeout_s=security.sessions.idle_s,
    )
    response = JSONResponse(body.model_dump())
    response.set_cookie(
        security.cookie_name,
        cookie,
        httponly=True,
        samesite="strict",
        secure=security.tls,
        path="/",
    )
    return response


def add_login_routes(app: FastAPI, security: Security, static_dir: Path) -> None:
    # One password check at a time: argon2id takes 64 MiB and tens of ms of CPU each, and the
    # node's VRRP timing shares those cores.
    checking = asyncio.Semaphore(1)

    @app.get("/login", include_in_schema=False, dependencies=[needs(Access.PUBLIC)])
    async def login_page() -> FileResponse:
        return FileResponse(static_dir / "login.html", headers={"Cache-Control": "no-cache"})

    @app.post(f"{API}/login", response_model=SessionInfo, dependencies=[needs(Access.PUBLIC)])
    async def login(request: Request) -> JSONResponse:
        return await log_in(request, security, checking)

    @app.post(f"{API}/logout", dependencies=[needs(Access.VIEWER)])
    async def logout(request: Request) -> JSONResponse:
        principal = principal_of(request.scope)
        if principal is not None and principal.session_id is not None:
            security.sessions.end(principal.session_id)
            log.info("user %s logged out", principal.name)
        response = JSONResponse({"ok": True})
        response.delete_cookie(
            security.cookie_name, path="/", secure=security.tls, httponly=True, samesite="strict"
        )
        return response

    @app.get(f"{API}/session", response_model=SessionInfo, dependencies=[needs(Access.VIEWER)])
    async def session(request: Request) -> Any:
        principal = principal_of(request.scope)
        assert principal is not None  # needs(VIEWER) made sure
        return session_info(security, principal)
