"""The group routes, and read now (one read of a group through the running poller)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import HTTPException, Request

from tandem.api.auth import needs
from tandem.api.configedit.models import Changed, GroupList, Item, ReadNow
from tandem.api.configedit.shared import (
    GROUP,
    GROUPS,
    REFUSALS,
    JsonObject,
    Routes,
    find,
    protocol_of,
    refused,
)
from tandem.config.edit import Edit, EditError, EditKind, Scope
from tandem.security.redact import redact
from tandem.security.roles import Access


def install_groups(r: Routes) -> None:
    """List, add, read, replace and delete a device's groups."""
    app, view, admin = r.app, r.view, r.admin

    @app.get(GROUPS, response_model=GroupList, responses=REFUSALS, dependencies=view)
    async def list_groups(device: str) -> Any:
        def answer(data: dict[str, Any]) -> GroupList:
            found = find(data, device)
            groups = [redact(g) for g in found.get("groups") or [] if isinstance(g, dict)]
            return GroupList(device=device, protocol=protocol_of(found), groups=groups)

        return await r.read(answer)

    @app.post(GROUPS, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def add_group(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await r.changed(
            Edit(EditKind.ADD, scope, body), request, f"add group {device}/{body.get('name')}"
        )

    @app.get(GROUP, response_model=Item, responses=REFUSALS, dependencies=view)
    async def get_group(device: str, group: str) -> Any:
        return await r.read(lambda data: Item(item=redact(find(data, device, group))))

    @app.put(GROUP, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def put_group(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await r.changed(
            Edit(EditKind.REPLACE, scope, body), request, f"edit group {device}/{group}"
        )

    @app.delete(GROUP, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def delete_group(device: str, group: str, request: Request) -> Any:
        scope = Scope.of(device, group)
        return await r.changed(
            Edit(EditKind.DELETE, scope), request, f"delete group {device}/{group}", show=False
        )


def install_group_actions(r: Routes) -> None:
    """Duplicate a group; read it now (an operator may)."""
    app, editor = r.app, r.editor

    @app.post(
        f"{GROUP}/duplicate", response_model=Changed, responses=REFUSALS, dependencies=r.admin
    )
    async def duplicate_group(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await r.changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate group {device}/{group} as {body.get('name')}",
        )

    @app.post(
        f"{GROUP}/read",
        response_model=ReadNow,
        responses=REFUSALS,
        dependencies=[needs(Access.OPERATOR)],
    )
    async def read_now(device: str, group: str) -> Any:
        if editor.reader is None:
            raise HTTPException(501, "read now is not available on this node")
        try:
            result = await editor.reader.read_now(device, group)
        except EditError as exc:
            return refused(exc)
        return ReadNow(device=device, group=group, **asdict(result))
