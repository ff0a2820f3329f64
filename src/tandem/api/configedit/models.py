"""The answers of the config editing routes (their shapes in /openapi.json)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict

from tandem.config.versions import VersionMeta


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


def version_out(meta: VersionMeta) -> VersionOut:
    return VersionOut(**asdict(meta))
