"""A group's tags as CSV, the way plant engineers keep tag lists: one row a tag, one column a field.

Pure. The columns are the tag model's fields (Modbus or OPC UA, by the device's protocol); an
empty cell means the field's default. Cells are converted by the field's type before the model
sees them, so the YAML gets numbers, not strings; every problem names its CSV line and column.
"""

from __future__ import annotations

import csv
import io
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from tandem.config.hub import OpcUaTagConfig, TagConfig
from tandem.errors import TandemError

# A cell longer than this is no tag field; it is refused before anything parses it.
MAX_CELL = 4096
MAX_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class CsvProblem:
    """One problem of an import: the CSV line (1 = the header) and the column it is in."""

    line: int
    column: str
    message: str


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One tag of the import and the CSV line it came from."""

    line: int
    tag: dict[str, Any]


class CsvInvalid(TandemError):
    def __init__(self, problems: list[CsvProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}, {p.column}: {p.message}" for p in problems))
        self.problems = problems


def tag_model(protocol: str) -> type[BaseModel]:
    return OpcUaTagConfig if protocol == "opcua" else TagConfig


def columns(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _kind(annotation: Any) -> str:
    """int, float, bool or str: how a cell of this field is read."""
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        return "int" if all(isinstance(v, int) for v in values) else "str"
    if origin in (typing.Union, types.UnionType):
        kinds = {_kind(a) for a in get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else "str"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "str"


def _convert(kind: str, cell: str) -> Any:
    if kind == "int":
        return int(cell)
    if kind == "float":
        return float(cell)
    if kind == "bool":
        lowered = cell.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{cell!r} is not true or false")
    return cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def export_csv(protocol: str, tags: Sequence[dict[str, Any]]) -> str:
    """The tags as CSV; a field the YAML leaves out is an empty cell (its default)."""
    model = tag_model(protocol)
    names = columns(model)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for tag in tags:
        writer.writerow([_cell(tag.get(name)) for name in names])
    return out.getvalue()


def parse_csv(protocol: str, text: str) -> list[CsvRow]:
    """Rows as tag mappings, each checked by the tag model; CsvInvalid names line and column.

    Only a row's own checks are made here; overlaps and duplicate names are the config's
    checks, made when the rows are in it (`problems_by_line` maps those back).
    """
    model = tag_model(protocol)
    known = columns(model)
    kinds = {name: _kind(info.annotation) for name, info in model.model_fields.items()}
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[CsvProblem] = []
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CsvInvalid([CsvProblem(1, "", "the file is empty: expected a header row")]) from None
    except csv.Error as exc:
        raise CsvInvalid([CsvProblem(1, "", f"not CSV: {exc}")]) from exc
    for name in header:
        if name not in known:
            problems.append(CsvProblem(1, name, f"unknown column; use {', '.join(known)}"))
    if len(set(header)) != len(header):
        problems.append(CsvProblem(1, "", "a column is given twice"))
    if "name" not in header:
        problems.append(CsvProblem(1, "name", "the name column is required"))
    if problems:
        raise CsvInvalid(problems)
    rows: list[CsvRow] = []
    try:
        for cells in reader:
            line = reader.line_num
            if len(rows) >= MAX_ROWS:
                raise CsvInvalid([CsvProblem(line, "", f"more than {MAX_ROWS} rows")])
            if not any(c.strip() for c in cells):
                continue  # blank lines between blocks of tags are common in spreadsheets
            if len(cells) > len(header):
                problems.append(
                    CsvProblem(line, "", f"{len(cells)} cells, header has {len(header)}")
                )
                continue
            row, ok = _row(header, cells, kinds, line, problems)
            if ok:
                _check_row(model, row, line, problems)
            rows.append(CsvRow(line, row))
    except csv.Error as exc:
        problems.append(CsvProblem(reader.line_num, "", f"not CSV: {exc}"))
    if problems:
        raise CsvInvalid(problems)
    return rows


def _row(
    header: list[str],
    cells: list[str],
    kinds: dict[str, str],
    line: int,
    problems: list[CsvProblem],
) -> tuple[dict[str, Any], bool]:
    row: dict[str, Any] = {}
    ok = True
    for name, raw in zip(header, cells, strict=False):
        cell = raw.strip()
        if not cell:
            continue
        if len(cell) > MAX_CELL:
            problems.append(CsvProblem(line, name, f"longer than {MAX_CELL} characters"))
            ok = False
            continue
        try:
            row[name] = _convert(kinds[name], cell)
        except ValueError:
            problems.append(CsvProblem(line, name, f"{cell!r} is not a valid {kinds[name]}"))
            ok = False
    return row, ok


def _check_row(
    model: type[BaseModel], row: dict[str, Any], line: int, problems: list[CsvProblem]
) -> None:
    try:
        model.model_validate(row)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = [str(part) for part in err["loc"]]
            ctx = err.get("ctx") or {}
            column = str(ctx["field"]) if err["type"] == "tag_field" else ".".join(loc)
            message = "required field is missing" if err["type"] == "missing" else err["msg"]
            problems.append(CsvProblem(line, column, message))


def problems_by_line(
    lines: Sequence[int], problems: Sequence[tuple[Sequence[str | int], str]]
) -> list[CsvProblem]:
    """Config problems inside the imported tag list (paths relative to it: index, field) as CSV
    lines and columns; `lines[i]` is the CSV line of row i."""
    out: list[CsvProblem] = []
    for path, message in problems:
        if path and isinstance(path[0], int) and 0 <= path[0] < len(lines):
            column = ".".join(str(p) for p in path[1:])
            out.append(CsvProblem(lines[path[0]], column, message))
        else:
            out.append(CsvProblem(0, ".".join(str(p) for p in path), message))
    return out
