"""`tandem run` and `tandem status` as a user runs them: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import Broker
from tests.integration.plc import PlcProcess, free_port, start_plc
from tests.integration.test_hub_e2e import counter_device, running_node, write_config

CLI_TIMEOUT_S = 30


def tandem(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_TOKEN"}
    if token is not None:
        env["TANDEM_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tandem", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**env, "COLUMNS": "200"},
    )


def test_cli_run_missing_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = tandem("run", "-c", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "cannot read" in result.stderr


def test_cli_run_bad_config_exits_2_with_every_problem_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "node: edge-a\n"
        "mqtt:\n"
        "  port: 99999\n"
        "devices:\n"
        "  - name: plc1\n"
        "    host: 127.0.0.1\n"
        "    groups:\n"
        "      - name: g\n"
        "        colour: blue\n"
        "        tags: [{name: t, address: 0}]\n"
    )
    result = tandem("run", "-c", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"{bad}:3: mqtt.port:" in lines[0]
    assert any(f"{bad}:9:" in line and "colour" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_cli_status_node_not_running_exits_1_with_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = tandem("status", "--url", url)
    assert result.returncode == 1
    assert f"cannot reach {url}:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def plc() -> Iterator[PlcProcess]:
    process = start_plc()
    try:
        yield process
    finally:
        process.stop()


async def test_cli_status_json_and_table_against_a_running_node(
    tmp_path: Path, plc: PlcProcess
) -> None:
    with Broker(tmp_path) as broker:
        config = write_config(
            tmp_path / "node.yaml",
            data_dir=tmp_path / "data",
            broker_port=broker.port,
            devices=[counter_device(plc.port)],
            node="cli-node",
        )
        with running_node(config, tmp_path / "node.log") as node:
            await node.wait_ready()
            token = node.headers["Authorization"].removeprefix("Bearer ")
            as_json = tandem("status", "--url", node.url, "--json", token=token)
            table = tandem("status", "--url", node.url, token=token)
            down = f"http://127.0.0.1:{free_port()}"
            mixed = tandem("status", "--url", node.url, "--url", down, token=token)
            anonymous = tandem("status", "--url", node.url)
            assert node.terminate() == 0

    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert (body["node"], body["role"], body["term"]) == ("cli-node", "SINGLE", 0)
    assert [d["name"] for d in body["devices"]] == ["plc1"]
    assert "outbox" in body and "publisher" in body

    assert table.returncode == 0, table.stderr
    for text in ("cli-node", "SINGLE", "devices connected", "outbox depth", "broker connected"):
        assert text in table.stdout

    # one node down: the other is still shown, and the exit code says something is wrong
    assert mixed.returncode == 1
    assert "cli-node" in mixed.stdout
    assert f"cannot reach {down}:" in mixed.stderr
    # without a token: refused, with a hint where to get one
    assert anonymous.returncode == 1
    assert "401" in anonymous.stderr and "tandem token create" in anonymous.stderr
