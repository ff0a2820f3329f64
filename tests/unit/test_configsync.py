"""Config sync decisions and bookkeeping, with a fake peer link and a recording apply callback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tandem.config.hub import DeviceConfig, TandemConfig, load_config
from tandem.errors import ConfigError
from tandem.ha.configsync import (
    SYNCED_FILE,
    VERSION_FILE,
    ConfigStamp,
    ConfigSync,
    TransferRejected,
    canonical,
    check_transfer,
    config_sha,
    next_stamp,
    shared_digest,
    shared_sections,
    with_shared,
)
from tandem.ha.peer import PeerState
from tandem.hub.modbus import DeviceStatus, GroupStatus
from tandem.hub.model import Sample
from tandem.hub.mqtt import PublisherStatus
from tandem.hub.outbox import Outbox
from tandem.hub.runtime import Hub

SECRET = "a-long-enough-secret"


def node_doc(tmp_path: Path, node: str = "node-a", tags: int = 2, **ha: Any) -> dict[str, Any]:
    return {
        "node": node,
        "data_dir": str(tmp_path / f"data-{node}"),
        "api": {"host": "127.0.0.1", "port": 0},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic": "/neuron/{node}"},
        "devices": [
            {
                "name": "plc1",
                "host": "127.0.0.1",
                "port": 5020,
                "groups": [
                    {
                        "name": "fast",
                        "interval": 0.1,
                        "tags": [{"name": f"t{i}", "address": i} for i in range(tags)],
                    }
                ],
            }
        ],
        "ha": {
            "peer_url": "http://127.0.0.3:8085",
            "secret": SECRET,
            "vrrp": {
                "transport": "udp",
                "unicast_src_ip": "127.0.0.2",
                "unicast_peers": ["127.0.0.3"],
            },
            **ha,
        },
    }


def write_doc(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Recorder:
    """The apply callback and the timeline, remembering what they were given."""

    def __init__(self) -> None:
        self.applied: list[TandemConfig] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def apply(self, cfg: TandemConfig) -> None:
        self.applied.append(cfg)

    def timeline(self, message: str, detail: dict[str, Any]) -> None:
        self.events.append((message, detail))


class FakePeer:
    """Answers GET /config with whatever the test put in `body`."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body = body
        self.status = status
        self.calls = 0

    async def get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        assert path == "/config"
        self.calls += 1
        request = httpx.Request("GET", f"http://peer/api/v1/peer{path}")
        return httpx.Response(self.status, json=self.body, request=request)


def make_sync(
    tmp_path: Path, peer: FakePeer | None = None, doc: dict[str, Any] | None = None
) -> tuple[ConfigSync, Recorder, Path]:
    doc = doc or node_doc(tmp_path)
    path = write_doc(tmp_path / f"{doc['node']}.yaml", doc)
    cfg = ConfigSync.effective_config(load_config(path))
    rec = Recorder()
    return ConfigSync(cfg, path, rec.apply, peer, rec.timeline), rec, path


def master_state(sha: str, version: int, publishing: bool = True) -> PeerState:
    return PeerState(
        node="node-b",
        role="MASTER" if publishing else "BACKUP",
        coordinator_state="MASTER" if publishing else "BACKUP",
        publishing=publishing,
        term=3,
        priority=100,
        base_priority=100,
        standby="hot",
        watermarks={},
        buffer_from={},
        healthy=True,
        started_at=1.0,
        config_version=version,
        config_sha=sha,
    )


def master_body(tmp_path: Path, tags: int, version: int = 7) -> dict[str, Any]:
    cfg = TandemConfig.model_validate(node_doc(tmp_path, node="node-b", tags=tags))
    shared = shared_sections(cfg)
    return {"version": version, "sha": shared_digest(shared), "shared": shared}


# ---- digests and stamps -----------------------------------------------------------------------


def test_canonical_digest_key_order_does_not_matter() -> None:
    a = {"mqtt": {"host": "h", "port": 1}, "outbox": {"max_rows": 5}, "devices": []}
    b = {"devices": [], "outbox": {"max_rows": 5}, "mqtt": {"port": 1, "host": "h"}}
    assert canonical(a) == canonical(b)
    assert shared_digest(a) == shared_digest(b)
    c = {**a, "outbox": {"max_rows": 6}}
    assert shared_digest(c) != shared_digest(a)


def test_config_sha_local_fields_differ_same_digest(tmp_path: Path) -> None:
    a = TandemConfig.model_validate(node_doc(tmp_path, node="node-a"))
    b = TandemConfig.model_validate(node_doc(tmp_path, node="node-b", priority=90))
    assert config_sha(a) == config_sha(b)
    more = TandemConfig.model_validate(node_doc(tmp_path, node="node-b", tags=3))
    assert config_sha(more) != config_sha(a)


def test_next_stamp_same_sha_keeps_version_new_sha_increments() -> None:
    first = next_stamp(None, "aaa")
    assert first == ConfigStamp(1, "aaa")
    assert next_stamp(first, "aaa") is first
    assert next_stamp(first, "bbb") == ConfigStamp(2, "bbb")
    assert next_stamp(first, "bbb", at_least=9) == ConfigStamp(10, "bbb")


async def test_configsync_file_edit_local_field_keeps_version_shared_field_increments(
    tmp_path: Path,
) -> None:
    sync, rec, path = make_sync(tmp_path)
    assert sync.version == 1
    start_sha = sync.sha

    doc = node_doc(tmp_path)
    doc["api"]["port"] = 9999  # node-local: not a new shared version
    write_doc(path, doc)
    assert await sync.reload_file() is False
    assert (sync.version, sync.sha) == (1, start_sha)
    assert rec.applied == []

    write_doc(path, node_doc(tmp_path, tags=3))
    assert await sync.reload_file() is True
    assert sync.version == 2 and sync.sha != start_sha
    assert [len(c.devices[0].groups[0].tags) for c in rec.applied] == [3]
    # the running local fields stay: an api change needs a restart
    assert rec.applied[0].api.port == 0
    stored = json.loads((sync.cfg.data_dir / VERSION_FILE).read_text())
    assert stored == {"version": 2, "sha": sync.sha}
    assert rec.events[-1][0] == "config v2 applied from file"


async def test_configsync_restart_same_file_keeps_version_edited_file_increments(
    tmp_path: Path,
) -> None:
    sync, _, path = make_sync(tmp_path)
    write_doc(path, node_doc(tmp_path, tags=3))
    await sync.reload_file()
    assert sync.version == 2
    again, _, _ = make_sync(tmp_path, doc=node_doc(tmp_path, tags=3))
    assert again.version == 2
    edited, _, _ = make_sync(tmp_path, doc=node_doc(tmp_path, tags=4))
    assert edited.version == 3


async def test_configsync_invalid_file_keeps_old_config_and_reports(tmp_path: Path) -> None:
    sync, rec, path = make_sync(tmp_path)
    before = sync.stamp
    path.write_text(path.read_text().replace("port: 5020", "port: 99999"))
    assert await sync.reload_file() is False
    assert sync.stamp == before
    assert rec.applied == []
    assert sync.last_error is not None and "devices[0].port" in sync.last_error


# ---- identity -------------------------------------------------------------------------------


async def test_configsync_put_other_node_identity_rejected(tmp_path: Path) -> None:
    sync, rec, path = make_sync(tmp_path)
    original = path.read_text()
    other = yaml.safe_dump(node_doc(tmp_path, node="node-z", tags=5))
    with pytest.raises(ConfigError) as caught:
        await sync.put_config(other)
    assert [p.field for p in caught.value.problems] == ["node"]
    assert "node identity" in str(caught.value)
    assert path.read_text() == original
    assert rec.applied == []


async def test_configsync_file_edit_other_node_identity_rejected(tmp_path: Path) -> None:
    sync, rec, path = make_sync(tmp_path)
    write_doc(path, node_doc(tmp_path, node="node-z", tags=5))
    assert await sync.reload_file() is False
    assert rec.applied == [] and sync.version == 1
    assert sync.last_error is not None and "node identity" in sync.last_error


async def test_configsync_put_valid_writes_file_and_applies(tmp_path: Path) -> None:
    sync, rec, path = make_sync(tmp_path)
    text = yaml.safe_dump(node_doc(tmp_path, tags=4))
    stamp = await sync.put_config(text)
    assert stamp.version == 2 and stamp == sync.stamp
    assert path.read_text() == text
    assert len(rec.applied[0].devices[0].groups[0].tags) == 4


# ---- transfers --------------------------------------------------------------------------------


def test_check_transfer_tampered_shared_rejected(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3)
    assert check_transfer(body, body["sha"]).version == 7
    tampered = json.loads(json.dumps(body))
    tampered["shared"]["mqtt"]["host"] = "evil.example"
    with pytest.raises(TransferRejected, match="corrupted transfer"):
        check_transfer(tampered, body["sha"])
    with pytest.raises(TransferRejected, match="advertised"):
        check_transfer(body, "0" * 64)


async def test_configsync_tampered_payload_rejected_old_config_kept(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3)
    advertised = body["sha"]
    body["shared"]["devices"][0]["port"] = 15020  # changed in transit; sha left as it was
    peer = FakePeer(body)
    sync, rec, _ = make_sync(tmp_path, peer)
    before = sync.stamp
    assert await sync.sync_once(advertised, "node-b") is False
    assert sync.stamp == before
    assert rec.applied == []
    assert sync.rejected_transfers == 1
    assert sync.last_error is not None and "corrupted transfer" in sync.last_error
    assert any("corrupted transfer" in message for message, _ in rec.events)
    assert not (sync.cfg.data_dir / SYNCED_FILE).exists()


async def test_configsync_valid_transfer_applied_and_stored(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3, version=7)
    sync, rec, _ = make_sync(tmp_path, FakePeer(body))
    assert await sync.sync_once(body["sha"], "node-b") is True
    assert (sync.version, sync.sha) == (7, body["sha"])
    applied = rec.applied[0]
    assert applied.node == "node-a"  # local identity kept, shared sections taken
    assert len(applied.devices[0].groups[0].tags) == 3
    stored = json.loads((sync.cfg.data_dir / SYNCED_FILE).read_text())
    assert stored == body
    assert rec.events[-1][0] == "config v7 applied from node-b"


def test_with_shared_invalid_sections_rejected(tmp_path: Path) -> None:
    cfg = TandemConfig.model_validate(node_doc(tmp_path))
    shared = shared_sections(cfg)
    shared["devices"] = [*shared["devices"], shared["devices"][0]]  # duplicate device name
    with pytest.raises(ConfigError, match="duplicate device name"):
        with_shared(cfg, shared)
    with pytest.raises(ConfigError, match="expected sections"):
        with_shared(cfg, {"devices": []})


async def test_configsync_peer_state_from_publishing_master_schedules_fetch(
    tmp_path: Path,
) -> None:
    body = master_body(tmp_path, tags=3)
    peer = FakePeer(body)
    sync, rec, _ = make_sync(tmp_path, peer)
    own = sync.version
    sync.on_peer_state(master_state(body["sha"], own, publishing=False), peer_publishing=False)
    worker = asyncio.create_task(sync.run())
    try:
        await asyncio.sleep(0.05)
        assert peer.calls == 0  # a backup peer's config of the same version is not taken
        sync.on_peer_state(master_state(body["sha"], 7), peer_publishing=True)
        for _ in range(100):
            if sync.sha == body["sha"]:
                break
            await asyncio.sleep(0.01)
    finally:
        worker.cancel()
        await asyncio.wait([worker])
    assert sync.sha == body["sha"] and peer.calls == 1 and len(rec.applied) == 1


async def test_configsync_backup_file_edit_while_master_publishes_not_applied(
    tmp_path: Path,
) -> None:
    sync, rec, path = make_sync(tmp_path)
    sync.on_peer_state(master_state(sync.sha, 1), peer_publishing=True)
    write_doc(path, node_doc(tmp_path, tags=4))
    assert await sync.reload_file() is False
    assert rec.applied == [] and sync.version == 1
    assert sync.last_error is not None and "edit the master" in sync.last_error


# ---- start-up precedence ----------------------------------------------------------------------


async def test_effective_config_synced_file_overrides_file_sections(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3, version=7)
    sync, _, path = make_sync(tmp_path, FakePeer(body))
    await sync.sync_once(body["sha"], "node-b")

    restarted, _, _ = make_sync(tmp_path, doc=node_doc(tmp_path, tags=2))
    assert (restarted.version, restarted.sha) == (7, body["sha"])
    assert len(restarted.cfg.devices[0].groups[0].tags) == 3
    assert restarted.cfg.node == "node-a"

    # a damaged synced file is ignored: the node starts from its own file
    (sync.cfg.data_dir / SYNCED_FILE).write_text('{"version": 7, "sha": "x", "shared": {}}')
    fallback = ConfigSync.effective_config(load_config(path))
    assert len(fallback.devices[0].groups[0].tags) == 2


async def test_configsync_local_edit_after_sync_makes_file_authoritative(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3, version=7)
    sync, _, path = make_sync(tmp_path, FakePeer(body))
    await sync.sync_once(body["sha"], "node-b")
    write_doc(path, node_doc(tmp_path, tags=5))
    assert await sync.reload_file() is True
    assert sync.version == 8
    assert not (sync.cfg.data_dir / SYNCED_FILE).exists()
    restarted, _, _ = make_sync(tmp_path, doc=node_doc(tmp_path, tags=5))
    assert restarted.version == 8


# ---- require_same_config ------------------------------------------------------------------------


def test_configsync_require_same_config_differs_not_ok(tmp_path: Path) -> None:
    sync, _, _ = make_sync(tmp_path, doc=node_doc(tmp_path, require_same_config=True))
    assert sync.config_ok  # no master known yet
    sync.on_peer_state(master_state("f" * 64, 4), peer_publishing=True)
    assert not sync.config_ok
    sync.on_peer_state(master_state(sync.sha, 4), peer_publishing=True)
    assert sync.config_ok


def test_configsync_require_same_config_off_always_ok(tmp_path: Path) -> None:
    sync, _, _ = make_sync(tmp_path)
    sync.on_peer_state(master_state("f" * 64, 4), peer_publishing=True)
    assert sync.config_ok


# ---- Hub.reconfigure --------------------------------------------------------------------------


class FakePoller:
    def __init__(self, device: DeviceConfig, source_node: str, emit: Callable[[Sample], None]):
        self.device = device
        self.emit = emit
        self.runs = 0
        self.running = False
        self.last_slot = 41  # every group's last emitted slot, as the test sets it
        self.resumed: dict[str, int] = {}

    def status(self) -> DeviceStatus:
        groups = [
            GroupStatus(g.name, g.interval, None, self.last_slot, 1, 0, 0, None)
            for g in self.device.groups
        ]
        return DeviceStatus(name=self.device.name, connected=True, last_error=None, groups=groups)

    def resume(self, next_slots: Mapping[str, int]) -> None:
        self.resumed = dict(next_slots)

    async def run(self) -> None:
        self.runs += 1
        self.running = True
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False


class FakePublisher:
    def __init__(self, outbox: Outbox, may_publish: Callable[[], bool]) -> None:
        self.outbox = outbox
        self.running = False

    def status(self) -> PublisherStatus:
        return PublisherStatus(True, 0, 0.0, 0.0, None, 0, 0, self.outbox.depth())

    def notify(self) -> None:
        pass

    async def run(self) -> None:
        self.running = True
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False


def hub_config(tmp_path: Path, devices: dict[str, int], mqtt_port: int = 1883) -> TandemConfig:
    doc = node_doc(tmp_path)
    del doc["ha"]
    doc["mqtt"]["port"] = mqtt_port
    doc["devices"] = [
        {
            "name": name,
            "host": "127.0.0.1",
            "groups": [{"name": "g", "tags": [{"name": f"t{i}", "address": i} for i in range(n)]}],
        }
        for name, n in devices.items()
    ]
    return TandemConfig.model_validate(doc)


async def test_hub_reconfigure_changed_devices_replaced_unchanged_kept_outbox_kept(
    tmp_path: Path,
) -> None:
    cfg = hub_config(tmp_path, {"plc1": 1, "plc2": 1})
    hub = Hub(cfg, poller_factory=FakePoller, publisher_factory=FakePublisher)
    async with hub:
        await asyncio.sleep(0.02)
        plc1, plc2 = hub.pollers
        assert isinstance(plc1, FakePoller) and isinstance(plc2, FakePoller)
        plc1.emit(Sample("plc1", "g", 1, 100, {"t0": 1}, {}, 0, "x"))
        await asyncio.sleep(0.01)
        depth = hub.outbox.depth()
        publisher = hub.publisher
        new_cfg = hub_config(tmp_path, {"plc1": 1, "plc2": 2, "plc3": 1})
        await hub.reconfigure(new_cfg)
        await asyncio.sleep(0.02)
        assert hub.config is new_cfg
        assert hub.pollers[0] is plc1 and plc1.runs == 1 and plc1.running
        assert hub.pollers[1] is not plc2 and not plc2.running
        assert all(isinstance(p, FakePoller) and p.running for p in hub.pollers)
        assert [p.status().name for p in hub.pollers] == ["plc1", "plc2", "plc3"]
        # The changed device's group goes on after the old poller's last slot; a new one does not.
        new_plc2, plc3 = hub.pollers[1], hub.pollers[2]
        assert isinstance(new_plc2, FakePoller) and isinstance(plc3, FakePoller)
        assert new_plc2.resumed == {"g": 42} and plc3.resumed == {}
        assert hub.publisher is publisher  # mqtt unchanged
        assert hub.outbox.depth() == depth == 1

        await hub.reconfigure(hub_config(tmp_path, {"plc1": 1}, mqtt_port=1884))
        await asyncio.sleep(0.02)
        assert hub.publisher is not publisher
        assert isinstance(publisher, FakePublisher) and not publisher.running
        assert isinstance(hub.publisher, FakePublisher) and hub.publisher.running
        assert hub.health_checks()["loops"]
        assert [p.status().name for p in hub.pollers] == ["plc1"]
        assert hub.outbox.depth() == 1


async def test_configsync_put_keeps_file_mode_and_symlink(tmp_path: Path) -> None:
    sync, _, path = make_sync(tmp_path)
    real = path.with_name("real.yaml")
    path.rename(real)
    path.symlink_to(real)
    real.chmod(0o640)
    await sync.put_config(yaml.safe_dump(node_doc(tmp_path, tags=4)))
    assert path.is_symlink()
    assert real.stat().st_mode & 0o777 == 0o640
    assert "t3" in real.read_text()


async def test_configsync_apply_fails_synced_file_not_kept(tmp_path: Path) -> None:
    body = master_body(tmp_path, tags=3)
    sync, rec, _ = make_sync(tmp_path, FakePeer(body))

    async def failing_apply(cfg: TandemConfig) -> None:
        raise RuntimeError("device setup failed")

    sync._on_apply = failing_apply
    with pytest.raises(RuntimeError):
        await sync.sync_once(body["sha"], "node-b")
    assert sync.version == 1 and sync.sha != body["sha"]
    assert not (sync.cfg.data_dir / SYNCED_FILE).exists()


async def test_configsync_older_config_of_new_master_not_taken_newer_of_backup_is(
    tmp_path: Path,
) -> None:
    """A master that hands over right after an edit keeps it: the newest version wins."""
    body = master_body(tmp_path, tags=3)
    peer = FakePeer(body)
    sync, rec, _ = make_sync(tmp_path, peer)
    worker = asyncio.create_task(sync.run())
    try:
        sync.on_peer_state(master_state(body["sha"], 0), peer_publishing=True)
        await asyncio.sleep(0.05)
        assert peer.calls == 0
        sync.on_peer_state(master_state(body["sha"], 9, publishing=False), peer_publishing=False)
        for _ in range(100):
            if sync.sha == body["sha"]:
                break
            await asyncio.sleep(0.01)
    finally:
        worker.cancel()
        await asyncio.wait([worker])
    assert sync.sha == body["sha"] and peer.calls == 1 and len(rec.applied) == 1
