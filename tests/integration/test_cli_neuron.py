"""tandem config import-neuron and import-keepalived --neuron as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NEURON = REPO / "tests" / "data" / "neuron"
SEEDS = REPO / "tests" / "data" / "keepalived"
BAD = json.loads((NEURON / "bad" / "expected.json").read_text())
GUIDE_SCRIPTS = {
    "master.sh": "#!/bin/bash\nsystemctl start neuronex\n",
    "backup.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "fault.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "check_alive.sh": (
        "#!/bin/bash\nif ! curl 127.0.0.1:8085 >/dev/null 2>&1; then "
        'echo "neuronex start failed"; exit 1; fi\n'
    ),
}


def tandem(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_import_neuron_bad_export_exits_2_with_located_problems(name: str) -> None:
    done = tandem("config", "import-neuron", NEURON / "bad" / name)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(BAD[name])
    assert all(line.startswith(str(NEURON / "bad" / name)) for line in lines)


def test_cli_import_neuron_stdout_is_yaml_without_the_password(tmp_path: Path) -> None:
    done = tandem("config", "import-neuron", NEURON / "good" / "tcp_global_config.json")
    assert done.returncode == 0, done.stderr
    assert "broker-secret-42" not in done.stdout + done.stderr
    config = yaml.safe_load(done.stdout)
    assert config["mqtt"]["host"] == "broker.plant.local"
    assert "password" not in config["mqtt"]
    assert "mapped:" in done.stderr and "dropped:" in done.stderr


def test_cli_import_neuron_output_file_mode_0600(tmp_path: Path) -> None:
    out = tmp_path / "site.yaml"
    done = tandem("config", "import-neuron", NEURON / "good" / "tcp_global_config.json", "-o", out)
    assert done.returncode == 0, done.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert yaml.safe_load(out.read_text())["mqtt"]["password"] == "broker-secret-42"
    assert "broker-secret-42" not in done.stderr
    assert tandem("config", "validate", out).returncode == 0


def test_cli_import_neuron_skip_unsupported_imports_the_rest() -> None:
    path = NEURON / "bad" / "unsupported_plugin.json"
    done = tandem("config", "import-neuron", path, "--skip-unsupported")
    assert done.returncode == 0, done.stderr
    assert [d["name"] for d in yaml.safe_load(done.stdout)["devices"]] == ["plc"]
    assert "unsupported plugin" in done.stderr


def test_cli_import_keepalived_with_neuron_gives_one_complete_config(tmp_path: Path) -> None:
    for name, body in GUIDE_SCRIPTS.items():
        (tmp_path / name).write_text(body)
    conf = tmp_path / "keepalived.conf"
    conf.write_text((SEEDS / "seed_master.conf").read_text())
    out = tmp_path / "tandem.yaml"
    export = NEURON / "good" / "tcp_global_config.json"
    done = tandem("config", "import-keepalived", conf, "--neuron", export, "-o", out)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(out.read_text())
    assert config["ha"]["vrrp"]["vrid"] == 51
    assert [d["name"] for d in config["devices"]] == ["plc-1"]
    assert config["mqtt"]["topic"] == "/neuron/mqtt/{node}/{group}"
    assert "# 1!400005" in out.read_text()  # the Neuron address of each tag, kept
    assert "replaced: track_script" in done.stderr and "mapped: node 'plc-1'" in done.stderr
    assert "node: tandem" not in done.stderr  # keepalived's import names the node
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert tandem("config", "validate", out).returncode == 0


def test_cli_import_keepalived_hub_and_neuron_together_refused(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text((SEEDS / "seed_master.conf").read_text())
    export = NEURON / "good" / "rtu_serial.json"
    done = tandem("config", "import-keepalived", conf, "--neuron", export, "--hub", export)
    assert done.returncode == 2
    assert "use one" in done.stderr


def test_cli_import_neuron_missing_file_exits_2() -> None:
    done = tandem("config", "import-neuron", NEURON / "no-such-export.json")
    assert done.returncode == 2
    assert "cannot read" in done.stderr
    assert "Traceback" not in done.stderr
