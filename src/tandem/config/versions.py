"""Versions of the config file: who changed it, when, the diff, and the whole text to restore.

A directory in the data dir, three files a version (metadata, YAML text, diff), each written
atomically; the newest `keep` versions stay. Listing reads only the small metadata files.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tandem.config.edit import unified
from tandem.files import write_atomic

log = logging.getLogger(__name__)

VERSIONS_DIR = "config-versions"
KEEP = 200
_META = re.compile(r"^(\d{6,})\.json$")


@dataclass(frozen=True, slots=True)
class VersionMeta:
    id: int
    at: float  # unix seconds
    who: str  # the user or token name, or "file" for the text found on disk
    action: str  # what was done, e.g. "PUT device plc1", "restore of version 3"
    sha: str  # sha256 of the YAML text
    lines_added: int
    lines_removed: int


@dataclass(frozen=True, slots=True)
class Version:
    meta: VersionMeta
    text: str
    diff: str


def _counts(diff: str) -> tuple[int, int]:
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


class VersionStore:
    """The version directory of one node; ids only grow, the oldest are dropped past `keep`."""

    def __init__(self, data_dir: Path, keep: int = KEEP) -> None:
        self.dir = data_dir / VERSIONS_DIR
        self.keep = keep
        self._latest: int | None = None  # newest id, once known (only this store adds)

    def latest_id(self) -> int | None:
        """The newest version's id without reading a file after the first call (pages poll it)."""
        if self._latest is None:
            ids = self._ids()
            self._latest = ids[-1] if ids else None
        return self._latest

    def _ids(self) -> list[int]:
        try:
            names = [p.name for p in self.dir.iterdir()]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _META.match(n)))

    def _base(self, ident: int) -> Path:
        return self.dir / f"{ident:06d}"

    def list(self) -> list[VersionMeta]:
        """Newest first; a damaged metadata file is skipped (logged), not fatal."""
        out: list[VersionMeta] = []
        for ident in reversed(self._ids()):
            meta = self._meta(ident)
            if meta is not None:
                out.append(meta)
        return out

    def _meta(self, ident: int) -> VersionMeta | None:
        path = self._base(ident).with_suffix(".json")
        try:
            return VersionMeta(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("config version %s unreadable: %s", path, exc)
            return None

    def get(self, ident: int) -> Version | None:
        meta = self._meta(ident)
        if meta is None:
            return None
        base = self._base(ident)
        try:
            text = base.with_suffix(".yaml").read_text(encoding="utf-8")
            diff = base.with_suffix(".diff").read_text(encoding="utf-8")
        except OSError as exc:
            log.warning("config version %s unreadable: %s", base, exc)
            return None
        return Version(meta, text, diff)

    def latest(self) -> Version | None:
        ids = self._ids()
        return self.get(ids[-1]) if ids else None

    def add(
        self,
        text: str,
        who: str,
        action: str,
        now: float | None = None,
        known: tuple[str, str] | None = None,
    ) -> VersionMeta:
        """Record `text` as the newest version, its diff against the one before.

        `known` is (a text, the hunks from it to `text`), computed elsewhere (the edit's worker
        process): used when that text is the previous version's, instead of diffing again.
        """
        ids = self._ids()
        previous = self.get(ids[-1]) if ids else None
        ident = (ids[-1] + 1) if ids else 1
        old_text = previous.text if previous is not None else ""
        old_label = f"v{previous.meta.id}" if previous is not None else "empty"
        if known is not None and known[0] == old_text and old_text != text:
            diff = f"--- {old_label}\n+++ v{ident}\n{known[1]}"
        else:
            diff = unified(old_text, text, old_label, f"v{ident}")
        added, removed = _counts(diff)
        meta = VersionMeta(
            id=ident,
            at=time.time() if now is None else now,
            who=who,
            action=action,
            sha=hashlib.sha256(text.encode()).hexdigest(),
            lines_added=added,
            lines_removed=removed,
        )
        base = self._base(ident)
        # Text and diff first: a metadata file always has both behind it.
        write_atomic(base.with_suffix(".yaml"), text, mode=0o600)
        write_atomic(base.with_suffix(".diff"), diff, mode=0o600)
        write_atomic(base.with_suffix(".json"), json.dumps(asdict(meta)), mode=0o600)
        self._prune([*ids, ident])
        self._latest = ident
        return meta

    def _prune(self, ids: builtins.list[int]) -> None:
        for old in ids[: max(0, len(ids) - self.keep)]:
            base = self._base(old)
            for suffix in (".json", ".yaml", ".diff"):
                base.with_suffix(suffix).unlink(missing_ok=True)
