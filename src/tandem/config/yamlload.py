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


# A document that expands (through aliases) to more nodes than this is refused before it is
# built: a few lines of nested aliases otherwise take minutes and gigabytes to validate
# ("billion laughs"). A 100,000-tag config is about 1.5 million nodes.
MAX_EXPANDED_NODES = 5_000_000
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Walker:
    """Records lines for every key and item, and rejects what PyYAML would accept silently or
    fail on later: duplicate keys (PyYAML keeps the last, hiding a typo), an alias inside the
    node it names (a recursive structure no validator can walk), alias bombs, and timestamps
    that are not dates (PyYAML raises a bare ValueError while building them).

    An aliased node is walked once, where it is defined (YAML defines an anchor before any
    alias to it); a later alias only adds its size to the expansion count, so the walk stays
    linear in the text and its problems point at the definition.
    """

    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[FieldPath, int] = {}
        self.problems: list[ConfigProblem] = []
        self.expanded = 0
        self._ancestors: set[int] = set()
        self._sizes: dict[int, int] = {}  # a container walked already -> its expanded size

    def _problem(self, node: yaml.Node, path: FieldPath, message: str) -> None:
        self.problems.append(
            ConfigProblem(self.file, node.start_mark.line + 1, format_path(path), message)
        )

    @property
    def too_large(self) -> bool:
        return self.expanded > MAX_EXPANDED_NODES

    def walk(self, node: yaml.Node, path: FieldPath) -> None:
        """Walk `node`, adding its expanded size to the count; stops once it is too large."""
        if isinstance(node, yaml.ScalarNode):
            self.expanded += 1
            self._check_scalar(node, path)
        elif id(node) in self._ancestors:
            self._problem(node, path, "an alias refers to the node that contains it")
            return
        elif id(node) in self._sizes:
            self.expanded += self._sizes[id(node)]
        else:
            before = self.expanded + 1
            self.expanded = before
            self._ancestors.add(id(node))
            if isinstance(node, yaml.MappingNode):
                self._walk_mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                self._walk_sequence(node, path)
            self._ancestors.discard(id(node))
            self._sizes[id(node)] = self.expanded - before + 1
        if self.too_large and not self.problems:
            limit = f"{MAX_EXPANDED_NODES:,}"
            self._problem(node, path, f"the document expands to more than {limit} nodes")

    def _walk_sequence(self, node: yaml.SequenceNode, path: FieldPath) -> None:
        for index, item in enumerate(node.value):
            if self.too_large:
                return
            child = (*path, index)
            self.lines[child] = item.start_mark.line + 1
            self.walk(item, child)

    def _walk_mapping(self, node: yaml.MappingNode, path: FieldPath) -> None:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if self.too_large:
                return
            scalar = isinstance(key_node, yaml.ScalarNode)
            key = key_node.value if scalar else f"<{type(key_node).__name__}>"
            line = key_node.start_mark.line + 1
            child: FieldPath = (*path, key)
            if key in seen:
                message = f"duplicate key {key!r} (first given on line {seen[key]})"
                self.problems.append(ConfigProblem(self.file, line, format_path(child), message))
                continue
            seen[key] = line
            self.lines[child] = line
            self.walk(value_node, child)

    def _check_scalar(self, node: yaml.ScalarNode, path: FieldPath) -> None:
        if node.tag != _TIMESTAMP:
            return
        try:
            self.loader.construct_yaml_timestamp(node)
        except (ValueError, OverflowError) as exc:
            self._problem(node, path, f"invalid date or time {node.value!r}: {exc}")


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
            walker = _Walker(loader, file)
            walker.lines[()] = root.start_mark.line + 1
            walker.walk(root, ())
            if walker.problems:
                raise YamlSyntaxError(walker.problems)
            lines = walker.lines
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
    except (ValueError, OverflowError, RecursionError) as exc:  # a constructor PyYAML lets raise
        message = f"invalid YAML value: {type(exc).__name__}: {exc}"
        raise YamlSyntaxError([ConfigProblem(file, None, "", message)]) from exc
    return LocatedDocument(file=file, data=data, lines=lines)
