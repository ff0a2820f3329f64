"""Config sync of a pair: shared sections versioned on the master, applied live on the backup.

What is shared and what is local
    The SHARED part is the top-level sections ``devices``, ``mqtt`` and ``outbox``: both nodes
    must poll the same devices and publish the same way. Everything else (``node``,
    ``data_dir``, ``api``, ``ha``) is node-local and never travels. The shared part is compared
    by its digest: sha256 of ``json.dumps(shared, sort_keys=True, separators=(",", ":"))``, so
    key order, comments and formatting of the YAML do not matter.

Where a node's shared sections come from (precedence, highest first)
    1. ``data_dir/synced-config.json`` when it exists and is valid: what this node last
       received from the publishing master. A backup that restarts keeps running the synced
       config rather than whatever its own node.yaml says. Delete the file to fall back.
    2. The node's own config file (node.yaml).
    A local edit of the config file (or ``PUT /api/v1/config``) on a node that is not following
    a publishing master makes the file authoritative again: synced-config.json is removed.

Versions
    ``data_dir/config-version.json`` keeps {version, sha} of the config this node runs from its
    own file; the version goes up by one whenever the shared digest changes. A backup adopts
    the master's version with its config. Versions are for people; the digest decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request

from tandem.api.auth import needs, principal_of
from tandem.config.hub import TandemConfig
from tandem.config.offload import parse_config_file, parse_config_text
from tandem.errors import ConfigError, ConfigProblem
from tandem.files import write_atomic
from tandem.ha.configstamp import (
    SHARED_SECTIONS,
    SYNCED_FILE,
    VERSION_FILE,
    ConfigStamp,
    Transfer,
    TransferRejected,
    canonical,
    check_transfer,
    config_sha,
    identity_problem,
    local_fields_changed,
    next_stamp,
    read_synced_file,
    read_version_file,
    shared_digest,
    shared_sections,
    stamp_label,
    stat_key,
    with_shared,
)
from tandem.ha.peer import PeerState
from tandem.security.redact import redact
from tandem.security.roles import Access

log = logging.getLogger(__name__)


CONFIG_API = "/api/v1/config"
WATCH_INTERVAL_S = 0.5
# A rejected transfer of one digest is not retried on every advert: the log stays readable.
RETRY_REJECTED_S = 5.0
RETRY_UNREACHABLE_S = 0.5

Shared = dict[str, Any]


# ---- the component ------------------------------------------------------------------------------


class PeerConfigClient(Protocol):
    """What config sync needs from the peer link (PeerClient)."""

    async def get(self, path: str, timeout: float = 2.0) -> httpx.Response: ...


# Returns whatever the hub returns (its TimelineEvent); the value is not used.
Timeline = Callable[[str, dict[str, Any]], object]


class ConfigSync:
    """Keeps the shared config in step: file edits and PUTs on the master, fetches on the backup.

    Every change goes through `on_apply` (the hub's live reconfigure) before it counts as the
    running config; a rejected change leaves the old config running and shows in `last_error`.
    """

    def __init__(
        self,
        cfg: TandemConfig,
        config_path: Path | None,
        on_apply: Callable[[TandemConfig], Awaitable[None]],
        peer_client: PeerConfigClient | None,
        timeline: Timeline,
        *,
        peer_fresh_s: float = 2.0,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self._on_apply = on_apply
        self._peer = peer_client
        self._timeline = timeline
        # How long a peer state counts as current for "is the peer the publishing master".
        self._peer_fresh_s = peer_fresh_s
        self._version_path = cfg.data_dir / VERSION_FILE
        self._synced_path = cfg.data_dir / SYNCED_FILE
        self.require_same_config = cfg.ha.require_same_config if cfg.ha is not None else False
        self.last_error: str | None = None
        self.rejected_transfers = 0
        self.applied = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._want: tuple[str, int, str] | None = None  # (sha, version, peer node) to fetch
        self._retry_at: dict[str, float] = {}  # sha -> not fetched again before (monotonic)
        self._master_sha: str | None = None  # last digest a publishing peer advertised
        self._peer_version = 0
        self._peer_publishing_at = float("-inf")
        self._file_key = stat_key(config_path) if config_path is not None else None
        self.stamp = self._initial_stamp()
        self.on_applied: Callable[[], None] | None = None  # after every applied change
        # After a PUT /api/v1/config was applied: its text and who sent it (config versions).
        self.on_put: Callable[[str, str], Awaitable[None]] | None = None

    def _initial_stamp(self) -> ConfigStamp:
        sha = config_sha(self.cfg)
        synced = read_synced_file(self._synced_path)
        if synced is not None and synced.sha == sha:
            # effective_config() already put the synced sections in place.
            return ConfigStamp(synced.version, synced.sha)
        stamp = next_stamp(read_version_file(self._version_path), sha)
        self._persist_version(stamp)
        return stamp

    # ---- state others read ----

    @property
    def version(self) -> int:
        return self.stamp.version

    @property
    def sha(self) -> str:
        return self.stamp.sha

    @property
    def label(self) -> str:
        return self.stamp.label

    @property
    def config_ok(self) -> bool:
        """False while require_same_config is set and the master's config differs from ours.

        The controller must then refuse handovers and not acquire a term: a node that would
        poll or publish differently must not take over silently.
        """
        if not self.require_same_config:
            return True
        return self._master_sha is None or self._master_sha == self.sha

    def _following_master(self) -> bool:
        return time.monotonic() - self._peer_publishing_at <= self._peer_fresh_s

    def following_master(self) -> bool:
        """True while the peer publishes: changes belong on it, this node takes its config."""
        return self._following_master()

    def runs_synced(self) -> bool:
        """True when the running shared sections came from the master, not this node's file."""
        return self._synced_path.exists()

    # ---- start-up precedence ----

    @staticmethod
    def effective_config(cfg: TandemConfig, data_dir: Path | None = None) -> TandemConfig:
        """The config to start with: synced-config.json's shared sections win over the file's.

        A synced file that is damaged or no longer valid with this node's local fields is
        ignored (logged) and the file's own sections are used.
        """
        path = (data_dir or cfg.data_dir) / SYNCED_FILE
        synced = read_synced_file(path)
        if synced is None:
            return cfg
        try:
            merged = with_shared(cfg, synced.shared, str(path))
        except ConfigError as exc:
            log.warning("ignoring %s, not valid here: %s", path, exc)
            return cfg
        if synced.sha != config_sha(cfg):
            log.info(
                "starting with synced config %s from %s over the devices/mqtt/outbox of the "
                "config file (delete it to use the file's)",
                stamp_label(synced.version, synced.sha),
                path,
            )
        return merged

    # ---- peer side ----

    def on_peer_state(self, state: PeerState, peer_publishing: bool) -> None:
        """Every peer-link state; schedules a fetch when the peer holds a newer config."""
        self._peer_version = max(self._peer_version, state.config_version)
        if not state.config_sha:
            return
        if peer_publishing:
            self._master_sha = state.config_sha
            self._peer_publishing_at = time.monotonic()
        if state.config_sha == self.sha:
            self._want = None
            return
        # The newest version wins, whoever publishes now: a master that hands over right after
        # an edit must not get its older config back from the node it handed over to. Equal
        # versions with different content (both edited while apart): the publisher's wins.
        newer = state.config_version > self.version
        if not (newer or (peer_publishing and state.config_version == self.version)):
            return
        if time.monotonic() < self._retry_at.get(state.config_sha, float("-inf")):
            return
        if self._want is None or self._want[0] != state.config_sha:
            self._want = (state.config_sha, state.config_version, state.node)
            self._wake.set()

    async def sync_once(self, advertised_sha: str, peer: str) -> bool:
        """Fetch the peer's config, check it, persist it, apply it. True if applied."""
        assert self._peer is not None
        try:
            response = await self._peer.get("/config")
            response.raise_for_status()
            transfer = check_transfer(response.json(), advertised_sha)
            # Validating thousands of tags takes a while: in a thread, the hub keeps polling.
            merged = await asyncio.to_thread(
                with_shared, self.cfg, transfer.shared, f"config from {peer}"
            )
        except (httpx.HTTPError, OSError, ValueError) as exc:
            # Not counted as a rejection: the peer link may just be down for a moment.
            self._note_error(f"config fetch from {peer} failed: {exc}", timeline=False)
            self._retry_at[advertised_sha] = time.monotonic() + RETRY_UNREACHABLE_S
            return False
        except (TransferRejected, ConfigError) as exc:
            self.rejected_transfers += 1
            self._retry_at[advertised_sha] = time.monotonic() + RETRY_REJECTED_S
            self._note_error(
                f"config from {peer} rejected, keeping v{self.version}: {exc}", timeline=True
            )
            return False
        async with self._lock:
            if transfer.sha == self.sha:
                return False
            # Stored before it is applied, so a crash mid-apply restarts with the new config;
            # an apply that fails puts the previous synced file back.
            previous = self._synced_path.read_text() if self._synced_path.exists() else None
            write_atomic(
                self._synced_path,
                json.dumps(
                    {"version": transfer.version, "sha": transfer.sha, "shared": transfer.shared}
                ),
            )
            try:
                await self._apply(
                    merged, ConfigStamp(transfer.version, transfer.sha), f"from {peer}"
                )
            except BaseException:
                if previous is None:
                    self._synced_path.unlink(missing_ok=True)
                else:
                    write_atomic(self._synced_path, previous)
                raise
        return True

    # ---- local edits ----

    async def reload_file(self) -> bool:
        """Re-read the config file after a change; True if a new shared config was applied."""
        assert self.config_path is not None
        self._file_key = stat_key(self.config_path)
        try:
            new = await parse_config_file(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config change rejected: %s", problem)
            self._note_error(
                f"{self.config_path} is invalid, keeping v{self.version}: {exc}", timeline=True
            )
            return False
        return await self._local_change(new, "file")

    async def _local_change(self, new: TandemConfig, source: str) -> bool:
        problem = identity_problem(self.cfg, new, str(self.config_path))
        if problem is not None:
            self._note_error(f"config change rejected: {problem}", timeline=True)
            return False
        changed_local = local_fields_changed(self.cfg, new)
        if changed_local:
            log.warning("config: %s changed; node-local sections apply at restart", changed_local)
        # In a thread: at 10,000 tags hashing takes ~100 ms; there the GIL's switch interval
        # gives the pollers a turn every fraction of a millisecond (prefer_the_loop), not one stall.
        sha = await asyncio.to_thread(config_sha, new)
        if sha == self.sha:
            self.last_error = None
            return False
        if self._following_master():
            self._note_error(
                f"config {source} changed on the backup: the publishing master's config stays "
                "in force (edit the master)",
                timeline=True,
            )
            return False
        async with self._lock:
            merged = await asyncio.to_thread(
                with_shared, self.cfg, shared_sections(new), str(self.config_path)
            )
            stamp = next_stamp(self.stamp, sha, at_least=self._peer_version)
            await self._apply(merged, stamp, f"from {source}")
            self._persist_version(stamp)
            # The file is authoritative again: a restart must not go back to the synced copy.
            with contextlib.suppress(FileNotFoundError):
                self._synced_path.unlink()
        return True

    async def put_config(self, text: str) -> ConfigStamp:
        """PUT /api/v1/config: validate, check identity, write the file atomically, apply.

        Raises ConfigError (every problem) for a config that must not be written.
        """
        if self.config_path is None:
            raise ConfigError(
                [ConfigProblem("<request>", None, "", "this node has no config file")]
            )
        file = str(self.config_path)
        new = await parse_config_text(text, file)
        problem = identity_problem(self.cfg, new, file)
        if problem is not None:
            raise ConfigError([problem])
        if self._following_master() and config_sha(new) != self.sha:
            raise ConfigError(
                [
                    ConfigProblem(
                        file, None, "", "this node follows a publishing master: edit the master"
                    )
                ]
            )
        # Through a symlink to the real file: replacing the link would cut it off.
        write_atomic(self.config_path.resolve(), text)
        self._file_key = stat_key(self.config_path)
        await self._local_change(new, "API")
        return self.stamp

    # ---- applying ----

    async def _apply(self, cfg: TandemConfig, stamp: ConfigStamp, source: str) -> None:
        old = self.stamp
        await self._on_apply(cfg)
        self.cfg = cfg
        self.stamp = stamp
        self.applied += 1
        self.last_error = None
        self._retry_at.pop(stamp.sha, None)
        message = f"config v{stamp.version} applied {source}"
        log.info("%s (%s -> %s)", message, old.label, stamp.label)
        self._timeline(
            message, {"version": stamp.version, "sha": stamp.sha, "previous": old.version}
        )
        if self.on_applied is not None:
            self.on_applied()

    def _persist_version(self, stamp: ConfigStamp) -> None:
        try:
            write_atomic(
                self._version_path, json.dumps({"version": stamp.version, "sha": stamp.sha})
            )
        except OSError as exc:
            log.warning("cannot write %s: %s", self._version_path, exc)

    def _note_error(self, message: str, *, timeline: bool) -> None:
        if message != self.last_error:
            log.warning("%s", message)
            if timeline:
                self._timeline(message, {"error": True})
        self.last_error = message

    # ---- running ----

    async def run(self) -> None:
        """The file watcher and the fetch worker, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            if self.config_path is not None:
                tg.create_task(self._watch_file(), name="config-watch")
            if self._peer is not None:
                tg.create_task(self._fetch_worker(), name="config-fetch")

    async def _watch_file(self) -> None:
        assert self.config_path is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            key = stat_key(self.config_path)
            if key is not None and key != self._file_key:
                try:
                    await self.reload_file()
                except Exception:
                    log.exception("config reload failed; keeping v%s", self.version)

    async def _fetch_worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            want, self._want = self._want, None
            if want is None or want[0] == self.sha:
                continue
            sha, _, peer = want
            try:
                await self.sync_once(sha, peer)
            except Exception:
                log.exception("config sync from %s failed; keeping v%s", peer, self.version)
                self._retry_at[sha] = time.monotonic() + RETRY_REJECTED_S

    # ---- HTTP ----

    def body(self) -> dict[str, Any]:
        return {"version": self.version, "sha": self.sha, "shared": shared_sections(self.cfg)}

    def routes(self, router: APIRouter, auth: Callable[[str | None], None]) -> None:
        """GET /api/v1/peer/config on the peer router (the `extra` hook), with its auth."""

        @router.get("/config")
        async def peer_config(authorization: str | None = Header(default=None)) -> dict[str, Any]:
            auth(authorization)
            return self.body()

    def main_routes(self, app: FastAPI) -> None:
        """GET /api/v1/config (viewer, secrets redacted) and PUT (admin, a larger body limit).

        The API's security middleware checks the caller before the body is read; the peer
        gets the unredacted sections only on its own link (GET /api/v1/peer/config).
        """
        security = getattr(app.state, "security", None)
        limit = security.limits.max_config_body if security is not None else None

        @app.get(CONFIG_API, dependencies=[needs(Access.VIEWER)])
        async def get_config() -> dict[str, Any]:
            return dict(redact(self.body()))

        @app.put(CONFIG_API, dependencies=[needs(Access.ADMIN, max_body=limit)])
        async def put_config(request: Request) -> dict[str, Any]:
            raw = await request.body()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HTTPException(400, {"problems": [f"body is not UTF-8: {exc}"]}) from exc
            try:
                stamp = await self.put_config(text)
            except ConfigError as exc:
                raise HTTPException(400, {"problems": [str(p) for p in exc.problems]}) from exc
            principal = principal_of(request.scope)
            log.info("config v%s put by %s", stamp.version, principal.key if principal else "?")
            if self.on_put is not None:
                await self.on_put(text, principal.name if principal else "?")
            return {"version": stamp.version, "sha": stamp.sha}


__all__ = [
    "SHARED_SECTIONS",
    "ConfigStamp",
    "ConfigSync",
    "Transfer",
    "TransferRejected",
    "canonical",
    "check_transfer",
    "config_sha",
    "next_stamp",
    "shared_digest",
    "shared_sections",
    "stamp_label",
    "with_shared",
]
