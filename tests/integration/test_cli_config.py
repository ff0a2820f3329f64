"""The config commands as an operator runs them: real processes, real keepalived -t."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "data" / "keepalived"
GUIDE_SCRIPTS = {
    "master.sh": "#!/bin/bash\nsystemctl start neuronex\n",
    "backup.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "fault.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "check_alive.sh": (
        "#!/bin/bash\nif ! curl 127.0.0.1:8085 >/dev/null 2>&1; then "
        'echo "neuronex start failed"; exit 1; fi\n'
    ),
}
TOP_LEVEL_SECTIONS = ("node", "data_dir", "api", "mqtt", "outbox", "devices", "ha")
NATIVE = """\
node: node-a
ha:
  priority: 100
  peer_url: http://10.0.0.223:8085
  secret: abcdefghijkl
  vrrp:
    interface: eth0
    version: %(version)s
    advert_interval: %(advert)s
    auth_pass: abcdefgh
    unicast_peers: [10.0.0.223]
    vips: [192.168.127.254/17]
"""


def tandem(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def guide_dir(tmp_path: Path) -> Path:
    """The seed configs next to the guide's scripts, as copied from the old nodes."""
    for name in ("seed_master.conf", "seed_backup.conf"):
        shutil.copy(SEEDS / name, tmp_path / name)
    for name, text in GUIDE_SCRIPTS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("seed", ["seed_master.conf", "seed_backup.conf"])
def test_import_keepalived_seed_output_validates(guide_dir: Path, seed: str) -> None:
    out = guide_dir / "imported.yaml"
    imported = tandem("config", "import-keepalived", guide_dir / seed, "-o", out)
    assert imported.returncode == 0, imported.stderr
    assert "mapped: " in imported.stderr
    assert "replaced: " in imported.stderr
    assert "dropped: " in imported.stderr
    validated = tandem("config", "validate", out)
    assert validated.returncode == 0, validated.stderr
    assert "configuration OK" in validated.stdout


def test_import_keepalived_to_stdout_with_hub_validates(guide_dir: Path) -> None:
    secret_file = guide_dir / "secret"
    secret_file.write_text("shared-secret-123\n")
    imported = tandem(
        "config",
        "import-keepalived",
        guide_dir / "seed_master.conf",
        "--hub",
        REPO / "examples" / "ha" / "node-a.yaml",
        "--secret-file",
        secret_file,
    )
    assert imported.returncode == 0, imported.stderr
    assert "name: plc1" in imported.stdout
    assert '"shared-secret-123"' in imported.stdout
    out = guide_dir / "merged.yaml"
    out.write_text(imported.stdout)
    assert tandem("config", "validate", out).returncode == 0


def test_import_keepalived_missing_file_exits_2_with_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    result = tandem("config", "import-keepalived", missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert result.stdout == ""


def test_import_keepalived_foreign_check_exits_2_naming_the_script(guide_dir: Path) -> None:
    (guide_dir / "check_alive.sh").write_text("#!/bin/sh\nping -c1 10.0.0.1\n")
    result = tandem("config", "import-keepalived", guide_dir / "seed_master.conf")
    assert result.returncode == 2
    assert "check_ex_alived" in result.stderr
    assert "--drop-check" in result.stderr


def test_export_keepalived_missing_file_exits_2_with_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = tandem("config", "export-keepalived", missing, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("version", "advert"), [(2, "1"), (3, "0.1")])
def test_export_keepalived_passes_tandem_config_test(
    tmp_path: Path, version: int, advert: str
) -> None:
    native = tmp_path / "node-a.yaml"
    native.write_text(NATIVE % {"version": version, "advert": advert})
    out = tmp_path / "keepalived"
    exported = tandem("config", "export-keepalived", native, "-o", out)
    assert exported.returncode == 0, exported.stderr
    checked = tandem("keepalived", "-t", "-f", out / "keepalived.conf")
    assert checked.returncode == 0, checked.stderr
    for script in out.glob("*.sh"):
        assert os.access(script, os.X_OK)
        syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
@pytest.mark.parametrize(("version", "advert"), [(2, "1"), (3, "0.1")])
def test_export_keepalived_passes_real_keepalived_config_test(
    tmp_path: Path, version: int, advert: str
) -> None:
    native = tmp_path / "node-a.yaml"
    native.write_text(NATIVE % {"version": version, "advert": advert})
    out = tmp_path / "keepalived"
    assert tandem("config", "export-keepalived", native, "-o", out).returncode == 0
    checked = subprocess.run(
        ["keepalived", "-t", "-f", str(out / "keepalived.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
def test_export_keepalived_real_keepalived_rejects_missing_scripts(tmp_path: Path) -> None:
    """Guards the test above: keepalived -t does fail when the scripts are not where it looks."""
    native = tmp_path / "node-a.yaml"
    native.write_text(NATIVE % {"version": 2, "advert": "1"})
    out = tmp_path / "keepalived"
    missing = tmp_path / "elsewhere"
    exported = tandem("config", "export-keepalived", native, "-o", out, "--script-dir", missing)
    assert exported.returncode == 0, exported.stderr
    checked = subprocess.run(
        ["keepalived", "-t", "-f", str(out / "keepalived.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode != 0


def test_config_reference_lists_every_top_level_section() -> None:
    result = tandem("config", "reference")
    assert result.returncode == 0, result.stderr
    for key in TOP_LEVEL_SECTIONS:
        assert f"| `{key}` |" in result.stdout
    assert result.stdout.startswith("# Tandem configuration reference")


def test_install_dry_run_prints_plan_and_changes_nothing(tmp_path: Path) -> None:
    script = REPO / "deploy" / "install.sh"
    env = {
        **os.environ,
        "TANDEM_PREFIX": str(tmp_path / "opt"),
        "TANDEM_ETC": str(tmp_path / "etc"),
    }
    result = subprocess.run(
        ["bash", str(script), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    for step in ("useradd", "python3 -m venv", "pip install", "tandem.yaml", "systemctl enable"):
        assert step in plan, step
    assert str(tmp_path / "opt") in plan
    assert not (tmp_path / "opt").exists()
    assert not (tmp_path / "etc").exists()


def test_deploy_default_config_validates() -> None:
    result = tandem("config", "validate", REPO / "deploy" / "tandem.yaml")
    assert result.returncode == 0, result.stderr


def test_deploy_unit_runs_unprivileged_with_network_capabilities_only() -> None:
    lines = (REPO / "deploy" / "tandem.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[:1] != "#")
    assert settings["ExecStart"] == "/opt/tandem/.venv/bin/tandem run -c /etc/tandem/tandem.yaml"
    assert settings["User"] == settings["Group"] == "tandem"
    assert settings["AmbientCapabilities"] == "CAP_NET_RAW CAP_NET_ADMIN"
    assert settings["CapabilityBoundingSet"] == settings["AmbientCapabilities"]
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "always"


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    """Every metric the dashboard queries is one the API documents (counters gain _total)."""
    metrics_doc = (REPO / "src" / "tandem" / "api" / "metrics.py").read_text()
    documented = set(re.findall(r"``(tandem_\w+)", metrics_doc))
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"tandem_\w+", e)}
    assert {"tandem_role", "tandem_term", "tandem_outbox_depth"} <= used
    assert used <= documented, used - documented
