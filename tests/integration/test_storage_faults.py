"""Storage faults under a running node: a full tmpfs and a read-only mount, as root.

`tandem run` as a real process polls the PLC simulator and publishes to a real mosquitto,
with its data dir on a small tmpfs mounted for the test. The node must never exit, its health
must say the outbox cannot be written and why, and every sample it committed must arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.hub.outbox import Outbox
from tests.integration.broker import Broker, RecordingSubscriber
from tests.integration.plc import PlcProcess, start_plc
from tests.integration.test_hub_e2e import (
    MAX_REDELIVERIES,
    NodeProcess,
    assert_every_slot_once_in_order,
    bodies_by_group,
    counter_device,
    drop_redeliveries,
    running_node,
    wait_until,
    write_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount tmpfs"
    ),
]

TMPFS_SIZE = "8m"
FAULT_TIMEOUT_S = 30.0


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of its own, unmounted at the end whatever happened."""
    where = tmp_path / "data"
    where.mkdir()
    mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        result = subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
        if result.returncode != 0:  # something still holds it: detach it anyway
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@pytest.fixture
def plc() -> Iterator[PlcProcess]:
    process = start_plc()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    # Persistent, so the subscriber's session and its queued messages survive a broker restart.
    with Broker(workdir, persistent=True) as b:
        yield b


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[RecordingSubscriber]:
    async with RecordingSubscriber(
        broker.host, broker.port, "/neuron/#", client_id="storage-recorder"
    ) as sub:
        yield sub


async def get(node: NodeProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5, headers=node.headers) as client:
        return await client.get(f"{node.url}{path}")


async def health(node: NodeProcess) -> dict[str, Any]:
    response = await get(node, "/api/v1/health")
    body: dict[str, Any] = response.json()
    assert response.status_code == (200 if body["ok"] else 503)
    return body


async def wait_health(node: NodeProcess, outbox_ok: bool, what: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + FAULT_TIMEOUT_S
    while True:
        assert node.process.poll() is None, f"node exited:\n{node.log_text()[-3000:]}"
        body = await health(node)
        if body["checks"].get("outbox") is outbox_ok:
            return body
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}: {body}\n{node.log_text()[-3000:]}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def disk_hog(directory: Path) -> AsyncIterator[Path]:
    """Something else filling the file system, and taking back every byte that frees up.

    The outbox can reclaim its own WAL; a runaway log next to it takes that space again.
    """
    filler = directory / "filler"
    stop = asyncio.Event()

    async def hog() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not stop.is_set():
                for chunk in (1 << 20, 1 << 16, 1 << 12):
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, b"\0" * chunk)
                await asyncio.sleep(0.01)
        finally:
            os.close(fd)

    task = asyncio.create_task(hog())
    try:
        await asyncio.sleep(0.1)
        with pytest.raises(OSError) as full:
            (directory / "probe").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        yield filler
    finally:
        stop.set()
        await task
        filler.unlink(missing_ok=True)


def assert_every_committed_sample_arrived(
    messages_bodies: list[dict[str, Any]], data_dir: Path, *, one_run: bool
) -> None:
    """Every seq the outbox gave is on the wire once, in order; in one run, every slot too."""
    bodies, repeats = drop_redeliveries(messages_bodies)
    assert repeats <= MAX_REDELIVERIES
    seqs = [b["seq"] for b in bodies]
    assert seqs == list(range(1, len(seqs) + 1))
    if one_run:  # across a restart the slots polled while the node was down never existed
        assert_every_slot_once_in_order([b["slot"] for b in bodies])
    with Outbox(data_dir / "outbox.sqlite3") as outbox:
        assert outbox.depth() == 0
        assert outbox.last_seq("fast", "plc1") == seqs[-1]


async def test_storage_disk_full_node_runs_on_health_fails_then_every_sample_arrives(
    tmp_path: Path,
    tmpfs: Path,
    plc: PlcProcess,
    broker: Broker,
    subscriber: RecordingSubscriber,
) -> None:
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmpfs,
        broker_port=broker.port,
        devices=[counter_device(plc.port)],
    )
    with running_node(config, tmp_path / "node.log") as node:
        await node.wait_ready()
        await subscriber.wait_for_count(10, timeout=15)
        async with disk_hog(tmpfs):
            failing = await wait_health(node, False, "the outbox check to fail")
            await asyncio.sleep(2.0)  # polling goes on into memory
            during = await node.astatus()
            metrics = (await get(node, "/metrics")).text
            table = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tandem", "status", "--url", node.url],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "TANDEM_TOKEN": node.token},
            )
            assert node.process.poll() is None
        recovered = await wait_health(node, True, "the outbox check to recover")
        await wait_until(
            lambda: node.status()["outbox"]["retry_queue"] == 0, FAULT_TIMEOUT_S, "retry queue"
        )
        await asyncio.sleep(1.0)  # the samples polled meanwhile published and acked
        await wait_until(lambda: node.status()["outbox"]["depth"] == 0, 20, "outbox to drain")
        final = await node.astatus()
        assert node.terminate() == 0
    await asyncio.sleep(0.5)

    assert not failing["ok"]
    assert "database or disk is full" in failing["reasons"]["outbox"]
    assert recovered["ok"] and recovered["reasons"] == {}
    assert not during["outbox"]["writable"] and during["outbox"]["retry_queue"] >= 10
    assert final["outbox"]["write_errors"] >= 1 and final["outbox"]["retry_dropped"] == 0
    assert "tandem_outbox_writable 0.0" in metrics
    assert "NOT WRITABLE: outbox writes failing since" in table.stdout, table.stdout
    assert_every_committed_sample_arrived(
        bodies_by_group(subscriber.messages)["fast"], tmpfs, one_run=True
    )
    assert "write failed" in node.log_text() and "writable again" in node.log_text()


async def test_storage_read_only_data_dir_node_runs_holding_samples_until_writable(
    tmp_path: Path,
    tmpfs: Path,
    plc: PlcProcess,
    broker: Broker,
    subscriber: RecordingSubscriber,
) -> None:
    config = write_config(
        tmp_path / "node.yaml",
        data_dir=tmpfs,
        broker_port=broker.port,
        devices=[counter_device(plc.port)],
    )
    # First run: the broker goes away and the outbox keeps what was polled, on disk.
    with running_node(config, tmp_path / "node-1.log") as first:
        await first.wait_ready()
        await subscriber.wait_for_count(5, timeout=15)
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: first.status()["outbox"]["depth"] >= 20, 20, "rows held back")
        assert first.terminate() == 0
    with Outbox(tmpfs / "outbox.sqlite3") as outbox:
        committed = {r.slot for r in outbox.peek(1_000_000)}
    assert len(committed) >= 20

    # The data dir becomes read-only (an open outbox keeps a mount from going read-only, so
    # it happens between runs); the node starts anyway and holds what it polls in memory.
    mount("-o", "remount,ro", str(tmpfs))
    await asyncio.to_thread(broker.start)
    await asyncio.wait_for(subscriber.subscribed.wait(), 15)
    with running_node(config, tmp_path / "node-2.log", first.token) as second:
        await second.wait_ready()
        failing = await wait_health(second, False, "the outbox check to fail")
        await asyncio.sleep(1.5)
        during = await second.astatus()
        assert second.process.poll() is None
        mount("-o", "remount,rw", str(tmpfs))
        recovered = await wait_health(second, True, "the outbox check to recover")
        await wait_until(lambda: second.status()["outbox"]["depth"] == 0, 30, "outbox to drain")
        assert second.terminate() == 0
    await asyncio.sleep(0.5)

    assert "cannot open" in failing["reasons"]["outbox"]
    assert during["outbox"]["retry_queue"] >= 5 and not during["outbox"]["writable"]
    assert recovered["ok"]
    bodies = bodies_by_group(subscriber.messages)["fast"]
    assert committed <= {b["slot"] for b in bodies}
    assert_every_committed_sample_arrived(bodies, tmpfs, one_run=False)
