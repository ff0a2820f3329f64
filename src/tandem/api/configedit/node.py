"""What the config editor needs from the node: its file, its one apply path, read now."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tandem.config.edit import EditError, EditFailure, Scope
from tandem.config.hub import TandemConfig
from tandem.config.offload import parse_config_text
from tandem.errors import ConfigError, ConfigProblem
from tandem.files import write_atomic
from tandem.ha.configstamp import (
    config_sha,
    identity_problem,
    local_fields_changed,
    shared_sections,
    with_shared,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Master:
    """The node that takes changes, when this one does not."""

    node: str | None
    url: str


class ConfigTarget(Protocol):
    """The node's config file and its one way of applying a new one."""

    config_path: Path

    def running(self) -> TandemConfig: ...

    def master(self) -> Master | None:
        """None when this node takes changes; else the master that does."""

    def synced(self) -> TandemConfig | None:
        """The running config when its shared sections came from the master, not the file."""

    def digest(self) -> str:
        """A digest of the running shared config: a page polls it to see a change."""

    async def write(self, text: str) -> None:
        """Validate, write atomically and apply; ConfigError if it must not be."""


class DeviceReader(Protocol):
    async def read_now(self, device: str, group: str) -> ReadResult: ...


@dataclass(frozen=True, slots=True)
class ReadResult:
    values: dict[str, Any]
    errors: dict[str, int]
    latency_ms: float


class SingleTarget:
    """A node without a pair: the file is written and the hub reconfigured directly."""

    def __init__(self, config_path: Path, hub: Any) -> None:
        self.config_path = config_path
        self._hub = hub
        self._digest: tuple[TandemConfig, str] | None = None

    def running(self) -> TandemConfig:
        cfg: TandemConfig = self._hub.config
        return cfg

    def master(self) -> Master | None:
        return None

    def synced(self) -> TandemConfig | None:
        return None

    def digest(self) -> str:
        cfg = self.running()
        if self._digest is None or self._digest[0] is not cfg:
            self._digest = (cfg, config_sha(cfg))
        return self._digest[1]

    async def write(self, text: str) -> None:
        file = str(self.config_path)
        new = await parse_config_text(text, file)
        current = self.running()
        # Dumps and checks of a whole config take a while at 10,000 tags: off the hub's loop.
        merged = await asyncio.to_thread(self._merged, current, new, file)
        # Through a symlink to the real file: replacing the link would cut it off.
        await asyncio.to_thread(write_atomic, self.config_path.resolve(), text)
        await self._hub.reconfigure(merged)
        digest = await asyncio.to_thread(self.digest)
        self._hub.add_timeline("config", "config applied from the API", {"sha": digest})

    @staticmethod
    def _merged(current: TandemConfig, new: TandemConfig, file: str) -> TandemConfig:
        """The running config with the new shared sections; node-local ones apply at restart."""
        problem = identity_problem(current, new, file)
        if problem is None and new.data_dir != current.data_dir:
            problem = ConfigProblem(file, None, "data_dir", "data_dir cannot change while running")
        if problem is not None:
            raise ConfigError([problem])
        changed_local = local_fields_changed(current, new)
        if changed_local:
            log.warning("config: %s changed; node-local sections apply at restart", changed_local)
        return with_shared(current, shared_sections(new), file)


class HubReader:
    """Read now through the hub's running pollers."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    async def read_now(self, device: str, group: str) -> ReadResult:
        try:
            found = await self._hub.read_now(device, group)
        except NotImplementedError as exc:
            raise EditError(EditFailure.UNSUPPORTED, str(exc)) from exc
        if found is None:
            raise EditError(EditFailure.NOT_FOUND, f"no running {Scope.of(device, group).label}")
        values, errors, latency = found
        return ReadResult(values=dict(values), errors=dict(errors), latency_ms=round(latency, 2))
