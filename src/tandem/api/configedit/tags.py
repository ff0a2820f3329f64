"""The tag routes, and a group's tags as CSV (export, and import replacing them all)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tandem.api.configedit.editor import NotMaster
from tandem.api.configedit.models import (
    Changed,
    CsvProblemOut,
    CsvProblems,
    Item,
    TagList,
    version_out,
)
from tandem.api.configedit.shared import (
    REFUSALS,
    TAG,
    TAGS,
    JsonObject,
    Routes,
    find,
    protocol_of,
    refused,
    who,
)
from tandem.config.edit import Edit, EditError, EditInvalid, EditKind, FieldProblem, Scope
from tandem.config.tagcsv import (
    CsvInvalid,
    CsvProblem,
    CsvRow,
    export_csv,
    parse_csv,
    problems_by_line,
)
from tandem.security.redact import redact


def install_tags(r: Routes) -> None:
    """List and add a group's tags."""
    app = r.app

    @app.get(TAGS, response_model=TagList, responses=REFUSALS, dependencies=r.view)
    async def list_tags(device: str, group: str) -> Any:
        def answer(data: dict[str, Any]) -> TagList:
            found_device = find(data, device)
            found = find(data, device, group)
            tags = [redact(t) for t in found.get("tags") or [] if isinstance(t, dict)]
            return TagList(
                device=device, group=group, protocol=protocol_of(found_device), tags=tags
            )

        return await r.read(answer)

    @app.post(TAGS, response_model=Changed, responses=REFUSALS, dependencies=r.admin)
    async def add_tag(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await r.changed(
            Edit(EditKind.ADD, scope, body),
            request,
            f"add tag {device}/{group}/{body.get('name')}",
        )


def install_tags_csv(r: Routes) -> None:
    """A group's tags as CSV: exported (secrets redacted), or imported replacing them all."""
    app = r.app

    @app.get(f"{TAGS}.csv", response_class=PlainTextResponse, dependencies=r.view)
    async def export_tags(device: str, group: str) -> Any:
        def answer(data: dict[str, Any]) -> Any:
            protocol = protocol_of(find(data, device))
            tags = find(data, device, group).get("tags") or []
            text = export_csv(protocol, [redact(t) for t in tags if isinstance(t, dict)])
            return PlainTextResponse(
                text,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{device}-{group}.csv"'},
            )

        return await r.read(answer)

    @app.put(
        f"{TAGS}.csv",
        response_model=Changed,
        responses={**REFUSALS, 422: {"model": CsvProblems, "description": "bad CSV lines"}},
        dependencies=r.admin,
        openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def import_tags(device: str, group: str, request: Request) -> Any:
        return await import_csv(r, device, group, request)


async def import_csv(r: Routes, device: str, group: str, request: Request) -> Any:
    """The group's tags replaced by the CSV's rows; bad rows answered by line and column."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _csv_problems([CsvProblem(0, "", "the CSV is not UTF-8")])

    def parse(data: dict[str, Any]) -> list[CsvRow]:
        find(data, device, group)
        return parse_csv(protocol_of(find(data, device)), text)

    try:
        data = await r.editor.data()
        rows = await asyncio.to_thread(parse, data)
    except EditError as exc:
        return refused(exc)
    except CsvInvalid as exc:
        return _csv_problems(exc.problems)
    scope = Scope.of(device, group)
    tags = [row.tag for row in rows]
    try:
        meta, _ = await r.editor.change(
            Edit(EditKind.REPLACE_CHILDREN, scope, tags),
            who(request),
            f"import {len(tags)} tags into {device}/{group} (CSV)",
            show=False,
        )
    except (EditError, NotMaster) as exc:
        return refused(exc)
    except EditInvalid as exc:
        lines = [row.line for row in rows]
        return _csv_problems(_csv_lines(lines, exc.problems))
    return Changed(version=version_out(meta))


def install_tag(r: Routes) -> None:
    """Read, replace, delete and duplicate one tag."""
    app, admin = r.app, r.admin

    @app.get(TAG, response_model=Item, responses=REFUSALS, dependencies=r.view)
    async def get_tag(device: str, group: str, tag: str) -> Any:
        return await r.read(lambda data: Item(item=redact(find(data, device, group, tag))))

    @app.put(TAG, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def put_tag(device: str, group: str, tag: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group, tag)
        return await r.changed(
            Edit(EditKind.REPLACE, scope, body), request, f"edit tag {device}/{group}/{tag}"
        )

    @app.delete(TAG, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def delete_tag(device: str, group: str, tag: str, request: Request) -> Any:
        scope = Scope.of(device, group, tag)
        return await r.changed(
            Edit(EditKind.DELETE, scope),
            request,
            f"delete tag {device}/{group}/{tag}",
            show=False,
        )

    @app.post(f"{TAG}/duplicate", response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def duplicate_tag(
        device: str, group: str, tag: str, request: Request, body: JsonObject
    ) -> Any:
        scope = Scope.of(device, group, tag)
        return await r.changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate tag {device}/{group}/{tag} as {body.get('name')}",
        )


def _csv_problems(problems: list[CsvProblem]) -> JSONResponse:
    body = CsvProblems(problems=[CsvProblemOut(**asdict(p)) for p in problems])
    return JSONResponse(status_code=422, content=body.model_dump())


def _csv_lines(lines: list[int], problems: list[FieldProblem]) -> list[CsvProblem]:
    """Problems of the imported tag list (fields like ``[3].address``) as CSV lines/columns."""
    pairs: list[tuple[list[str | int], str]] = []
    for p in problems:
        m = re.match(r"^\[(\d+)\]\.?(.*)$", p.field)
        if m is None:
            pairs.append(([p.path or p.field], p.message))
        else:
            pairs.append(([int(m.group(1)), *([m.group(2)] if m.group(2) else [])], p.message))
    return problems_by_line(lines, pairs)
