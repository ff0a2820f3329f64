"""POST /api/v1/write: one tag or a batch, operator role (and CSRF for cookie sessions)."""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tandem.api.auth import needs
from tandem.security.roles import Access
from tandem.writes.codes import HTTP_STATUS, WriteCode
from tandem.writes.requests import WriteBody
from tandem.writes.service import WriteService


def write_router(service: WriteService) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/write/tags", dependencies=[needs(Access.VIEWER)])
    async def writable() -> dict[str, list[str]]:
        """Keys ("device/group/tag") of the tags that take writes: the dashboard's buttons."""
        return {"tags": service.writable_keys()}

    @router.post("/api/v1/write", dependencies=[needs(Access.OPERATOR)])
    async def write(request: Request) -> JSONResponse:
        """The MQTT write body; ``uuid`` may be left out (one is made up and returned)."""
        try:
            raw: Any = json.loads(await request.body())
        except (ValueError, RecursionError):
            return _bad("the body is not JSON")
        if not isinstance(raw, dict):
            return _bad("the body must be an object")
        raw.setdefault("uuid", str(uuidlib.uuid4()))
        try:
            body = WriteBody.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _bad(f"{where}: {first['msg']}" if where else first["msg"])
        answer = await service.submit(body)
        return JSONResponse(answer.rest(), status_code=HTTP_STATUS[answer.code])

    return router


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": int(WriteCode.BAD_REQUEST), "message": message}, 400)
