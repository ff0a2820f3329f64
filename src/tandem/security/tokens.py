"""Machine tokens: random bearer tokens with a role, stored only as hashes in the data dir.

A token reads ``tdm_<id>_<secret>``: the id finds the entry, the secret is 32 random bytes.
Only SHA-256 of the whole token is stored. A fast hash is right here (unlike passwords): the
token has 256 bits of entropy, so there is nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.security.roles import Role
from tandem.security.store import Document, JsonStore, StoreError

TOKENS_FILE = "tokens.json"
PREFIX = "tdm_"
TOKEN_PATTERN = re.compile(r"^tdm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
DAY_S = 86400.0


class TokenError(StoreError):
    """A token command that cannot be done (unknown id or name, duplicate name)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown of a token: never its secret."""

    id: str
    name: str
    role: Role
    created: float
    expires: float | None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_document(doc: Document) -> None:
    tokens = doc.get("tokens", {})
    if not isinstance(tokens, dict):
        raise ValueError("tokens must be an object")
    for token_id, entry in tokens.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ValueError(f"token {token_id!r}: no hash")
        Role(str(entry.get("role")))


def _info(token_id: str, entry: dict[str, Any]) -> TokenInfo:
    expires = entry.get("expires")
    return TokenInfo(
        token_id,
        str(entry.get("name", token_id)),
        Role(entry["role"]),
        float(entry.get("created", 0.0)),
        None if expires is None else float(expires),
    )


class TokenStore:
    """tokens.json: {"tokens": {id: {"name", "role", "sha256", "created", "expires"}}}."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / TOKENS_FILE
        self._store = JsonStore(self.path, _check_document)

    def list(self) -> list[TokenInfo]:
        tokens = self._store.load().get("tokens", {})
        return sorted((_info(i, e) for i, e in tokens.items()), key=lambda t: t.created)

    def create(
        self, role: Role, name: str | None = None, expires_days: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token; the secret string is returned once and never stored."""
        token_id = secrets.token_hex(6)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        name = name or f"token-{token_id}"
        if not NAME_PATTERN.match(name):
            raise TokenError(f"bad token name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ : -")
        if expires_days is not None and expires_days <= 0:
            raise TokenError("--expires must be a positive number of days")
        now = time.time()
        expires = None if expires_days is None else now + expires_days * DAY_S
        with self._store.editing() as doc:
            tokens = doc.setdefault("tokens", {})
            if any(e.get("name") == name for e in tokens.values()):
                raise TokenError(f"a token named {name!r} exists already")
            tokens[token_id] = {
                "name": name,
                "role": role.value,
                "sha256": _digest(token),
                "created": now,
                "expires": expires,
            }
        return TokenInfo(token_id, name, role, now, expires), token

    def revoke(self, id_or_name: str) -> TokenInfo:
        with self._store.editing() as doc:
            tokens = doc.get("tokens", {})
            found = [i for i, e in tokens.items() if id_or_name in (i, e.get("name"))]
            if not found:
                raise TokenError(f"no token with id or name {id_or_name!r}")
            return _info(found[0], tokens.pop(found[0]))

    def check(self, token: str, now: float | None = None) -> TokenInfo | None:
        """The token's entry if it is valid now; None for anything else (never raises)."""
        match = TOKEN_PATTERN.match(token)
        if match is None:
            return None
        entry = self._store.current().get("tokens", {}).get(match.group(1))
        if not isinstance(entry, dict):
            return None
        if not hmac.compare_digest(str(entry.get("sha256", "")), _digest(token)):
            return None
        info = _info(match.group(1), entry)
        return None if info.expired(time.time() if now is None else now) else info


def create_token(data_dir: Path, role: Role | str = Role.VIEWER, name: str | None = None) -> str:
    """A token for a node's data dir, usable before or while the node runs (tests, benches)."""
    _, token = TokenStore(data_dir).create(Role(role), name)
    return token
