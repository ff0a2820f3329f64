"""`tandem switchover` and `tandem simulate-plc` as a user runs them, error paths included."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from tandem.config.hub import load_config
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tests.integration.plc import free_port
from tests.netns.ha_cluster import loopback_cluster

TANDEM = [sys.executable, "-m", "tandem"]


def tandem(
    *args: str, timeout: float = 60, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_TOKEN"}
    if token is not None:
        env["TANDEM_TOKEN"] = token
    return subprocess.run(
        [*TANDEM, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_switchover_node_not_running_exits_1_with_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = tandem("switchover", "--url", url)
    assert done.returncode == 1
    assert f"cannot reach {url}" in done.stderr


@pytest.mark.slow
def test_cli_switchover_moves_role_and_is_refused_when_it_cannot(tmp_path: Path) -> None:
    cluster = loopback_cluster(tmp_path)
    try:
        cluster.start()
        cluster.wait_steady(cluster.a)
        # Without a credential, or with a viewer's: refused, and the role stays.
        done = tandem("switchover", "--url", cluster.a.url)
        assert done.returncode == 1 and "401" in done.stderr and "token" in done.stderr
        viewer = create_token(load_config(cluster.a.config).data_dir, Role.VIEWER)
        done = tandem("switchover", "--url", cluster.a.url, token=viewer)
        assert done.returncode == 1 and "role" in done.stderr
        assert cluster.masters() == [cluster.a.name]
        # Asked on the master with an operator token (from a file): it hands over.
        token_file = tmp_path / "token"
        token_file.write_text(cluster.a.token + "\n")
        done = tandem("switchover", "--url", cluster.a.url, "--token-file", str(token_file))
        assert done.returncode == 0, done.stderr
        assert f"{cluster.b.name} is master now" in done.stdout
        cluster.wait_role(cluster.b, "MASTER", 10)
        # Asked on the backup (now node-a): forwarded to the master, the role comes back.
        cluster.wait_role(cluster.a, "BACKUP", 10)
        time.sleep(1.0)  # let node-b's buffer and peer state settle
        done = tandem("switchover", "--url", cluster.a.url, "--json", token=cluster.a.token)
        assert done.returncode == 0, done.stderr
        assert '"ok": true' in done.stdout
        cluster.wait_role(cluster.a, "MASTER", 10)
        # With the standby gone there is nobody to hand over to: refused, non-zero, a reason.
        cluster.b.kill()
        time.sleep(1.0)
        done = tandem("switchover", "--url", cluster.a.url, "--token", cluster.a.token)
        assert done.returncode == 1
        assert "switchover refused" in done.stderr and "peer" in done.stderr
        assert cluster.a.token not in done.stdout + done.stderr
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


async def _read_counter(port: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        response = await client.read_holding_registers(0, count=1)
        assert not response.isError(), response
        return int(response.registers[0])
    finally:
        client.close()


def test_cli_simulate_plc_serves_registers_and_stops_on_sigint() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*TANDEM, "simulate-plc", "--port", str(port), "--load-registers", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        first = None
        while first is None:
            try:
                first = asyncio.run(_read_counter(port))
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        time.sleep(0.35)
        assert asyncio.run(_read_counter(port)) != first  # the 100 ms counter moves
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(10)
    assert code in (0, 130), process.stdout.read() if process.stdout else ""


def test_cli_simulate_plc_port_in_use_fails_clearly() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = tandem("simulate-plc", "--port", str(port), timeout=30)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
