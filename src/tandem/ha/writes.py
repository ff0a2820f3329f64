"""Writes in a pair: only the active master under the highest term writes, and the peer hears
of every intent before its bytes go out (and of the result after), over the peer link.

The backup keeps what it hears in its own intent store, so after a takeover a retried uuid is
answered from it (the recorded result, or outcome unknown for an intent without one) and
never executed a second time. The peer refuses an intent while it is the master itself or
holds a higher term: a master that was frozen (SIGSTOP) or cut off and has not noticed yet
learns it there, before it writes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.ha.types import Phase
from tandem.writes.codes import WriteCode
from tandem.writes.requests import Uuid
from tandem.writes.service import Replication
from tandem.writes.store import IntentStoreError

if TYPE_CHECKING:
    from tandem.ha.hubside import HubSide

log = logging.getLogger(__name__)

# How long a master waits for the peer to confirm an intent before giving up (not written).
REPLICATE_S = 1.0


class IntentMessage(BaseModel):
    """One intent (result None) or result, master to peer; authenticated, still checked."""

    model_config = ConfigDict(extra="forbid")

    uuid: Uuid
    term: Annotated[int, Field(ge=0, le=2**63 - 1)]
    origin: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    result: WriteCode | None = None
    withdrawn: bool = False  # never sent: forget the intent, the uuid may run again


class PairAuthority:
    """The write Authority of one node of a pair (see tandem.writes.service)."""

    def __init__(self, side: HubSide) -> None:
        self._side = side

    def may_write(self) -> bool:
        side = self._side
        snap = side.snapshot
        return (
            side.gate.open()
            and snap is not None
            and snap.phase is Phase.ACTIVE
            and snap.term >= snap.highest_term
            and side.gate.term == snap.term
        )

    def answers_requests(self) -> bool:
        return self.may_write()

    def term(self) -> int:
        return self._side.gate.term

    def highest_term(self) -> int:
        snap = self._side.snapshot
        return snap.highest_term if snap is not None else 0

    def master_hint(self) -> str | None:
        snap = self._side.snapshot
        if snap is None or not snap.peer_fresh or snap.peer is None:
            return None
        return self._side.ha.peer_url if snap.peer.role == "MASTER" else None

    def peer_expected(self) -> bool:
        """The peer must confirm while its state stream is up; a peer whose stream broke
        (a killed node resets the connection at once) cannot take the intent anyway."""
        snap = self._side.snapshot
        return snap is not None and snap.peer_fresh and self._side.peer.connected

    async def replicate(
        self, uuid: str, term: int, origin: str, result: WriteCode | None
    ) -> Replication:
        body = IntentMessage(uuid=uuid, term=term, origin=origin, result=result)
        try:
            answer = await self._side.peer.post(
                "/writes", body.model_dump(mode="json"), timeout=REPLICATE_S
            )
        except Exception as exc:  # httpx, OSError, a body that is not JSON: all "unreachable"
            log.warning("write %s: peer did not confirm: %s", uuid, exc or type(exc).__name__)
            return Replication.UNREACHABLE
        return Replication.CONFIRMED if answer.get("accepted") is True else Replication.REJECTED

    async def withdraw(self, uuid: str, term: int, origin: str) -> None:
        body = IntentMessage(uuid=uuid, term=term, origin=origin, withdrawn=True)
        try:
            await self._side.peer.post("/writes", body.model_dump(mode="json"), timeout=REPLICATE_S)
        except Exception as exc:  # the peer keeps a bare intent: it would answer 4003
            log.info("write %s: withdrawal not delivered: %s", uuid, exc or type(exc).__name__)


def intent_routes(side: HubSide, router: APIRouter, auth: Any) -> None:
    """POST /api/v1/peer/writes: the master's intents and results, into our store."""

    @router.post("/writes")
    async def writes(request: Request, authorization: str | None = Header(default=None)) -> Any:
        auth(authorization)  # before the body is read
        try:
            message = IntentMessage.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, "writes: not an IntentMessage") from exc
        try:
            accepted = side.hub.writes.merge_remote(
                message.uuid, message.term, message.origin, message.result, message.withdrawn
            )
        except IntentStoreError as exc:  # the master hears "not confirmed" and sends nothing
            raise HTTPException(503, "writes: intents cannot be stored here") from exc
        if not accepted:
            log.warning(
                "refused write intent %s of %s (term %s)",
                message.uuid,
                message.origin,
                message.term,
            )
        return {"accepted": accepted}
