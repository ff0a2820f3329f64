"""Secrets out of anything shown: config answers, status, logs."""

from __future__ import annotations

from typing import Any

REDACTED = "<redacted>"
# A key whose name contains one of these holds (or points at) a secret.
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "credential", "auth_pass")


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-named field's value replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_name(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
