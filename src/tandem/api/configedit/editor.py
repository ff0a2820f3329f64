"""The config editor: edits in turn, each validated, applied and recorded as a version."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ruamel.yaml.comments import CommentedMap

from tandem.api.configedit.models import EditorState, MasterOut
from tandem.api.configedit.node import ConfigTarget, DeviceReader, Master
from tandem.config import edit
from tandem.config.edit import Edit, EditError, EditFailure, EditInvalid, Performed
from tandem.config.editworker import load_off_loop, perform_off_loop
from tandem.config.hub import DEVICE_ADAPTER, TandemConfig, load_config_text
from tandem.config.offload import LARGE_TEXT
from tandem.config.versions import VersionMeta, VersionStore
from tandem.errors import ConfigError, TandemError
from tandem.ha.configstamp import shared_sections, stat_key
from tandem.security.redact import redact

log = logging.getLogger(__name__)


def short_sections(cfg: TandemConfig) -> dict[str, Any]:
    """The shared sections as a person would write them: without defaults, groups last."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    devices: list[dict[str, Any]] = []
    for device in cfg.devices:
        dumped = DEVICE_ADAPTER.dump_python(device, mode="json", exclude_defaults=True)
        groups = dumped.pop("groups", [])
        head = {"protocol": device.protocol} if device.protocol != "modbus-tcp" else {}
        devices.append({**head, **dumped, "groups": groups})
    return {"devices": devices, "mqtt": data.get("mqtt", {}), "outbox": data.get("outbox", {})}


class NotMaster(TandemError):
    def __init__(self, master: Master) -> None:
        super().__init__(f"this node is a backup: change the config on {master.node or master.url}")
        self.master = master


class ConfigEditor:
    """Edits in turn (one lock), each validated, applied and recorded as a version."""

    def __init__(self, target: ConfigTarget, reader: DeviceReader | None = None) -> None:
        self.target = target
        self.reader = reader
        self.versions = VersionStore(target.running().data_dir)
        self._lock = asyncio.Lock()
        self._doc: tuple[str, CommentedMap] | None = None  # the last change's text and document
        self._data: tuple[Any, dict[str, Any]] | None = None  # what the reads answer from

    def state(self) -> EditorState:
        master = self.target.master()
        return EditorState(
            node=self.target.running().node,
            writable=master is None,
            master=MasterOut(node=master.node, url=master.url) if master is not None else None,
            version=self.versions.latest_id(),
            config=self.target.digest(),
        )

    # ---- reading ----

    def _file_text(self) -> str:
        return self.target.config_path.read_text(encoding="utf-8")

    async def data(self) -> dict[str, Any]:
        """The config as the editor sees it: the file, with synced sections where they run.

        Parsed again only when the file (or the synced config) changed, and a large file in a
        worker process: libyaml holds the GIL, a 10,000-tag file would stall the hub's loop.
        """
        synced = self.target.synced()
        key = (stat_key(self.target.config_path), self.target.digest() if synced else None)
        if self._data is not None and self._data[0] == key:
            return self._data[1]
        text = await asyncio.to_thread(self._file_text)
        parsed = await load_off_loop(text)
        data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if synced is not None:
            data = {**data, **(await asyncio.to_thread(short_sections, synced))}
        self._data = (key, data)
        return data

    def base_text(self) -> str:
        """The text an edit starts from: the file, with synced sections put in when they run."""
        text = self._file_text()
        synced = self.target.synced()
        if synced is None:
            return text
        try:
            in_file: dict[str, Any] | None = shared_sections(load_config_text(text))
        except ConfigError:
            in_file = None
        doc = edit.load_doc(text)
        edit.with_sections(doc, shared_sections(synced), in_file, short_sections(synced))
        return edit.dump_doc(doc, text)

    # ---- changing ----

    def _perform_here(self, base: str, e: Edit) -> tuple[Performed, CommentedMap]:
        """A small file's edit, in a thread: the last change's document is reused while the
        file is still what that change wrote."""
        cached, self._doc = self._doc, None  # an edit changes the document in place
        return edit.perform(
            base, e, cached[1] if cached is not None and cached[0] == base else None
        )

    async def change(
        self, e: Edit, who: str, action: str, show: bool = True
    ) -> tuple[VersionMeta, dict[str, Any] | None]:
        """Carry out the edit, validate, apply, record: the version, and the edited item."""
        master = self.target.master()
        if master is not None:
            raise NotMaster(master)
        async with self._lock:
            base = await asyncio.to_thread(self.base_text)
            doc: CommentedMap | None = None
            if len(base) < LARGE_TEXT:
                done, doc = await asyncio.to_thread(self._perform_here, base, e)
            else:
                self._doc = None
                done = await perform_off_loop(base, e)
            meta = await self._write(done.text, base, who, action, done.hunks)
            self._doc = (done.text, doc) if doc is not None else None
            return meta, redact(done.item) if show and done.item is not None else None

    async def _write(
        self, text: str, base: str, who: str, action: str, hunks: str | None = None
    ) -> VersionMeta:
        try:
            await self.target.write(text)
        except ConfigError as exc:
            raise EditInvalid(edit.config_problems(exc)) from exc
        return await asyncio.to_thread(self._record, text, base, who, action, hunks)

    def _record(
        self, text: str, base: str, who: str, action: str, hunks: str | None
    ) -> VersionMeta:
        latest = self.versions.latest()
        if latest is None or latest.text != base:
            # The text this change started from (a first change, or the file was edited by
            # hand since), so "before the change" can be restored.
            self.versions.add(base, "file", "the config before the next change")
        # The edit's own diff (made off the loop) when it starts from the newest version.
        known = (base, hunks) if hunks is not None else None
        meta = self.versions.add(text, who, action, known=known)
        log.info("config version %s by %s: %s", meta.id, who, action)
        return meta

    async def record_put(self, text: str, who: str) -> None:
        """A whole config PUT elsewhere (PUT /api/v1/config) is a version too."""
        async with self._lock:
            latest = await asyncio.to_thread(self.versions.latest)
            if latest is None or latest.text != text:
                meta = await asyncio.to_thread(self.versions.add, text, who, "PUT /api/v1/config")
                log.info("config version %s by %s: PUT /api/v1/config", meta.id, who)

    async def restore(self, ident: int, who: str) -> VersionMeta:
        master = self.target.master()
        if master is not None:
            raise NotMaster(master)
        version = await asyncio.to_thread(self.versions.get, ident)
        if version is None:
            raise EditError(EditFailure.NOT_FOUND, f"no config version {ident}")
        async with self._lock:
            base = await asyncio.to_thread(self.base_text)
            # Checked by the apply, as any whole config is (in a worker process when large).
            return await self._write(version.text, base, who, f"restore of version {ident}")
