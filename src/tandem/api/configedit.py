"""REST for editing the config: devices, groups, tags, tag CSV, versions and restore.

Every change edits the YAML file (comments kept), is validated by the loader's own rules, goes
live through the node's one apply path (config sync on an HA node, `Hub.reconfigure` on a single
node) and is recorded as a version. A backup that follows a publishing master refuses changes
with 409 naming the master: the master's config reaches it through config sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, TypeAdapter
from ruamel.yaml.comments import CommentedMap

from tandem.api.auth import needs, principal_of
from tandem.config import edit
from tandem.config.edit import (
    Edit,
    EditError,
    EditFailure,
    EditInvalid,
    EditKind,
    FieldProblem,
    Performed,
    Scope,
)
from tandem.config.editworker import load_off_loop, perform_off_loop
from tandem.config.hub import (
    DEVICE_ADAPTER,
    DeviceConfig,
    GroupConfig,
    OpcUaGroupConfig,
    OpcUaTagConfig,
    TagConfig,
    TandemConfig,
    load_config_text,
)
from tandem.config.offload import LARGE_TEXT, parse_config_text
from tandem.config.tagcsv import (
    CsvInvalid,
    CsvProblem,
    CsvRow,
    export_csv,
    parse_csv,
    problems_by_line,
)
from tandem.config.versions import VersionMeta, VersionStore
from tandem.errors import ConfigError, ConfigProblem, TandemError
from tandem.files import write_atomic
from tandem.ha.configstamp import (
    config_sha,
    identity_problem,
    local_fields_changed,
    shared_sections,
    stat_key,
    with_shared,
)
from tandem.security.redact import REDACTED, is_secret_name, redact
from tandem.security.roles import Access

log = logging.getLogger(__name__)

API = "/api/v1"
DEVICES = f"{API}/devices"
VERSIONS = f"{API}/config/versions"


# ---- what the editor needs from the node --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Master:
    """The node that takes changes, when this one does not."""

    node: str | None
    url: str


class ConfigTarget(Protocol):
    """The node's config file and its one way of applying a new one."""

    config_path: Path

    def running(self) -> TandemConfig: ...

    def master(self) -> Master | None:
        """None when this node takes changes; else the master that does."""

    def synced(self) -> TandemConfig | None:
        """The running config when its shared sections came from the master, not the file."""

    def digest(self) -> str:
        """A digest of the running shared config: a page polls it to see a change."""

    async def write(self, text: str) -> None:
        """Validate, write atomically and apply; ConfigError if it must not be."""


class DeviceReader(Protocol):
    async def read_now(self, device: str, group: str) -> ReadResult: ...


@dataclass(frozen=True, slots=True)
class ReadResult:
    values: dict[str, Any]
    errors: dict[str, int]
    latency_ms: float


class SingleTarget:
    """A node without a pair: the file is written and the hub reconfigured directly."""

    def __init__(self, config_path: Path, hub: Any) -> None:
        self.config_path = config_path
        self._hub = hub
        self._digest: tuple[TandemConfig, str] | None = None

    def running(self) -> TandemConfig:
        cfg: TandemConfig = self._hub.config
        return cfg

    def master(self) -> Master | None:
        return None

    def synced(self) -> TandemConfig | None:
        return None

    def digest(self) -> str:
        cfg = self.running()
        if self._digest is None or self._digest[0] is not cfg:
            self._digest = (cfg, config_sha(cfg))
        return self._digest[1]

    async def write(self, text: str) -> None:
        file = str(self.config_path)
        new = await parse_config_text(text, file)
        current = self.running()
        # Dumps and checks of a whole config take a while at 10,000 tags: off the hub's loop.
        merged = await asyncio.to_thread(self._merged, current, new, file)
        # Through a symlink to the real file: replacing the link would cut it off.
        await asyncio.to_thread(write_atomic, self.config_path.resolve(), text)
        await self._hub.reconfigure(merged)
        digest = await asyncio.to_thread(self.digest)
        self._hub.add_timeline("config", "config applied from the API", {"sha": digest})

    @staticmethod
    def _merged(current: TandemConfig, new: TandemConfig, file: str) -> TandemConfig:
        """The running config with the new shared sections; node-local ones apply at restart."""
        problem = identity_problem(current, new, file)
        if problem is None and new.data_dir != current.data_dir:
            problem = ConfigProblem(file, None, "data_dir", "data_dir cannot change while running")
        if problem is not None:
            raise ConfigError([problem])
        changed_local = local_fields_changed(current, new)
        if changed_local:
            log.warning("config: %s changed; node-local sections apply at restart", changed_local)
        return with_shared(current, shared_sections(new), file)


class HubReader:
    """Read now through the hub's running pollers."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    async def read_now(self, device: str, group: str) -> ReadResult:
        try:
            found = await self._hub.read_now(device, group)
        except NotImplementedError as exc:
            raise EditError(EditFailure.UNSUPPORTED, str(exc)) from exc
        if found is None:
            raise EditError(EditFailure.NOT_FOUND, f"no running {Scope.of(device, group).label}")
        values, errors, latency = found
        return ReadResult(values=dict(values), errors=dict(errors), latency_ms=round(latency, 2))


# ---- answers ------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MasterOut(_Out):
    node: str | None
    url: str


class EditorState(_Out):
    """Whether this node takes changes; on a backup, where the master is."""

    node: str
    writable: bool
    master: MasterOut | None = None
    version: int | None = None  # the newest version recorded on this node
    config: str  # digest of the running devices, mqtt and outbox: changes with any of them


class DeviceList(_Out):
    state: EditorState
    devices: list[dict[str, Any]]


class GroupList(_Out):
    device: str
    protocol: str
    groups: list[dict[str, Any]]


class TagList(_Out):
    device: str
    group: str
    protocol: str
    tags: list[dict[str, Any]]


class Item(_Out):
    item: dict[str, Any]


class VersionOut(_Out):
    id: int
    at: float
    who: str
    action: str
    sha: str
    lines_added: int
    lines_removed: int


class VersionDetail(VersionOut):
    diff: str
    text: str


class Changed(_Out):
    """A change that was applied: the version it made, and the item as it now is."""

    version: VersionOut
    item: dict[str, Any] | None = None


class ProblemOut(_Out):
    field: str
    path: str
    message: str


class Problems(_Out):
    problems: list[ProblemOut]


class CsvProblemOut(_Out):
    line: int
    column: str
    message: str


class CsvProblems(_Out):
    problems: list[CsvProblemOut]


class ReadNow(_Out):
    device: str
    group: str
    values: dict[str, Any]
    errors: dict[str, int]
    latency_ms: float


class PathCheck(_Out):
    endpoint: str
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


class ConnectionTest(_Out):
    device: str
    paths: list[PathCheck]


class Refused(_Out):
    reason: str
    message: str
    master: MasterOut | None = None


def _version_out(meta: VersionMeta) -> VersionOut:
    return VersionOut(**asdict(meta))


# Secret-named keys in YAML or JSON-style text: `password: x`, `"secret": "x"`.
_SECRET_VALUE = re.compile(
    r"""(?P<key>["']?(?P<name>[A-Za-z0-9_]+)["']?[ \t]*:[ \t]*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^,}\s#]+)"""
)


def redact_text(text: str) -> str:
    """The YAML text (or its diff) with the value of every secret-named key replaced."""

    def sub(m: re.Match[str]) -> str:
        if is_secret_name(m.group("name")):
            return f"{m.group('key')}{REDACTED}"
        return m.group(0)

    return _SECRET_VALUE.sub(sub, text)


# ---- the editor ---------------------------------------------------------------------------------


def short_sections(cfg: TandemConfig) -> dict[str, Any]:
    """The shared sections as a person would write them: without defaults, groups last."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    devices: list[dict[str, Any]] = []
    for device in cfg.devices:
        dumped = DEVICE_ADAPTER.dump_python(device, mode="json", exclude_defaults=True)
        groups = dumped.pop("groups", [])
        head = {"protocol": device.protocol} if device.protocol != "modbus-tcp" else {}
        devices.append({**head, **dumped, "groups": groups})
    return {"devices": devices, "mqtt": data.get("mqtt", {}), "outbox": data.get("outbox", {})}


class NotMaster(TandemError):
    def __init__(self, master: Master) -> None:
        super().__init__(f"this node is a backup: change the config on {master.node or master.url}")
        self.master = master


class ConfigEditor:
    """Edits in turn (one lock), each validated, applied and recorded as a version."""

    def __init__(self, target: ConfigTarget, reader: DeviceReader | None = None) -> None:
        self.target = target
        self.reader = reader
        self.versions = VersionStore(target.running().data_dir)
        self._lock = asyncio.Lock()
        self._doc: tuple[str, CommentedMap] | None = None  # the last change's text and document
        self._data: tuple[Any, dict[str, Any]] | None = None  # what the reads answer from

    def state(self) -> EditorState:
        master = self.target.master()
        return EditorState(
            node=self.target.running().node,
            writable=master is None,
            master=MasterOut(node=master.node, url=master.url) if master is not None else None,
            version=self.versions.latest_id(),
            config=self.target.digest(),
        )

    # ---- reading ----

    def _file_text(self) -> str:
        return self.target.config_path.read_text(encoding="utf-8")

    async def data(self) -> dict[str, Any]:
        """The config as the editor sees it: the file, with synced sections where they run.

        Parsed again only when the file (or the synced config) changed, and a large file in a
        worker process: libyaml holds the GIL, a 10,000-tag file would stall the hub's loop.
        """
        synced = self.target.synced()
        key = (stat_key(self.target.config_path), self.target.digest() if synced else None)
        if self._data is not None and self._data[0] == key:
            return self._data[1]
        text = await asyncio.to_thread(self._file_text)
        parsed = await load_off_loop(text)
        data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if synced is not None:
            data = {**data, **(await asyncio.to_thread(short_sections, synced))}
        self._data = (key, data)
        return data

    def base_text(self) -> str:
        """The text an edit starts from: the file, with synced sections put in when they run."""
        text = self._file_text()
        synced = self.target.synced()
        if synced is None:
            return text
        try:
            in_file: dict[str, Any] | None = shared_sections(load_config_text(text))
        except ConfigError:
            in_file = None
        doc = edit.load_doc(text)
        edit.with_sections(doc, shared_sections(synced), in_file, short_sections(synced))
        return edit.dump_doc(doc, text)

    # ---- changing ----

    def _perform_here(self, base: str, e: Edit) -> tuple[Performed, CommentedMap]:
        """A small file's edit, in a thread: the last change's document is reused while the
        file is still what that change wrote."""
        cached, self._doc = self._doc, None  # an edit changes the document in place
        return edit.perform(
            base, e, cached[1] if cached is not None and cached[0] == base else None
        )

    async def change(
        self, e: Edit, who: str, action: str, show: bool = True
    ) -> tuple[VersionMeta, dict[str, Any] | None]:
        """Carry out the edit, validate, apply, record: the version, and the edited item."""
        master = self.target.master()
        if master is not None:
            raise NotMaster(master)
        async with self._lock:
            base = await asyncio.to_thread(self.base_text)
            doc: CommentedMap | None = None
            if len(base) < LARGE_TEXT:
                done, doc = await asyncio.to_thread(self._perform_here, base, e)
            else:
                self._doc = None
                done = await perform_off_loop(base, e)
            meta = await self._write(done.text, base, who, action, done.hunks)
            self._doc = (done.text, doc) if doc is not None else None
            return meta, redact(done.item) if show and done.item is not None else None

    async def _write(
        self, text: str, base: str, who: str, action: str, hunks: str | None = None
    ) -> VersionMeta:
        try:
            await self.target.write(text)
        except ConfigError as exc:
            raise EditInvalid(edit.config_problems(exc)) from exc
        return await asyncio.to_thread(self._record, text, base, who, action, hunks)

    def _record(
        self, text: str, base: str, who: str, action: str, hunks: str | None
    ) -> VersionMeta:
        latest = self.versions.latest()
        if latest is None or latest.text != base:
            # The text this change started from (a first change, or the file was edited by
            # hand since), so "before the change" can be restored.
            self.versions.add(base, "file", "the config before the next change")
        # The edit's own diff (made off the loop) when it starts from the newest version.
        known = (base, hunks) if hunks is not None else None
        meta = self.versions.add(text, who, action, known=known)
        log.info("config version %s by %s: %s", meta.id, who, action)
        return meta

    async def record_put(self, text: str, who: str) -> None:
        """A whole config PUT elsewhere (PUT /api/v1/config) is a version too."""
        async with self._lock:
            latest = await asyncio.to_thread(self.versions.latest)
            if latest is None or latest.text != text:
                meta = await asyncio.to_thread(self.versions.add, text, who, "PUT /api/v1/config")
                log.info("config version %s by %s: PUT /api/v1/config", meta.id, who)

    async def restore(self, ident: int, who: str) -> VersionMeta:
        master = self.target.master()
        if master is not None:
            raise NotMaster(master)
        version = await asyncio.to_thread(self.versions.get, ident)
        if version is None:
            raise EditError(EditFailure.NOT_FOUND, f"no config version {ident}")
        async with self._lock:
            base = await asyncio.to_thread(self.base_text)
            # Checked by the apply, as any whole config is (in a worker process when large).
            return await self._write(version.text, base, who, f"restore of version {ident}")


# ---- routes -------------------------------------------------------------------------------------


def _who(request: Request) -> str:
    principal = principal_of(request.scope)
    return principal.name if principal is not None else "?"


def _problems(problems: list[FieldProblem]) -> JSONResponse:
    body = Problems(problems=[ProblemOut(**asdict(p)) for p in problems])
    return JSONResponse(status_code=422, content=body.model_dump())


def _csv_problems(problems: list[CsvProblem]) -> JSONResponse:
    body = CsvProblems(problems=[CsvProblemOut(**asdict(p)) for p in problems])
    return JSONResponse(status_code=422, content=body.model_dump())


def _refused(exc: EditError | NotMaster) -> JSONResponse:
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


def _find(data: dict[str, Any], *names: str) -> dict[str, Any]:
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


_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"model": Refused, "description": "no such item"},
    409: {"model": Refused, "description": "the item exists, or this node is a backup"},
    422: {"model": Problems, "description": "the config would not validate"},
}

JsonObject = Annotated[dict[str, Any], Body()]


def install(app: FastAPI, editor: ConfigEditor) -> None:
    """The config editing routes on the node's API (reads: viewer; changes: admin)."""
    security = getattr(app.state, "security", None)
    limit = security.limits.max_config_body if security is not None else None
    view = [needs(Access.VIEWER)]
    admin = [needs(Access.ADMIN, max_body=limit)]

    async def changed(e: Edit, request: Request, action: str, show: bool = True) -> Any:
        try:
            meta, item = await editor.change(e, _who(request), action, show)
        except (EditError, NotMaster) as exc:
            return _refused(exc)
        except EditInvalid as exc:
            return _problems(exc.problems)
        return Changed(version=_version_out(meta), item=item)

    async def read(fn: Callable[[dict[str, Any]], Any]) -> Any:
        """`fn` on the config data (parsed off the hub's loop); a missing item is a 404."""
        try:
            return fn(await editor.data())
        except EditError as exc:
            return _refused(exc)

    document_bodies(app)

    @app.get(f"{API}/config/editor", response_model=EditorState, dependencies=view)
    async def editor_state() -> EditorState:
        return editor.state()

    # -- devices --

    @app.get(DEVICES, response_model=DeviceList, dependencies=view)
    async def list_devices() -> DeviceList:
        data = await editor.data()
        devices = [redact(d) for d in data.get("devices") or [] if isinstance(d, dict)]
        return DeviceList(state=editor.state(), devices=devices)

    @app.post(DEVICES, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def add_device(request: Request, body: JsonObject) -> Any:
        name = body.get("name")
        return await changed(Edit(EditKind.ADD, Scope.of(), body), request, f"add device {name}")

    @app.get(f"{DEVICES}/{{device}}", response_model=Item, responses=_REFUSALS, dependencies=view)
    async def get_device(device: str) -> Any:
        return await read(lambda data: Item(item=redact(_find(data, device))))

    @app.put(
        f"{DEVICES}/{{device}}", response_model=Changed, responses=_REFUSALS, dependencies=admin
    )
    async def put_device(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await changed(Edit(EditKind.REPLACE, scope, body), request, f"edit device {device}")

    @app.delete(
        f"{DEVICES}/{{device}}", response_model=Changed, responses=_REFUSALS, dependencies=admin
    )
    async def delete_device(device: str, request: Request) -> Any:
        scope = Scope.of(device)
        return await changed(
            Edit(EditKind.DELETE, scope), request, f"delete device {device}", show=False
        )

    @app.post(
        f"{DEVICES}/{{device}}/duplicate",
        response_model=Changed,
        responses=_REFUSALS,
        dependencies=admin,
    )
    async def duplicate_device(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate device {device} as {body.get('name')}",
        )

    @app.post(
        f"{DEVICES}/{{device}}/test",
        response_model=ConnectionTest,
        responses=_REFUSALS,
        dependencies=[needs(Access.OPERATOR)],
    )
    async def test_connection(device: str) -> Any:
        try:
            found = _find(await editor.data(), device)
        except EditError as exc:
            return _refused(exc)
        return ConnectionTest(device=device, paths=await check_paths(found))

    # -- groups --

    groups_path = f"{DEVICES}/{{device}}/groups"

    @app.get(groups_path, response_model=GroupList, responses=_REFUSALS, dependencies=view)
    async def list_groups(device: str) -> Any:
        def answer(data: dict[str, Any]) -> GroupList:
            found = _find(data, device)
            groups = [redact(g) for g in found.get("groups") or [] if isinstance(g, dict)]
            return GroupList(device=device, protocol=_protocol(found), groups=groups)

        return await read(answer)

    @app.post(groups_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def add_group(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await changed(
            Edit(EditKind.ADD, scope, body), request, f"add group {device}/{body.get('name')}"
        )

    group_path = f"{groups_path}/{{group}}"

    @app.get(group_path, response_model=Item, responses=_REFUSALS, dependencies=view)
    async def get_group(device: str, group: str) -> Any:
        return await read(lambda data: Item(item=redact(_find(data, device, group))))

    @app.put(group_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def put_group(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await changed(
            Edit(EditKind.REPLACE, scope, body), request, f"edit group {device}/{group}"
        )

    @app.delete(group_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def delete_group(device: str, group: str, request: Request) -> Any:
        scope = Scope.of(device, group)
        return await changed(
            Edit(EditKind.DELETE, scope), request, f"delete group {device}/{group}", show=False
        )

    @app.post(
        f"{group_path}/duplicate", response_model=Changed, responses=_REFUSALS, dependencies=admin
    )
    async def duplicate_group(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate group {device}/{group} as {body.get('name')}",
        )

    @app.post(
        f"{group_path}/read",
        response_model=ReadNow,
        responses=_REFUSALS,
        dependencies=[needs(Access.OPERATOR)],
    )
    async def read_now(device: str, group: str) -> Any:
        if editor.reader is None:
            raise HTTPException(501, "read now is not available on this node")
        try:
            result = await editor.reader.read_now(device, group)
        except EditError as exc:
            return _refused(exc)
        return ReadNow(device=device, group=group, **asdict(result))

    # -- tags --

    tags_path = f"{group_path}/tags"

    @app.get(tags_path, response_model=TagList, responses=_REFUSALS, dependencies=view)
    async def list_tags(device: str, group: str) -> Any:
        def answer(data: dict[str, Any]) -> TagList:
            found_device = _find(data, device)
            found = _find(data, device, group)
            tags = [redact(t) for t in found.get("tags") or [] if isinstance(t, dict)]
            return TagList(device=device, group=group, protocol=_protocol(found_device), tags=tags)

        return await read(answer)

    @app.post(tags_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def add_tag(device: str, group: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group)
        return await changed(
            Edit(EditKind.ADD, scope, body),
            request,
            f"add tag {device}/{group}/{body.get('name')}",
        )

    @app.get(f"{tags_path}.csv", response_class=PlainTextResponse, dependencies=view)
    async def export_tags(device: str, group: str) -> Any:
        def answer(data: dict[str, Any]) -> Any:
            protocol = _protocol(_find(data, device))
            tags = _find(data, device, group).get("tags") or []
            text = export_csv(protocol, [redact(t) for t in tags if isinstance(t, dict)])
            return PlainTextResponse(
                text,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{device}-{group}.csv"'},
            )

        return await read(answer)

    @app.put(
        f"{tags_path}.csv",
        response_model=Changed,
        responses={**_REFUSALS, 422: {"model": CsvProblems, "description": "bad CSV lines"}},
        dependencies=admin,
        openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def import_tags(device: str, group: str, request: Request) -> Any:
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return _csv_problems([CsvProblem(0, "", "the CSV is not UTF-8")])

        def parse(data: dict[str, Any]) -> list[CsvRow]:
            _find(data, device, group)
            return parse_csv(_protocol(_find(data, device)), text)

        try:
            data = await editor.data()
            rows = await asyncio.to_thread(parse, data)
        except EditError as exc:
            return _refused(exc)
        except CsvInvalid as exc:
            return _csv_problems(exc.problems)
        scope = Scope.of(device, group)
        tags = [row.tag for row in rows]
        try:
            meta, _ = await editor.change(
                Edit(EditKind.REPLACE_CHILDREN, scope, tags),
                _who(request),
                f"import {len(tags)} tags into {device}/{group} (CSV)",
                show=False,
            )
        except (EditError, NotMaster) as exc:
            return _refused(exc)
        except EditInvalid as exc:
            lines = [row.line for row in rows]
            return _csv_problems(_csv_lines(lines, exc.problems))
        return Changed(version=_version_out(meta))

    tag_path = f"{tags_path}/{{tag}}"

    @app.get(tag_path, response_model=Item, responses=_REFUSALS, dependencies=view)
    async def get_tag(device: str, group: str, tag: str) -> Any:
        return await read(lambda data: Item(item=redact(_find(data, device, group, tag))))

    @app.put(tag_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def put_tag(device: str, group: str, tag: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device, group, tag)
        return await changed(
            Edit(EditKind.REPLACE, scope, body), request, f"edit tag {device}/{group}/{tag}"
        )

    @app.delete(tag_path, response_model=Changed, responses=_REFUSALS, dependencies=admin)
    async def delete_tag(device: str, group: str, tag: str, request: Request) -> Any:
        scope = Scope.of(device, group, tag)
        return await changed(
            Edit(EditKind.DELETE, scope),
            request,
            f"delete tag {device}/{group}/{tag}",
            show=False,
        )

    @app.post(
        f"{tag_path}/duplicate", response_model=Changed, responses=_REFUSALS, dependencies=admin
    )
    async def duplicate_tag(
        device: str, group: str, tag: str, request: Request, body: JsonObject
    ) -> Any:
        scope = Scope.of(device, group, tag)
        return await changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate tag {device}/{group}/{tag} as {body.get('name')}",
        )

    # -- versions --

    @app.get(VERSIONS, response_model=list[VersionOut], dependencies=view)
    async def list_versions() -> list[VersionOut]:
        metas = await asyncio.to_thread(editor.versions.list)
        return [_version_out(m) for m in metas]

    @app.get(
        f"{VERSIONS}/{{ident}}",
        response_model=VersionDetail,
        responses=_REFUSALS,
        dependencies=view,
    )
    async def get_version(ident: int) -> Any:
        version = await asyncio.to_thread(editor.versions.get, ident)
        if version is None:
            return _refused(EditError(EditFailure.NOT_FOUND, f"no config version {ident}"))
        return VersionDetail(
            **asdict(version.meta), diff=redact_text(version.diff), text=redact_text(version.text)
        )

    @app.post(
        f"{VERSIONS}/{{ident}}/restore",
        response_model=Changed,
        responses=_REFUSALS,
        dependencies=admin,
    )
    async def restore_version(ident: int, request: Request) -> Any:
        try:
            meta = await editor.restore(ident, _who(request))
        except (EditError, NotMaster) as exc:
            return _refused(exc)
        except EditInvalid as exc:
            return _problems(exc.problems)
        return Changed(version=_version_out(meta))


# ---- request bodies in the OpenAPI document ------------------------------------------------------

# The bodies are read as plain JSON objects (the whole config is validated, not the body
# alone), so the document is told their shape: the config's own models.
BODY_SCHEMAS: dict[str, Any] = {
    "DeviceBody": DeviceConfig,
    "GroupBody": GroupConfig | OpcUaGroupConfig,
    "TagBody": TagConfig | OpcUaTagConfig,
}
_BODY_OF = {
    DEVICES: "DeviceBody",
    f"{DEVICES}/{{device}}": "DeviceBody",
    f"{DEVICES}/{{device}}/groups": "GroupBody",
    f"{DEVICES}/{{device}}/groups/{{group}}": "GroupBody",
    f"{DEVICES}/{{device}}/groups/{{group}}/tags": "TagBody",
    f"{DEVICES}/{{device}}/groups/{{group}}/tags/{{tag}}": "TagBody",
}


def document_bodies(app: FastAPI) -> None:
    """Name the config models as the request bodies of the edit routes in /openapi.json."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "config_bodies_documented", False):
            return original()
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, kind in BODY_SCHEMAS.items():
            adapter: TypeAdapter[Any] = TypeAdapter(kind)
            body = adapter.json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in body.pop("$defs", {}).items():
                components.setdefault(def_name, definition)
            components[name] = body
        for path, name in _BODY_OF.items():
            for method, operation in schema.get("paths", {}).get(path, {}).items():
                if method in ("post", "put") and "requestBody" in operation:
                    operation["requestBody"]["content"] = {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    }
        app.state.config_bodies_documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _protocol(device: dict[str, Any]) -> str:
    protocol = device.get("protocol", "modbus-tcp")
    return protocol if isinstance(protocol, str) else "modbus-tcp"


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


# ---- test connection ----------------------------------------------------------------------------

CONNECT_TIMEOUT_S = 3.0
_OPC_URL = re.compile(r"^opc\.tcp://(?P<host>\[[^\]]+\]|[^:/\s]+)(?::(?P<port>\d{1,5}))?")


def endpoints_of(device: dict[str, Any]) -> list[tuple[str, int] | str]:
    """Where a device is reached: (host, port) for TCP, a serial port's path otherwise."""
    if device.get("protocol") == "opcua":
        m = _OPC_URL.match(str(device.get("endpoint", "")))
        if m is None:
            return []
        return [(m.group("host").strip("[]"), int(m.group("port") or 4840))]
    paths = device.get("paths")
    if isinstance(paths, list):
        return [
            (str(p.get("host")), int(p.get("port", 502)))
            for p in paths
            if isinstance(p, dict) and "host" in p
        ]
    serial = device.get("serial")
    if isinstance(serial, dict) and isinstance(serial.get("port"), str):
        return [serial["port"]]
    if "host" in device:
        return [(str(device["host"]), int(device.get("port", 502)))]
    return []


async def check_paths(device: dict[str, Any]) -> list[PathCheck]:
    """Open (and close) a connection on every path of the device; nothing is read or written."""
    timeout = device.get("timeout")
    limit = min(float(timeout), CONNECT_TIMEOUT_S) if isinstance(timeout, int | float) else 1.0
    out: list[PathCheck] = []
    for endpoint in endpoints_of(device):
        if isinstance(endpoint, str):
            exists = await asyncio.to_thread(Path(endpoint).exists)
            out.append(
                PathCheck(endpoint=endpoint, ok=exists, error=None if exists else "no such port")
            )
            continue
        host, port = endpoint
        label = f"{host}:{port}"
        started = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
        except (OSError, TimeoutError) as exc:
            out.append(PathCheck(endpoint=label, ok=False, error=str(exc) or type(exc).__name__))
            continue
        latency = (time.monotonic() - started) * 1000
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        out.append(PathCheck(endpoint=label, ok=True, latency_ms=round(latency, 2)))
    return out
