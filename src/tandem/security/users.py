"""People who may log in: names, roles and argon2id password hashes in the node's data dir."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tandem.security.roles import Role
from tandem.security.store import Document, JsonStore, StoreError

USERS_FILE = "users.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 takes anything; a bound keeps a login request small

# RFC 9106's low-memory profile (argon2id, t=3, 64 MiB) on one lane: four lanes would take
# four threads, and both cores of a small gateway, from the pollers for every login attempt.
_HASHER = PasswordHasher(parallelism=1)


def _lower_own_priority() -> None:
    """Password checks run at nice 19 (this thread only, on Linux): polling wins the CPU."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# One thread for every password check: at most one hash at a time, at the lowest priority.
PASSWORD_CHECKS = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="password", initializer=_lower_own_priority
)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so an unknown name costs the same time
    as a wrong password. Made on first use, not at import: a hash costs a second of CPU on a
    busy machine, and every node start would pay it."""
    return _HASHER.hash("no such user: the same work as a real check")


class UserError(StoreError):
    """A user command that cannot be done (exists, unknown, weak password, bad name)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    created: float


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UserError(f"bad user name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")
    return password


def _check_document(doc: Document) -> None:
    users = doc.get("users", {})
    if not isinstance(users, dict):
        raise ValueError("users must be an object")
    for name, entry in users.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
            raise ValueError(f"user {name!r}: no password hash")
        Role(str(entry.get("role")))


def _user(name: str, entry: dict[str, Any]) -> User:
    return User(name, Role(entry["role"]), float(entry.get("created", 0.0)))


class UserStore:
    """users.json: {"users": {name: {"role", "hash", "created"}}}, mode 0600."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / USERS_FILE
        self._store = JsonStore(self.path, _check_document)

    def _users(self, *, strict: bool) -> dict[str, Any]:
        doc = self._store.load() if strict else self._store.current()
        users: dict[str, Any] = doc.get("users", {})
        return users

    def list(self) -> list[User]:
        return [_user(n, e) for n, e in sorted(self._users(strict=True).items())]

    def get(self, name: str) -> User | None:
        """The user as the file says now; None when unknown or the file is damaged."""
        entry = self._users(strict=False).get(name)
        return None if entry is None else _user(name, entry)

    def add(self, name: str, role: Role, password: str) -> User:
        check_name(name)
        hashed = _HASHER.hash(check_password(password))
        with self._store.editing() as doc:
            users = doc.setdefault("users", {})
            if name in users:
                raise UserError(f"user {name!r} already exists (use `tandem user passwd`)")
            users[name] = {"role": role.value, "hash": hashed, "created": time.time()}
        return User(name, role, users[name]["created"])

    def set_password(self, name: str, password: str) -> None:
        hashed = _HASHER.hash(check_password(password))
        with self._store.editing() as doc:
            entry = doc.get("users", {}).get(name)
            if entry is None:
                raise UserError(f"no user {name!r}")
            entry["hash"] = hashed

    def remove(self, name: str) -> None:
        with self._store.editing() as doc:
            if doc.get("users", {}).pop(name, None) is None:
                raise UserError(f"no user {name!r}")

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right; the same work (and None) for an unknown name.

        Blocking and CPU-heavy by design (argon2id): call it from a worker thread.
        """
        dummy = _dummy_hash()  # made before the lookup: the first check of any name costs it
        entry = self._users(strict=False).get(name)
        hashed = entry["hash"] if entry is not None else dummy
        try:
            _HASHER.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return None if entry is None else _user(name, entry)
