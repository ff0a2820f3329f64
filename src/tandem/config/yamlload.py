"""YAML parsing that remembers the source line of every field, so config errors can point at it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tandem.errors import ConfigProblem

FieldPath = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """Render a path the way a person reads it: ``devices[0].groups[1].tags[3].address``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append(f".{part}")
        else:
            out.append(str(part))
    return "".join(out)


@dataclass(slots=True)
class LocatedDocument:
    """A parsed YAML document plus the 1-based line where each field path starts."""

    file: str
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest part of ``path`` that exists in the file.

        A missing field has no line of its own; its parent's line is the next best pointer.
        """
        parts = tuple(path)
        while True:
            line = self.lines.get(parts)
            if line is not None:
                return line
            if not parts:
                return None
            parts = parts[:-1]

    def problem(self, path: Sequence[str | int], message: str) -> ConfigProblem:
        return ConfigProblem(self.file, self.line_of(path), format_path(path), message)


class YamlSyntaxError(Exception):
    """The text is not YAML we accept; carries the located problems."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    problems: list[ConfigProblem],
    file: str,
) -> None:
    """Record lines for every key and item, and reject duplicate keys.

    PyYAML silently keeps the last of two equal keys; in a config that hides a typo, so it is
    an error here.
    """
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            child: FieldPath = (*path, key)
            if key in seen:
                problems.append(
                    ConfigProblem(
                        file,
                        line,
                        format_path(child),
                        f"duplicate key {key!r} (first given on line {seen[key]})",
                    )
                )
                continue
            seen[key] = line
            lines[child] = line
            _walk(value_node, child, lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, problems, file)


def load_located(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document with SafeLoader semantics and a line for every field path.

    Raises YamlSyntaxError for malformed YAML, an empty document or duplicate keys.
    """
    # libyaml when present: ~15x faster on large tag lists and less memory left behind.
    loader = (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                raise YamlSyntaxError([ConfigProblem(file, 1, "", "the file is empty")])
            problems: list[ConfigProblem] = []
            lines: dict[FieldPath, int] = {(): root.start_mark.line + 1}
            _walk(root, (), lines, problems, file)
            if problems:
                raise YamlSyntaxError(problems)
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = f"invalid YAML: {exc.problem or exc.context or exc}"
        raise YamlSyntaxError([ConfigProblem(file, line, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError([ConfigProblem(file, None, "", f"invalid YAML: {exc}")]) from exc
    return LocatedDocument(file=file, data=data, lines=lines)
