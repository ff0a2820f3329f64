"""Which shared config a node runs: the shared sections, their digest, versions, transfers.

Pure functions and small file readers used by config sync (ha/configsync.py) and by status;
see that module for what is shared and the precedence rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.config.hub import TandemConfig, validate_mapping
from tandem.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)

SHARED_SECTIONS: tuple[str, ...] = ("devices", "mqtt", "outbox")
VERSION_FILE = "config-version.json"
SYNCED_FILE = "synced-config.json"
SYNC_SOURCE = "<synced config>"

Shared = dict[str, Any]


# ---- pure: digests, stamps, merging -------------------------------------------------------------


def shared_sections(cfg: TandemConfig) -> Shared:
    """The sections both nodes must agree on, as plain JSON values."""
    data = cfg.model_dump(mode="json")
    return {name: data[name] for name in SHARED_SECTIONS}


def canonical(shared: Shared) -> str:
    return json.dumps(shared, sort_keys=True, separators=(",", ":"))


def shared_digest(shared: Shared) -> str:
    return hashlib.sha256(canonical(shared).encode()).hexdigest()


def config_sha(cfg: TandemConfig) -> str:
    return shared_digest(shared_sections(cfg))


@dataclass(frozen=True, slots=True)
class ConfigStamp:
    """Which shared config a node runs: a version for people, a digest for comparison."""

    version: int
    sha: str

    @property
    def label(self) -> str:
        return stamp_label(self.version, self.sha)


def stamp_label(version: int, sha: str) -> str:
    """How status shows a config: ``v3 1a2b3c4d5e6f``."""
    return f"v{version} {sha[:12]}"


def next_stamp(previous: ConfigStamp | None, sha: str, *, at_least: int = 0) -> ConfigStamp:
    """The stamp after a local change: the same one if the digest did not change.

    ``at_least`` is the highest version seen elsewhere (the peer), so a new master's first edit
    does not reuse a number the old master already gave out.
    """
    if previous is not None and previous.sha == sha:
        return previous
    base = max(previous.version if previous is not None else 0, at_least)
    return ConfigStamp(base + 1, sha)


def with_shared(cfg: TandemConfig, shared: Shared, source: str = SYNC_SOURCE) -> TandemConfig:
    """This node's local fields with the given shared sections, validated like a config file.

    Raises ConfigError with every problem (no lines: the sections did not come from a file).
    """
    if not isinstance(shared, dict) or set(shared) != set(SHARED_SECTIONS):
        got = sorted(shared) if isinstance(shared, dict) else type(shared).__name__
        raise ConfigError(
            [
                ConfigProblem(
                    source, None, "", f"expected sections {list(SHARED_SECTIONS)}, got {got}"
                )
            ]
        )
    data = cfg.model_dump(mode="json")
    data.update(shared)
    return validate_mapping(
        data, lambda path, message: ConfigProblem(source, None, _dotted(path), message)
    )


def _dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def identity_problem(current: TandemConfig, new: TandemConfig, file: str) -> ConfigProblem | None:
    """A config for another node must never be applied here (a copied file, a wrong PUT)."""
    if new.node != current.node:
        return ConfigProblem(
            file, None, "node", f"node identity cannot change ({current.node!r} -> {new.node!r})"
        )
    return None


def local_fields_changed(current: TandemConfig, new: TandemConfig) -> list[str]:
    """Node-local sections that differ: they are not applied live and need a restart."""
    a, b = current.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(
        k for k in a.keys() | b.keys() if k not in SHARED_SECTIONS and a.get(k) != b.get(k)
    )


@dataclass(frozen=True, slots=True)
class Transfer:
    """A config received from the peer, already checked against its own and the advertised sha."""

    version: int
    sha: str
    shared: Shared


class TransferRejected(Exception):
    """A received config that must not be applied; the message is the reason."""


def check_transfer(body: Any, advertised_sha: str) -> Transfer:
    """Verify a GET /api/v1/peer/config answer; raises TransferRejected with the reason."""
    if not isinstance(body, dict) or not isinstance(body.get("shared"), dict):
        raise TransferRejected("corrupted transfer: no shared sections in the answer")
    version, sha, shared = body.get("version"), body.get("sha"), body["shared"]
    if not isinstance(version, int) or not isinstance(sha, str):
        raise TransferRejected("corrupted transfer: version or sha missing")
    actual = shared_digest(shared)
    if actual != sha:
        raise TransferRejected(
            f"corrupted transfer: content digest {actual[:12]} != stated sha {sha[:12]}"
        )
    if sha != advertised_sha:
        raise TransferRejected(
            f"corrupted transfer: sha {sha[:12]} != advertised {advertised_sha[:12]}"
        )
    return Transfer(version, sha, shared)


# ---- files --------------------------------------------------------------------------------------


def read_version_file(path: Path) -> ConfigStamp | None:
    try:
        data = json.loads(path.read_text())
        version, sha = data["version"], data["sha"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(version, int) or not isinstance(sha, str):
        return None
    return ConfigStamp(version, sha)


def read_synced_file(path: Path) -> Transfer | None:
    """The synced config if the file exists and is intact; a damaged file is ignored (logged)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        stated = data.get("sha") if isinstance(data, dict) else None
        return check_transfer(data, stated if isinstance(stated, str) else "")
    except (OSError, ValueError, TransferRejected) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
