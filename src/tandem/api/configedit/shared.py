"""What the config editing routes share: their paths, refusals as answers, and the two ways
a route goes through the editor (a read of the config data, or a change)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from tandem.api.auth import principal_of
from tandem.api.configedit.editor import ConfigEditor, NotMaster
from tandem.api.configedit.models import (
    Changed,
    MasterOut,
    ProblemOut,
    Problems,
    Refused,
    version_out,
)
from tandem.config import edit
from tandem.config.edit import Edit, EditError, EditFailure, EditInvalid, FieldProblem, Scope

API = "/api/v1"
DEVICES = f"{API}/devices"
DEVICE = f"{DEVICES}/{{device}}"
GROUPS = f"{DEVICE}/groups"
GROUP = f"{GROUPS}/{{group}}"
TAGS = f"{GROUP}/tags"
TAG = f"{TAGS}/{{tag}}"
VERSIONS = f"{API}/config/versions"

REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"model": Refused, "description": "no such item"},
    409: {"model": Refused, "description": "the item exists, or this node is a backup"},
    422: {"model": Problems, "description": "the config would not validate"},
}

JsonObject = Annotated[dict[str, Any], Body()]


def who(request: Request) -> str:
    principal = principal_of(request.scope)
    return principal.name if principal is not None else "?"


def problems(found: list[FieldProblem]) -> JSONResponse:
    body = Problems(problems=[ProblemOut(**asdict(p)) for p in found])
    return JSONResponse(status_code=422, content=body.model_dump())


def refused(exc: EditError | NotMaster) -> JSONResponse:
    if isinstance(exc, NotMaster):
        master = MasterOut(node=exc.master.node, url=exc.master.url)
        body = Refused(reason="backup", message=str(exc), master=master)
        return JSONResponse(status_code=409, content=body.model_dump())
    status = {
        EditFailure.NOT_FOUND: 404,
        EditFailure.EXISTS: 409,
        EditFailure.UNSUPPORTED: 501,
    }.get(exc.reason, 422)
    return JSONResponse(
        status_code=status, content=Refused(reason=exc.reason.value, message=str(exc)).model_dump()
    )


def find(data: dict[str, Any], *names: str) -> dict[str, Any]:
    node: Any = data
    for level, name in enumerate(names):
        items = node.get(edit.LEVELS[level]) if isinstance(node, dict) else None
        found = next(
            (i for i in items or [] if isinstance(i, dict) and i.get("name") == name), None
        )
        if found is None:
            raise EditError(EditFailure.NOT_FOUND, f"no {Scope(names[: level + 1]).label}")
        node = found
    return dict(node)


def protocol_of(device: dict[str, Any]) -> str:
    protocol = device.get("protocol", "modbus-tcp")
    return protocol if isinstance(protocol, str) else "modbus-tcp"


@dataclass(frozen=True, slots=True)
class Routes:
    """What each group of routes is registered with: the app, the editor, who may call."""

    app: FastAPI
    editor: ConfigEditor
    view: list[Any]  # dependencies of a read (viewer)
    admin: list[Any]  # dependencies of a change (admin, with the config body limit)

    async def changed(self, e: Edit, request: Request, action: str, show: bool = True) -> Any:
        """The edit carried out: the version and item, or the refusal or problems as answers."""
        try:
            meta, item = await self.editor.change(e, who(request), action, show)
        except (EditError, NotMaster) as exc:
            return refused(exc)
        except EditInvalid as exc:
            return problems(exc.problems)
        return Changed(version=version_out(meta), item=item)

    async def read(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        """`fn` on the config data (parsed off the hub's loop); a missing item is a 404."""
        try:
            return fn(await self.editor.data())
        except EditError as exc:
            return refused(exc)
