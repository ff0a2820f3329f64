"""Writes on a data dir that becomes read-only: the node runs, writes answer 4005, then work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tandem.config.hub import load_config
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tests.integration.broker import Broker
from tests.integration.plc import start_sim
from tests.integration.test_hub_e2e import running_node, write_config
from tests.integration.test_storage_faults import broker, mount, tmpfs  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount tmpfs"
    ),
]


async def test_writes_read_only_data_dir_refused_before_sending_then_written(
    tmp_path: Path,
    tmpfs: Path,  # noqa: F811 - the fixture imported above
    broker: Broker,  # noqa: F811
) -> None:
    sim = start_sim(["--port", "0", "--write-log", str(tmp_path / "writes.jsonl")])
    try:
        tags = [{"name": "x", "address": 50, "access": "write"}]
        config = write_config(
            tmp_path / "node.yaml",
            data_dir=tmpfs,
            broker_port=broker.port,
            devices=[
                {
                    "name": "plc",
                    "host": "127.0.0.1",
                    "port": sim.ports[0],
                    "groups": [{"name": "w", "interval": 0.2, "tags": tags}],
                }
            ],
        )
        token = create_token(load_config(config).data_dir, Role.OPERATOR)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"node": "plc", "group": "w", "tag": "x", "value": 11}
        mount("-o", "remount,ro", str(tmpfs))
        with running_node(config, tmp_path / "node.log", token) as node:
            await node.wait_ready()
            async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=10) as http:
                refused = await http.post("/api/v1/write", json=body)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == 4005
                assert (
                    not (tmp_path / "writes.jsonl").exists()
                    or not (tmp_path / "writes.jsonl").read_text()
                ), "nothing reached the device"
                mount("-o", "remount,rw", str(tmpfs))
                written = await http.post("/api/v1/write", json=body)
                assert written.status_code == 200, written.text
            assert node.process.poll() is None
            node.terminate()
    finally:
        sim.stop()
    assert (tmp_path / "writes.jsonl").read_text().count('"values": [11]') == 1
