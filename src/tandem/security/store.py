"""A small private JSON document on disk, re-read when another process changes it.

The users and token stores live in the node's data dir and are edited by the `tandem user` and
`tandem token` commands while the node runs; the node sees a change on its next request (one
stat per request), so a new or revoked credential counts at once, without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tandem.errors import TandemError
from tandem.files import write_atomic

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600  # credential files: readable by the node's own user only

Document = dict[str, Any]
StatKey = tuple[int, int, int, int]


class StoreError(TandemError):
    """A credential store that cannot be read or written; the message names the file."""


def _stat_key(path: Path) -> StatKey | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


class JsonStore:
    """One JSON object in a 0600 file, written atomically under an advisory lock."""

    def __init__(self, path: Path, check: Callable[[Document], None]) -> None:
        self.path = path
        self._check = check  # raises ValueError for a document of the wrong shape
        self._key: StatKey | None = None
        self._doc: Document = {}
        self._loaded = False

    def _parse(self, text: str) -> Document:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("the top level must be an object")
        self._check(doc)
        return doc

    def load(self) -> Document:
        """The document as on disk (re-read only after a change); raises StoreError."""
        key = _stat_key(self.path)
        if self._loaded and key == self._key:
            return self._doc
        if key is None:
            doc: Document = {}
        else:
            try:
                doc = self._parse(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StoreError(f"{self.path}: unreadable: {exc}") from exc
        self._doc, self._key, self._loaded = doc, key, True
        return doc

    def current(self) -> Document:
        """Like load(), for a running node: a damaged file means no credentials (logged once).

        The empty document is cached until the file changes again, so a broken file costs one
        log line, not one per request.
        """
        try:
            return self.load()
        except StoreError as exc:
            log.error("%s; refusing every credential it held until it is fixed", exc)
            self._doc, self._key, self._loaded = {}, _stat_key(self.path), True
            return self._doc

    @contextlib.contextmanager
    def editing(self) -> Iterator[Document]:
        """Read, let the caller change the document, write it back: one writer at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._loaded = False
            doc = self.load()
            edited = json.loads(json.dumps(doc))  # a deep copy: a failed edit changes nothing
            yield edited
            self._check(edited)
            try:
                write_atomic(self.path, json.dumps(edited, indent=1) + "\n", mode=PRIVATE_MODE)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
            self._loaded = False
        finally:
            os.close(fd)
