"""The peer link: each node streams its HA state to the other over HTTP on the API port.

Every request carries a bearer derived from the cluster secret (`peer_bearer`, HKDF: the
secret itself never travels) and is rejected without it, before its body is read. Over https
the client verifies the peer's certificate (a CA or a pinned fingerprint, security/tls.py).
The stream is server-sent events, one state per advert interval, so the backup
always knows the master's term and watermarks; a handover is one authenticated POST.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.api.auth import needs
from tandem.ha.types import HandoverOffer, PeerView
from tandem.security.keys import bearer_matches, peer_bearer
from tandem.security.roles import Access
from tandem.security.tls import PeerTls

log = logging.getLogger(__name__)

PEER_PREFIX = "/api/v1/peer"
# Peer input is authenticated but still checked: numbers in range, names bounded.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Marks = dict[Annotated[str, Field(max_length=300)], Count]


class PeerState(BaseModel):
    """One node's HA state as the other node sees it."""

    model_config = ConfigDict(extra="forbid")

    node: Name
    role: Annotated[str, Field(max_length=32)]
    coordinator_state: Annotated[str, Field(max_length=32)]
    publishing: bool
    term: Count
    priority: Annotated[int, Field(ge=0, le=255)]
    base_priority: Annotated[int, Field(ge=0, le=255)]
    standby: Literal["hot", "warm", "cold"]
    watermarks: Marks
    buffer_from: Marks
    healthy: bool
    started_at: float
    config_version: Count = 0
    config_sha: Annotated[str, Field(max_length=64)] = ""

    def view(self, received_at: float) -> PeerView:
        return PeerView(**self.model_dump(), received_at=received_at)


class HandoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_node: Name
    term: Count
    watermarks: Marks
    manual: bool = False
    reason: Annotated[str, Field(max_length=500)] = ""

    @classmethod
    def of(cls, offer: HandoverOffer) -> HandoverRequest:
        return cls(
            from_node=offer.from_node,
            term=offer.term,
            watermarks=dict(offer.watermarks),
            manual=offer.manual,
            reason=offer.reason,
        )

    def offer(self) -> HandoverOffer:
        return HandoverOffer(
            self.from_node, self.term, dict(self.watermarks), self.manual, self.reason
        )


class HandoverAnswer(BaseModel):
    accepted: bool
    reason: str
    refused: str | None = None  # the typed reason (ha.types.Refused) when not accepted


class StateBell:
    """Wakes every state stream at once, so a change goes out before the next interval."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        """Until the next ring, or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def peer_router(
    secret: str,
    state: Callable[[], PeerState],
    interval: float,
    on_handover: Callable[[HandoverRequest], Awaitable[HandoverAnswer]],
    extra: Callable[[APIRouter, Callable[[str | None], None]], None] | None = None,
    bell: StateBell | None = None,
) -> APIRouter:
    """Routes under /api/v1/peer; `extra` lets config sync add its own, with the same auth."""
    router = APIRouter(prefix=PEER_PREFIX, dependencies=[needs(Access.PEER)])
    bearer = peer_bearer(secret)

    def auth(authorization: str | None) -> None:
        # Checked here too, not only by the API's middleware: these routes move the role.
        if not bearer_matches(authorization, bearer):
            raise HTTPException(status_code=401, detail="peer link: missing or wrong secret")

    @router.get("/state")
    async def get_state(authorization: str | None = Header(default=None)) -> PeerState:
        auth(authorization)
        return state()

    @router.get("/stream", dependencies=[needs(Access.PEER, stream=True)])
    async def stream(
        request: Request, authorization: str | None = Header(default=None)
    ) -> StreamingResponse:
        auth(authorization)

        streams = getattr(request.app.state, "streams", None)

        async def events() -> AsyncIterator[bytes]:
            # Ends on server shutdown too (the app's live streams are closing), so a stopping
            # node does not wait out uvicorn's graceful timeout for its peer's connection.
            while not await request.is_disconnected():
                if streams is not None and streams.closing:
                    return
                yield f"data: {state().model_dump_json()}\n\n".encode()
                if bell is None:
                    await asyncio.sleep(interval)
                else:
                    await bell.wait(interval)

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.post("/handover")
    async def handover(
        request: Request, authorization: str | None = Header(default=None)
    ) -> HandoverAnswer:
        auth(authorization)  # before the body is even read
        try:
            body = HandoverRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, "handover: not a HandoverRequest") from exc
        return await on_handover(body)

    if extra is not None:
        extra(router, auth)
    return router


class PeerClient:
    """Follows the peer's state stream (reconnecting forever) and sends it handovers."""

    def __init__(
        self,
        base_url: str,
        secret: str,
        on_state: Callable[[PeerState], None],
        *,
        retry: float = 0.2,
        tls: PeerTls | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {peer_bearer(secret)}"}
        self._tls = tls
        self._on_state = on_state
        self._retry = retry
        self.connected = False
        self.last_error: str | None = None
        self.states_received = 0
        self.rejected = 0  # states that did not parse: a version mismatch or a wrong peer
        self._http: httpx.AsyncClient | None = None
        self._client()  # built now, at start-up, not in the middle of a handover

    def _client(self) -> httpx.AsyncClient:
        """One client for the node's life: building one (its TLS context) takes tens of ms
        of CPU, which would stall the event loop, and the VRRP adverts with it."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(2.0, read=5.0),
                headers=self._headers,
                verify=self._tls.context if self._tls is not None else True,
            )
        return self._http

    async def _verified(self) -> httpx.AsyncClient:
        """The client, once a pinned peer has shown its pinned certificate (else raises)."""
        if self._tls is not None and self.base_url.startswith("https://"):
            await self._tls.ensure_pinned(self.base_url)
        return self._client()

    async def run(self) -> None:
        client = self._client()
        try:
            while True:
                try:
                    client = await self._verified()
                    await self._follow(client)
                except (httpx.HTTPError, OSError) as exc:
                    if self.connected or self.last_error != str(exc):
                        log.info("peer link to %s: %s", self.base_url, exc or type(exc).__name__)
                    self.last_error = str(exc) or type(exc).__name__
                finally:
                    self.connected = False
                await asyncio.sleep(self._retry)
        finally:
            await client.aclose()
            self._http = None

    async def _follow(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"{self.base_url}{PEER_PREFIX}/stream") as response:
            if response.status_code == 401:
                raise httpx.HTTPError("peer rejected our secret (401)")
            response.raise_for_status()
            self.connected = True
            self.last_error = None
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                try:
                    state = PeerState.model_validate_json(line[6:])
                except ValueError as exc:
                    self.rejected += 1
                    log.warning("peer link: unreadable state: %s", exc)
                    continue
                self.states_received += 1
                self._on_state(state)

    async def post(self, path: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        client = await self._verified()
        response = await client.post(
            f"{self.base_url}{PEER_PREFIX}{path}", json=body, timeout=timeout
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        client = await self._verified()
        return await client.get(f"{self.base_url}{PEER_PREFIX}{path}", timeout=timeout)

    async def handover(self, request: HandoverRequest) -> HandoverAnswer:
        try:
            data = await self.post("/handover", request.model_dump())
        except (httpx.HTTPError, OSError, json.JSONDecodeError) as exc:
            return HandoverAnswer(accepted=False, reason=f"peer unreachable: {exc}")
        return HandoverAnswer.model_validate(data)
