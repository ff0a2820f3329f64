"""Reading a Neuron/NeuronEX export (`GET /api/v2/global/drivers` or `global/config`) into
typed records, refusing hostile JSON with located problems instead of tracebacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tandem.config.yamlload import FieldPath, LocatedDocument, YamlSyntaxError, load_located
from tandem.errors import ConfigProblem

# A site with 100,000 tags exports to about 20 MB; anything far larger is not an export.
MAX_EXPORT_BYTES = 64 * 1024 * 1024
MAX_NAME = 256  # Neuron's names are at most 128 bytes (NEU_TAG_NAME_LEN and friends)
MAX_ADDRESS = 128
MAX_INTERVAL_MS = 2**32 - 1  # Neuron keeps group intervals in a uint32


def _check_printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("has control or separator characters")
    return text


Printable = Annotated[str, AfterValidator(_check_printable)]
"""A string from the export that goes into the config: no control characters."""


class Reason(Enum):
    """Why something in the export was refused; UNSUPPORTED ones --skip-unsupported may skip."""

    EXPORT = "not a Neuron export"
    FIELD = "invalid field"
    DUPLICATE = "duplicate name"
    REFERENCE = "unknown reference"
    ADDRESS = "invalid address"
    ATTRIBUTE = "invalid attribute"
    UNKNOWN_TYPE = "unknown type"
    PLUGIN = "unsupported plugin"
    CONNECTION = "unsupported connection"
    TYPE = "unsupported type"
    ARRAY = "array type"
    STATIC = "static tag"
    NORTH = "unsupported northbound setting"
    TANDEM = "rejected by Tandem's checks"

    @property
    def skippable(self) -> bool:
        """Unsupported (a real Neuron setting Tandem cannot express), not broken input."""
        return self in _SKIPPABLE


_SKIPPABLE = frozenset(
    {
        Reason.PLUGIN,
        Reason.CONNECTION,
        Reason.TYPE,
        Reason.ARRAY,
        Reason.STATIC,
        Reason.NORTH,
        Reason.TANDEM,
    }
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from: its path in the export and the names a person knows it by."""

    path: FieldPath
    node: str | None = None
    group: str | None = None
    tag: str | None = None

    def label(self) -> str:
        parts = [
            f"{kind} {json.dumps(name, ensure_ascii=False)}"
            for kind, name in (("node", self.node), ("group", self.group), ("tag", self.tag))
            if name is not None
        ]
        return " ".join(parts)

    def child(self, *path: str | int, **names: str) -> Origin:
        return Origin(
            (*self.path, *path),
            names.get("node", self.node),
            names.get("group", self.group),
            names.get("tag", self.tag),
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing refused, with its typed reason and the key it is about."""

    reason: Reason
    origin: Origin
    field: str
    message: str

    def located(self, doc: LocatedDocument) -> ConfigProblem:
        path = (*self.origin.path, self.field) if self.field else self.origin.path
        label = self.origin.label()
        text = f"{label}: {self.message}" if label else self.message
        return doc.problem(path, f"{text} [{self.reason.value}]")


# --- the records, after the boundary ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    address: str
    type: int
    attribute: int
    precision: int
    decimal: float
    bias: float
    origin: Origin


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    interval_ms: int
    tags: list[Tag]
    origin: Origin


@dataclass(frozen=True, slots=True)
class Driver:
    name: str
    plugin: str
    params: dict[str, Any]
    groups: list[Group]
    origin: Origin


@dataclass(frozen=True, slots=True)
class Subscription:
    driver: str
    group: str
    params: dict[str, Any]
    static_tags: Any
    origin: Origin


@dataclass(frozen=True, slots=True)
class App:
    name: str
    plugin: str
    params: dict[str, Any]
    subscriptions: list[Subscription]
    origin: Origin


@dataclass(slots=True)
class Export:
    """Southbound drivers and northbound apps of one Neuron, whichever format it came in."""

    drivers: list[Driver] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    # global/drivers carries no subscriptions: then nothing says which groups were published.
    has_subscriptions: bool = False
    problems: list[Problem] = field(default_factory=list)


# --- strict shapes for each level, validated one record at a time --------------------------------


class _Shape(BaseModel):
    # Unknown keys are ignored: every Neuron release adds some (unit, description, meta...).
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, allow_inf_nan=False)


class _TagShape(_Shape):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    address: str = Field(min_length=1, max_length=MAX_ADDRESS)
    type: int = Field(ge=0, le=255)
    attribute: int = Field(ge=0, le=255)
    precision: int = Field(default=0, ge=0, le=255)
    decimal: float = 0.0
    bias: float = 0.0


class _GroupShape(_Shape):
    group: str = Field(min_length=1, max_length=MAX_NAME)
    interval: int = Field(ge=1, le=MAX_INTERVAL_MS)
    tags: list[Any] = Field(default_factory=list)


class _NodeShape(_Shape):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    plugin: str = Field(min_length=1, max_length=MAX_NAME)
    params: dict[str, Any] | None = None
    groups: list[Any] | None = None


class _GroupRefShape(_Shape):
    driver: str = Field(min_length=1, max_length=MAX_NAME)
    group: str = Field(min_length=1, max_length=MAX_NAME)
    interval: int = Field(ge=1, le=MAX_INTERVAL_MS)


class _TagBlockShape(_Shape):
    driver: str = Field(min_length=1, max_length=MAX_NAME)
    group: str = Field(min_length=1, max_length=MAX_NAME)
    tags: list[Any]


class _SubGroupShape(_Shape):
    driver: str = Field(min_length=1, max_length=MAX_NAME)
    group: str = Field(min_length=1, max_length=MAX_NAME)
    params: dict[str, Any] | None = None
    static_tags: Any = None


class _SubscriptionShape(_Shape):
    app: str = Field(min_length=1, max_length=MAX_NAME)
    groups: list[Any] = Field(default_factory=list)


class _SettingShape(_Shape):
    node: str = Field(min_length=1, max_length=MAX_NAME)
    params: dict[str, Any]


GroupRefs = dict[str, list[tuple[_GroupRefShape, Origin]]]  # driver -> its groups
TagBlocks = dict[tuple[str, str], tuple[list[Any], Origin]]  # (driver, group) -> raw tags


def _shape_problems(exc: ValidationError, origin: Origin) -> list[Problem]:
    found = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message = {"missing": "required field is missing"}.get(err["type"], err["msg"])
        found.append(
            Problem(Reason.FIELD, origin.child(*loc[:-1]), str(loc[-1]) if loc else "", message)
        )
    return found


_S = TypeVar("_S", bound=_Shape)


def _shaped(shape: type[_S], raw: Any, origin: Origin, problems: list[Problem]) -> _S | None:
    """``raw`` as ``shape``, or None with its problems recorded (never an exception)."""
    if not isinstance(raw, dict):
        problems.append(Problem(Reason.FIELD, origin, "", "must be an object"))
        return None
    try:
        return shape.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_shape_problems(exc, origin))
        return None


def _printable(name: str, origin: Origin, what: str, problems: list[Problem]) -> bool:
    """Names travel into YAML, MQTT payloads and logs: no control or separator characters."""
    if name.isprintable() and name.strip() == name:
        return True
    problems.append(
        Problem(
            Reason.FIELD,
            origin,
            what,
            f"{json.dumps(name)} has control characters or surrounding spaces",
        )
    )
    return False


# --- reading ------------------------------------------------------------------------------------


def read_export(text: str, file: str) -> tuple[Export, Callable[[], LocatedDocument]]:
    """Parse an export; problems of single records are collected in ``Export.problems``.

    Returns the export and how to locate its problems: the lines of a large export are only
    worth reading when there is something to point at. Raises ExportUnreadable when the text
    is no export at all (too large, not JSON, nested beyond reason, duplicate keys, not an
    object, no nodes).
    """
    data = _load_json(text, file)

    def locate() -> LocatedDocument:
        return _locate(text, file, data)

    if not isinstance(data, dict):
        raise ExportUnreadable([locate().problem((), "the export must be a JSON object")])
    export = Export()
    _read_nodes(data, export)
    if not export.drivers and not export.apps and not export.problems:
        raise ExportUnreadable(
            [
                locate().problem(
                    (),
                    'no "nodes" to import: expected the answer of GET /api/v2/global/drivers '
                    "or GET /api/v2/global/config",
                )
            ]
        )
    return export, locate


class ExportUnreadable(Exception):
    """The file is not an export at all; carries its located problems."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _DuplicateKey(ValueError):
    """An object names one key twice; JSON parsers disagree on which one counts."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str, file: str) -> Any:
    if len(text) > MAX_EXPORT_BYTES:
        raise ExportUnreadable(
            [ConfigProblem(file, None, "", f"larger than {MAX_EXPORT_BYTES // 2**20} MiB")]
        )
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        _locate(text, file, None)  # raises with the duplicate's line
        raise ExportUnreadable([ConfigProblem(file, None, "", "a key given twice")]) from None
    except json.JSONDecodeError as exc:
        problem = ConfigProblem(file, exc.lineno, "", f"not JSON: {exc.msg} (column {exc.colno})")
        raise ExportUnreadable([problem]) from None
    except RecursionError:
        raise ExportUnreadable([ConfigProblem(file, None, "", "nested too deeply")]) from None
    except ValueError as exc:  # NaN/Infinity, or an integer of more than 4,300 digits
        raise ExportUnreadable([ConfigProblem(file, None, "", f"not JSON: {exc}")]) from None


def _locate(text: str, file: str, data: Any) -> LocatedDocument:
    """Lines for every key, from the YAML loader (JSON is YAML); duplicate keys are refused.

    The text already parsed as JSON, so it has no YAML-only constructs (anchors, tags); if
    the YAML reader still stumbles (a tab it dislikes, depth), problems just lose their line.
    """
    try:
        located = load_located(text, file)
    except YamlSyntaxError as exc:
        duplicates = [p for p in exc.problems if "duplicate key" in p.message]
        if duplicates:
            raise ExportUnreadable(duplicates) from None
        return LocatedDocument(file, data)
    except RecursionError:
        return LocatedDocument(file, data)
    return LocatedDocument(file, data, located.lines)


def _list_at(data: dict[str, Any], key: str, export: Export) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        export.problems.append(Problem(Reason.EXPORT, Origin((key,)), "", "must be a list"))
        return []
    return value


def _read_nodes(data: dict[str, Any], export: Export) -> None:
    """Both formats: full drivers (global/drivers) or references completed from the lists."""
    settings = _settings(data, export)
    groups = _group_refs(data, export)
    tag_blocks = _tag_blocks(data, export)
    subscriptions = _subscriptions(data, export)
    export.has_subscriptions = "subscriptions" in data or "apps" in data
    seen: set[str] = set()
    for index, raw in enumerate(_list_at(data, "nodes", export)):
        origin = Origin(("nodes", index))
        node = _shaped(_NodeShape, raw, origin, export.problems)
        if node is None or not _printable(node.name, origin, "name", export.problems):
            continue
        origin = origin.child(node=node.name)
        if node.name in seen:
            export.problems.append(Problem(Reason.DUPLICATE, origin, "name", "a second node"))
            continue
        seen.add(node.name)
        params = node.params if node.params is not None else settings.get(node.name, {})
        if node.groups is not None:
            driver_groups = _inline_groups(node.groups, origin, export.problems)
        else:
            driver_groups = _referenced_groups(node.name, groups, tag_blocks, export.problems)
        southbound = bool(driver_groups) or "modbus" in node.plugin.lower()
        if node.name in subscriptions or not southbound:
            subs = subscriptions.pop(node.name, [])
            export.apps.append(App(node.name, node.plugin, params, subs, origin))
        else:
            export.drivers.append(Driver(node.name, node.plugin, params, driver_groups, origin))
    _read_apps(data, export, seen)
    for app, subs in subscriptions.items():  # subscriptions of a node the export does not list
        export.apps.append(App(app, "", {}, subs, Origin(subs[0].origin.path[:2], node=app)))
    _unclaimed(groups, tag_blocks, seen, export.problems)


def _unclaimed(
    groups: GroupRefs,
    tag_blocks: TagBlocks,
    nodes: set[str],
    problems: list[Problem],
) -> None:
    """Groups of a node the export does not list, tags of a group it does not list."""
    for driver, refs in groups.items():
        if driver not in nodes:
            for ref, origin in refs:
                where = origin.child(node=driver, group=ref.group)
                problems.append(Problem(Reason.REFERENCE, where, "driver", "no such node"))
    listed = {(driver, ref.group) for driver, refs in groups.items() for ref, _ in refs}
    for (driver, group), (_, origin) in tag_blocks.items():
        if (driver, group) not in listed:
            where = Origin(origin.path[:2], node=driver, group=group)
            problems.append(Problem(Reason.REFERENCE, where, "group", "no such group"))


def _read_apps(data: dict[str, Any], export: Export, seen: set[str]) -> None:
    """``GET /api/v2/global/apps`` ({"apps": [...]}), merged into the same file."""
    for index, raw in enumerate(_list_at(data, "apps", export)):
        origin = Origin(("apps", index))
        node = _shaped(_NodeShape, raw, origin, export.problems)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        origin = origin.child(node=node.name)
        subs = [
            sub
            for gi, item in enumerate(node.groups or [])
            if (sub := _subscription(item, origin.child("groups", gi), export.problems))
        ]
        export.apps.append(App(node.name, node.plugin, node.params or {}, subs, origin))


def _settings(data: dict[str, Any], export: Export) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for index, raw in enumerate(_list_at(data, "settings", export)):
        setting = _shaped(_SettingShape, raw, Origin(("settings", index)), export.problems)
        if setting is not None:
            found[setting.node] = setting.params
    return found


def _group_refs(data: dict[str, Any], export: Export) -> GroupRefs:
    found: GroupRefs = {}
    for index, raw in enumerate(_list_at(data, "groups", export)):
        origin = Origin(("groups", index))
        ref = _shaped(_GroupRefShape, raw, origin, export.problems)
        if ref is not None:
            found.setdefault(ref.driver, []).append((ref, origin))
    return found


def _tag_blocks(data: dict[str, Any], export: Export) -> TagBlocks:
    found: TagBlocks = {}
    for index, raw in enumerate(_list_at(data, "tags", export)):
        origin = Origin(("tags", index))
        block = _shaped(_TagBlockShape, raw, origin, export.problems)
        if block is not None:
            key = (block.driver, block.group)
            previous = found.get(key)
            tags = (previous[0] if previous else []) + block.tags
            found[key] = (tags, previous[1] if previous else origin.child("tags"))
    return found


def _subscription(raw: Any, origin: Origin, problems: list[Problem]) -> Subscription | None:
    sub = _shaped(_SubGroupShape, raw, origin, problems)
    if sub is None:
        return None
    return Subscription(sub.driver, sub.group, sub.params or {}, sub.static_tags, origin)


def _subscriptions(data: dict[str, Any], export: Export) -> dict[str, list[Subscription]]:
    found: dict[str, list[Subscription]] = {}
    for index, raw in enumerate(_list_at(data, "subscriptions", export)):
        origin = Origin(("subscriptions", index))
        entry = _shaped(_SubscriptionShape, raw, origin, export.problems)
        if entry is None:
            continue
        subs = found.setdefault(entry.app, [])
        for gi, item in enumerate(entry.groups):
            sub = _subscription(item, origin.child("groups", gi, node=entry.app), export.problems)
            if sub is not None:
                subs.append(sub)
    return found


def _inline_groups(raws: Sequence[Any], origin: Origin, problems: list[Problem]) -> list[Group]:
    groups: list[Group] = []
    seen: set[str] = set()
    for gi, raw in enumerate(raws):
        where = origin.child("groups", gi)
        shape = _shaped(_GroupShape, raw, where, problems)
        if shape is None or not _printable(shape.group, where, "group", problems):
            continue
        where = where.child(group=shape.group)
        if shape.group in seen:
            problems.append(Problem(Reason.DUPLICATE, where, "group", "a second group"))
            continue
        seen.add(shape.group)
        tags = list(_tags(shape.tags, where.child("tags"), problems))
        groups.append(Group(shape.group, shape.interval, tags, where))
    return groups


def _referenced_groups(
    driver: str,
    refs: GroupRefs,
    tag_blocks: TagBlocks,
    problems: list[Problem],
) -> list[Group]:
    groups: list[Group] = []
    for ref, origin in refs.get(driver, []):
        where = origin.child(node=driver, group=ref.group)
        if not _printable(ref.group, where, "group", problems):
            continue
        raws, tags_origin = tag_blocks.get((driver, ref.group), ([], where))
        tags = list(_tags(raws, tags_origin.child(node=driver, group=ref.group), problems))
        groups.append(Group(ref.group, ref.interval, tags, where))
    return groups


def _tags(raws: Sequence[Any], origin: Origin, problems: list[Problem]) -> Iterator[Tag]:
    seen: set[str] = set()
    for ti, raw in enumerate(raws):
        where = origin.child(ti)
        shape = _shaped(_TagShape, raw, where, problems)
        if shape is None or not _printable(shape.name, where, "name", problems):
            continue
        where = where.child(tag=shape.name)
        if shape.name in seen:
            problems.append(Problem(Reason.DUPLICATE, where, "name", "a second tag"))
            continue
        seen.add(shape.name)
        yield Tag(
            shape.name,
            shape.address,
            shape.type,
            shape.attribute,
            shape.precision,
            shape.decimal,
            shape.bias,
            where,
        )
