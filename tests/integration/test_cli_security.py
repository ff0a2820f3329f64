"""`tandem user`, `tandem token` and `tandem certs` as a person runs them, against a running node.

A token made while the node runs is accepted at once, a revoked one refused at once; the
token appears only as the last line of stdout; stores and keys are private files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.test_hub_e2e import running_node, write_config

TANDEM = [sys.executable, "-m", "tandem"]
PASSWORD = "a long enough password"


def tandem(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_TOKEN"}
    return subprocess.run(
        [*TANDEM, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env=env,
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "node.yaml", data_dir=tmp_path / "data", broker_port=1, devices=[]
    )


def test_cli_user_add_list_passwd_remove(config: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    added = tandem("user", "add", "alice", "--role", "operator", "-c", config,
                   "--password-file", password_file)  # fmt: skip
    assert added.returncode == 0, added.stderr
    users = tmp_path / "data" / "users.json"
    assert mode_of(users) == 0o600 and PASSWORD not in users.read_text()
    listed = tandem("user", "list", "-c", config)
    assert "alice\toperator" in listed.stdout
    again = tandem("user", "add", "alice", "-c", config, "--password-file", password_file)
    assert again.returncode == 1 and "already exists" in again.stderr
    passwd = tandem("user", "passwd", "alice", "-c", config, "--password-file", "-",
                    stdin="another long password\n")  # fmt: skip
    assert passwd.returncode == 0, passwd.stderr
    no_tty = tandem("user", "add", "bob", "-c", config, stdin="")
    assert no_tty.returncode == 2 and "--password-file" in no_tty.stderr
    bad_role = tandem("user", "add", "bob", "--role", "root", "-c", config)
    assert bad_role.returncode == 2 and "--role" in bad_role.stderr
    removed = tandem("user", "remove", "alice", "-c", config)
    assert removed.returncode == 0 and "alice" not in tandem("user", "list", "-c", config).stdout


@pytest.mark.slow
async def test_cli_token_created_while_running_accepted_revoked_refused(
    config: Path, tmp_path: Path
) -> None:
    with running_node(config, tmp_path / "node.log") as node:
        await node.wait_ready()
        created = tandem("token", "create", "-c", config, "--role", "viewer", "--name", "ci")
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        assert token.startswith("tdm_")
        assert token not in created.stderr and created.stdout.count(token) == 1
        headers = {"Authorization": f"Bearer {token}"}
        status_url = f"{node.url}/api/v1/status"
        assert httpx.get(status_url, headers=headers, timeout=5).status_code == 200
        assert httpx.post(
            f"{node.url}/api/v1/switchover", headers=headers, timeout=5
        ).status_code == 403  # fmt: skip
        listed = tandem("token", "list", "-c", config)
        assert "\tci\tviewer\t" in listed.stdout and token not in listed.stdout
        stored = (tmp_path / "data" / "tokens.json").read_text()
        assert token not in stored and mode_of(tmp_path / "data" / "tokens.json") == 0o600
        revoked = tandem("token", "revoke", "ci", "-c", config)
        assert revoked.returncode == 0, revoked.stderr
        assert httpx.get(status_url, headers=headers, timeout=5).status_code == 401
        status = subprocess.run(
            [*TANDEM, "status", "--url", node.url, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "TANDEM_TOKEN": token},
        )
        assert status.returncode == 1 and "401" in status.stderr
    assert token not in node.log_text()


def test_cli_certs_init_writes_private_keys_and_prints_config(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    done = tandem("certs", "init", "--dir", out, "--node", "node-a=10.0.0.1",
                  "--node", "node-b=10.0.0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for key in ("ca.key", "node-a.key", "node-b.key"):
        assert mode_of(out / key) == 0o600
    assert "peer_url: https://10.0.0.2:8085" in done.stdout  # node-a's peer
    assert f"cert_file: {(out / 'node-a.pem').resolve()}" in done.stdout
    assert "fingerprint: sha256:" in done.stdout
    assert "PRIVATE KEY" not in done.stdout
    again = tandem("certs", "init", "--dir", out, "--node", "node-a=10.0.0.1")
    assert again.returncode == 1 and "already holds a CA" in again.stderr
    bad = tandem("certs", "init", "--dir", tmp_path / "x", "--node", "node-a")
    assert bad.returncode == 2 and "NAME=ADDRESS" in bad.stderr


def test_cli_run_secret_file_and_env_accepted_never_argv(tmp_path: Path) -> None:
    """`tandem config validate` accepts secret_file/secret_env; no command takes --secret."""
    doc = json.loads(
        write_config(
            tmp_path / "a.yaml", data_dir=tmp_path / "d", broker_port=1, devices=[]
        ).read_text()
    )
    doc["ha"] = {
        "peer_url": "https://127.0.0.3:8085",
        "secret_env": "TANDEM_SECRET",
        "peer_tls": {"fingerprint": "AB:" * 31 + "AB"},
        "vrrp": {"transport": "udp", "unicast_src_ip": "127.0.0.2", "unicast_peers": ["127.0.0.3"]},
    }
    path = tmp_path / "ha.yaml"
    path.write_text(json.dumps(doc))
    assert tandem("config", "validate", path).returncode == 0
    for command in (["config", "import-keepalived"], ["run"], ["switchover"], ["status"]):
        assert "--secret " not in tandem(*command, "--help").stdout
