"""The fencing term: a counter persisted before it is used, so no two masterships share one."""

from __future__ import annotations

import json
from pathlib import Path

from tandem.files import write_atomic


class TermStore:
    """Keeps the highest term this node has acquired, on disk, written atomically with fsync.

    A term is written before the first message carrying it is published: a node that crashes
    and restarts can never reuse a term another node may already have seen.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._term = self._read()

    @property
    def term(self) -> int:
        return self._term

    def acquire(self, at_least: int) -> int:
        """A new term above both our own and every term seen anywhere (`at_least`)."""
        new = max(self._term, at_least) + 1
        self._write(new)
        self._term = new
        return new

    def _read(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["term"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: corrupt term file ({exc}); refusing to guess") from exc

    def _write(self, term: int) -> None:
        write_atomic(self.path, json.dumps({"term": term}), mode=0o600)
