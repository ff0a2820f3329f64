"""Edits of the config document: devices, groups and tags changed in the YAML, comments kept.

Pure: text in, text out. The document is parsed with ruamel.yaml's round-trip loader so an edit
changes only what it must; a replaced item is merged into the old one key by key, so comments
on the keys that stayed survive. Validation is the loader's own (`validate_mapping`) and its
problems come back as field paths relative to the edited item, for a form to show at the field.
"""

from __future__ import annotations

import copy
import difflib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from tandem.config.hub import TandemConfig, validate_mapping
from tandem.config.yamlload import FieldPath, YamlSyntaxError, format_path, load_located
from tandem.errors import ConfigError, ConfigProblem, TandemError
from tandem.security.redact import REDACTED, is_secret_name

# Where each level's items live in its parent, from the document root down.
LEVELS: tuple[str, ...] = ("devices", "groups", "tags")


class EditFailure(StrEnum):
    """Why an edit could not even be tried (as opposed to a config that does not validate)."""

    NOT_FOUND = "not_found"
    EXISTS = "exists"
    BAD_BODY = "bad_body"
    BAD_DOCUMENT = "bad_document"
    UNSUPPORTED = "unsupported"  # e.g. read now on a device whose poller cannot


class EditError(TandemError):
    """An edit that names a missing item, an existing one, or carries an unusable body."""

    def __init__(self, reason: EditFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Scope:
    """An item of the document by name: a device, a group of it, or a tag of that group."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, *names: str) -> Scope:
        if not 0 <= len(names) <= len(LEVELS):
            raise ValueError(f"a scope has at most {len(LEVELS)} names")
        return cls(tuple(names))

    @property
    def label(self) -> str:
        kinds = ("device", "group", "tag")
        return " / ".join(f"{kinds[i]} {n!r}" for i, n in enumerate(self.names)) or "the config"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One validation problem: `field` relative to the edited item, `path` from the root."""

    field: str
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class Located:
    """A problem with its raw field path, as the validation found it."""

    path: FieldPath
    message: str


class EditInvalid(TandemError):
    """The edited config does not validate; every problem, relative to the edited item."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.path or '(config)'}: {p.message}" for p in problems))
        self.problems = problems


# ---- the round-trip document --------------------------------------------------------------------


_KEY_ONLY = re.compile(r"^(?P<indent> *)[^\s#-][^#]*:\s*(#.*)?$")
_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- +)?\S")


def guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as ruamel.yaml names them, from the text's first nestings.

    A line scan, not a parse: ruamel's own guess loads the whole document again, which is
    seconds for a large tag list.
    """
    mapping: int | None = None
    sequence: tuple[int, int] | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        key = _KEY_ONLY.match(line)
        if key is None:
            continue
        nxt = next((n for n in lines[i + 1 :] if n.strip() and not n.lstrip().startswith("#")), "")
        child = _LINE.match(nxt)
        if child is None:
            continue
        base, at = len(key.group("indent")), len(child.group("indent"))
        if child.group("dash") and sequence is None and at >= base:
            sequence = (at - base + len(child.group("dash")), at - base)
        elif not child.group("dash") and mapping is None and at > base:
            mapping = at - base
        if mapping is not None and sequence is not None:
            break
    seq, offset = sequence if sequence is not None else (2, 0)
    return mapping or 2, seq, offset


def _yaml(like: str | None = None) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # long NodeIds and topics stay on one line
    if like is not None:
        # The file's own indentation, so an edit's diff shows the edit and nothing else.
        mapping, sequence, offset = guess_indent(like)
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def load_doc(text: str) -> CommentedMap:
    """The round-trip document; EditError when it is not a mapping of YAML."""
    try:
        doc = _yaml().load(text)
    except YAMLError as exc:
        raise EditError(EditFailure.BAD_DOCUMENT, f"the config file is not YAML: {exc}") from exc
    if not isinstance(doc, CommentedMap):
        raise EditError(EditFailure.BAD_DOCUMENT, "the config file's top level is not a mapping")
    if doc.fa.flow_style():
        _block_style(doc)  # a JSON file becomes YAML: one line per field, diffs that read
    return doc


def _block_style(node: Any) -> None:
    if isinstance(node, CommentedMap | CommentedSeq):
        node.fa.set_block_style()
        for child in node.values() if isinstance(node, CommentedMap) else node:
            _block_style(child)


def dump_doc(doc: CommentedMap, like: str | None = None) -> str:
    """The document as YAML text, indented like `like` (the text it was loaded from)."""
    out = io.StringIO()
    try:
        _yaml(like).dump(doc, out)
    except YAMLError as exc:
        raise EditError(EditFailure.BAD_BODY, f"cannot write this value as YAML: {exc}") from exc
    return out.getvalue()


def plain(value: Any) -> Any:
    """A ruamel value as plain dicts, lists and scalars (for JSON answers)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def _same(a: Any, b: Any) -> bool:
    # bool is an int: True must not count as 1.
    return isinstance(a, bool) == isinstance(b, bool) and type(a) is not dict and a == b


def merge_into(target: CommentedMap, new: dict[str, Any]) -> None:
    """Make `target` equal `new`, touching only keys that differ (their comments stay).

    A secret-named key given as the redacted marker keeps its old value: a form sends back
    what GET showed it, and must not overwrite a password with the marker.
    """
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        old = target.get(key)
        if value == REDACTED and is_secret_name(str(key)) and key in target:
            continue
        if isinstance(old, CommentedMap) and isinstance(value, dict):
            merge_into(old, value)
        elif isinstance(old, CommentedSeq) and isinstance(value, list):
            _merge_list(old, value)
        elif key not in target or not _same(old, value):
            target[key] = value


def _merge_list(target: CommentedSeq, new: list[Any]) -> None:
    del target[len(new) :]
    for i, value in enumerate(new):
        if i >= len(target):
            target.append(value)
        elif isinstance(target[i], CommentedMap) and isinstance(value, dict):
            merge_into(target[i], value)
        elif isinstance(target[i], CommentedSeq) and isinstance(value, list):
            _merge_list(target[i], value)
        elif not _same(target[i], value):
            target[i] = value


# ---- finding items ------------------------------------------------------------------------------


def _items(parent: Any, key: str, create: bool = False) -> CommentedSeq:
    if not isinstance(parent, dict):
        raise EditError(EditFailure.BAD_DOCUMENT, f"{key}: its parent is not a mapping")
    items = parent.get(key)
    if items is None and create:
        items = parent[key] = CommentedSeq()
    if items is None:
        return CommentedSeq()
    if not isinstance(items, list):
        raise EditError(EditFailure.BAD_DOCUMENT, f"{key} is not a list in the config file")
    return items  # type: ignore[return-value]


def _index_of(items: Sequence[Any], name: str) -> int | None:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == name:
            return i
    return None


def locate(doc: CommentedMap, scope: Scope) -> tuple[CommentedSeq, int, FieldPath]:
    """The list holding the scoped item, its index there, and its field path from the root."""
    if not scope.names:
        raise ValueError("locate needs a named item")
    parent: Any = doc
    path: FieldPath = ()
    for level, name in enumerate(scope.names):
        items = _items(parent, LEVELS[level])
        index = _index_of(items, name)
        if index is None:
            raise EditError(EditFailure.NOT_FOUND, f"no {Scope(scope.names[: level + 1]).label}")
        path = (*path, LEVELS[level], index)
        if level == len(scope.names) - 1:
            return items, index, path
        parent = items[index]
    raise AssertionError("unreachable")


def item(doc: CommentedMap, scope: Scope) -> Any:
    items, index, _ = locate(doc, scope)
    return items[index]


def children(doc: CommentedMap, scope: Scope) -> tuple[CommentedSeq, FieldPath]:
    """The list of items under `scope` (devices of the root, groups of a device, ...)."""
    if len(scope.names) >= len(LEVELS):
        raise ValueError("a tag has no children")
    if not scope.names:
        return _items(doc, LEVELS[0]), (LEVELS[0],)
    items, index, path = locate(doc, scope)
    key = LEVELS[len(scope.names)]
    return _items(items[index], key), (*path, key)


# Deeper than any config item (a device's tags sit at depth 5): refused before it is copied,
# so a hostile body cannot exhaust the recursion of deepcopy or the YAML writer.
MAX_DEPTH = 16


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value` nests lists and mappings more than `limit` deep (checked iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EditError(EditFailure.BAD_BODY, "the body must be a JSON object")
    if too_deep(body):
        raise EditError(EditFailure.BAD_BODY, f"the body nests deeper than {MAX_DEPTH} levels")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise EditError(EditFailure.BAD_BODY, "the body needs a name (a string)")
    return body


# ---- the edits (each returns the edited item's path, for the problems) --------------------------


def add(doc: CommentedMap, parent: Scope, body: Any) -> FieldPath:
    """A new item under `parent` (a device at the root, a group of a device, a tag of a group)."""
    new = _body(body)
    if parent.names:
        items, index, path = locate(doc, parent)
        key = LEVELS[len(parent.names)]
        items = _items(items[index], key, create=True)
        base: FieldPath = (*path, key)
    else:
        items, base = _items(doc, LEVELS[0], create=True), (LEVELS[0],)
    if _index_of(items, new["name"]) is not None:
        raise EditError(EditFailure.EXISTS, f"{Scope((*parent.names, new['name'])).label} exists")
    items.append(copy.deepcopy(new))
    return (*base, len(items) - 1)


def replace(doc: CommentedMap, scope: Scope, body: Any) -> FieldPath:
    """The item replaced by `body` (a rename included), merged so unchanged keys keep comments."""
    new = _body(body)
    items, index, path = locate(doc, scope)
    if new["name"] != scope.names[-1] and _index_of(items, new["name"]) is not None:
        raise EditError(
            EditFailure.EXISTS, f"{Scope((*scope.names[:-1], new['name'])).label} exists"
        )
    current = items[index]
    if isinstance(current, CommentedMap):
        merge_into(current, copy.deepcopy(new))
    else:
        items[index] = copy.deepcopy(new)
    return path


def replace_children(doc: CommentedMap, scope: Scope, rows: list[dict[str, Any]]) -> FieldPath:
    """Every item under `scope` replaced at once (a CSV import of a group's tags)."""
    items, index, path = locate(doc, scope)
    key = LEVELS[len(scope.names)]
    parent = items[index]
    current = _items(parent, key, create=True)
    _merge_list(current, copy.deepcopy(rows))
    return (*path, key)


def delete(doc: CommentedMap, scope: Scope) -> FieldPath:
    items, index, path = locate(doc, scope)
    del items[index]
    return path[:-1]


def duplicate(doc: CommentedMap, scope: Scope, overrides: Any) -> FieldPath:
    """A copy of the item right after it, with a new name and any other fields overridden."""
    new = _body(overrides)
    items, index, path = locate(doc, scope)
    if _index_of(items, new["name"]) is not None:
        raise EditError(
            EditFailure.EXISTS, f"{Scope((*scope.names[:-1], new['name'])).label} exists"
        )
    twin = copy.deepcopy(items[index])
    if not isinstance(twin, dict):
        raise EditError(EditFailure.BAD_DOCUMENT, f"{scope.label} is not a mapping")
    for key, value in new.items():
        twin[key] = copy.deepcopy(value)
    items.insert(index + 1, twin)
    return (*path[:-1], index + 1)


class EditKind(StrEnum):
    ADD = "add"
    REPLACE = "replace"
    REPLACE_CHILDREN = "replace_children"
    DELETE = "delete"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Edit:
    """One edit as data (it travels to a worker process for a large file)."""

    kind: EditKind
    scope: Scope
    body: Any = None


def apply_edit(doc: CommentedMap, e: Edit) -> FieldPath:
    """Carry out `e` on the document; the edited item's path (its problems are relative to it)."""
    if e.kind is EditKind.ADD:
        return add(doc, e.scope, e.body)
    if e.kind is EditKind.REPLACE:
        return replace(doc, e.scope, e.body)
    if e.kind is EditKind.REPLACE_CHILDREN:
        if not isinstance(e.body, list) or too_deep(e.body):
            raise EditError(EditFailure.BAD_BODY, "expected a list of items")
        return replace_children(doc, e.scope, e.body)
    if e.kind is EditKind.DELETE:
        return delete(doc, e.scope)
    return duplicate(doc, e.scope, e.body)


@dataclass(frozen=True, slots=True)
class Performed:
    """An edit that validates: the new text, the edited item as plain data, the diff's hunks."""

    text: str
    path: FieldPath
    item: dict[str, Any] | None
    hunks: str = ""


def perform(base: str, e: Edit, doc: CommentedMap | None = None) -> tuple[Performed, CommentedMap]:
    """The whole edit of `base` (or of `doc`, its already parsed document): edit, write, check.

    Raises EditError or EditInvalid. Returns the document too, for the next edit to reuse.
    """
    doc = doc if doc is not None else load_doc(base)
    path = apply_edit(doc, e)
    text = dump_doc(doc, base)
    checked(text, path)
    item: Any = doc
    for part in path:
        item = _child(item, part)
    value = plain(item) if isinstance(item, dict) else None
    return Performed(text, path, value, hunks(base, text)), doc


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, list):
        return node[part] if isinstance(part, int) and 0 <= part < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


# ---- validation and its problems ----------------------------------------------------------------


def validate_text(text: str, file: str = "<edit>") -> tuple[TandemConfig | None, list[Located]]:
    """The loader's validation of the edited text: the config, or every problem with its path."""
    found: list[Located] = []

    def record(path: FieldPath, message: str) -> ConfigProblem:
        found.append(Located(tuple(path), message))
        return ConfigProblem(file, None, format_path(path), message)

    try:
        doc = load_located(text, file)
    except YamlSyntaxError as exc:
        return None, [Located((), p.message) for p in exc.problems]
    try:
        return validate_mapping(doc.data, record), []
    except ConfigError:
        return None, found


def relative_problems(prefix: FieldPath, problems: Sequence[Located]) -> list[FieldProblem]:
    """Problems as fields of the edited item; one elsewhere in the config keeps its full path.

    A problem on the item itself (its list is too short, a duplicate name) has field "".
    """
    out: list[FieldProblem] = []
    for p in problems:
        inside = p.path[: len(prefix)] == prefix
        field = format_path(p.path[len(prefix) :]) if inside else ""
        out.append(FieldProblem(field=field, path=format_path(p.path), message=p.message))
    return out


def checked(text: str, prefix: FieldPath) -> TandemConfig:
    """The config of the edited text, or EditInvalid with its problems relative to `prefix`."""
    cfg, problems = validate_text(text)
    if cfg is None:
        raise EditInvalid(relative_problems(prefix, problems))
    return cfg


def config_problems(exc: ConfigError, prefix: FieldPath = ()) -> list[FieldProblem]:
    """A ConfigError from applying (identity, a node-local check) as problems without a field."""
    return [FieldProblem(field="", path=p.field, message=p.message) for p in exc.problems]


# ---- versions -----------------------------------------------------------------------------------


def unified(old: str, new: str, old_label: str, new_label: str) -> str:
    """The change as a unified diff of the YAML text."""
    return f"--- {old_label}\n+++ {new_label}\n{hunks(old, new)}" if old != new else ""


def hunks(old: str, new: str) -> str:
    """The unified diff's hunks, without its two header lines (the labels come later)."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True))
    return "".join(list(lines)[2:])


def compact(value: Any) -> Any:
    """A model dump without its None fields (they are the defaults): shorter YAML."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


def with_sections(
    doc: CommentedMap,
    running: dict[str, Any],
    in_file: dict[str, Any] | None,
    short: dict[str, Any] | None = None,
) -> None:
    """Put the running shared sections in the document where the file's differ from them.

    Used where the running sections came from the master (config sync) and the file still
    holds older ones: an edit must start from what runs. `running` and `in_file` are full
    model dumps, compared (`in_file` None: the file does not validate); `short` is what is
    written instead (the same sections without their defaults). A section, or a device, that
    is the same in both stays as the file writes it, comments and all.
    """
    short = short if short is not None else {k: compact(v) for k, v in running.items()}
    for key, value in running.items():
        if in_file is not None and in_file.get(key) == value:
            continue
        new = copy.deepcopy(short.get(key, {} if isinstance(value, dict) else value))
        if key == "devices" and isinstance(value, list) and in_file is not None:
            doc[key] = _devices_from(doc.get(key), value, in_file.get(key) or [], new)
            continue
        current = doc.get(key)
        if isinstance(current, CommentedMap) and isinstance(new, dict):
            merge_into(current, new)
        else:
            doc[key] = new


def _devices_from(
    written: Any, running: list[Any], in_file: list[Any], short: list[Any]
) -> CommentedSeq:
    out = CommentedSeq()
    by_name = {d.get("name"): i for i, d in enumerate(in_file) if isinstance(d, dict)}
    for n, device in enumerate(running):
        i = by_name.get(device.get("name")) if isinstance(device, dict) else None
        same = i is not None and in_file[i] == device and isinstance(written, list)
        out.append(written[i] if same and i is not None else short[n])
    return out
