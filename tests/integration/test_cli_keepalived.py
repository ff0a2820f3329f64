"""`tandem keepalived` as an operator runs it: config test mode and missing files."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.netns.vrrp_nodes import TANDEM

DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
EXIT_CONFIG = 2
# keepalived-style problem line: file:line: field: message
PROBLEM = re.compile(r"^(?P<file>\S+):(?P<line>\d+): (?P<rest>.+)$")


def _tandem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TANDEM), "keepalived", *args], capture_output=True, text=True, timeout=30
    )


def _with_scripts_in(directory: Path, name: str) -> Path:
    """The seed config with its /etc/keepalived scripts present, in a root-owned 0755 dir."""
    directory.chmod(0o755)
    text = (DATA / name).read_text()
    for script in set(re.findall(r"/etc/keepalived/(\w+\.sh)", text)):
        path = directory / script
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    conf = directory / name
    conf.write_text(text.replace("/etc/keepalived/", f"{directory}/"))
    return conf


@pytest.mark.parametrize("name", ["seed_master.conf", "seed_backup.conf"])
def test_cli_keepalived_config_test_seed_config_with_scripts_exits_0(name: str) -> None:
    # Under /tmp, not pytest's 0700 tmp_path: a root script's directories must be safe.
    directory = Path(tempfile.mkdtemp(prefix="tdm-seed-", dir="/tmp"))
    try:
        done = _tandem("-t", "-f", str(_with_scripts_in(directory, name)))
    finally:
        shutil.rmtree(directory)

    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("name", ["seed_master.conf", "seed_backup.conf"])
def test_cli_keepalived_config_test_missing_scripts_named_with_line_and_exit_2(name: str) -> None:
    # keepalived -t fails here too ("Disabling track script ... since not found/accessible").
    done = _tandem("-t", "-f", str(DATA / name))

    assert done.returncode == EXIT_CONFIG
    lines = done.stderr.strip().splitlines()
    text = (DATA / name).read_text().splitlines()
    assert lines and all(PROBLEM.match(line) for line in lines)
    for line in lines:
        match = PROBLEM.match(line)
        assert match is not None and "cannot access /etc/keepalived/" in match["rest"]
        assert "/etc/keepalived/" in text[int(match["line"]) - 1] or "vrrp_script" in match["rest"]


def test_cli_keepalived_config_test_broken_file_prints_file_line_and_exits_2(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "keepalived.conf"
    seed = (DATA / "seed_backup.conf").read_text().splitlines()
    line = next(i for i, text in enumerate(seed, 1) if text.strip().startswith("priority"))
    seed[line - 1] = "priority 300"
    conf.write_text("\n".join(seed) + "\n")

    done = _tandem("-t", "-f", str(conf))

    assert done.returncode == EXIT_CONFIG
    problems = [PROBLEM.match(text) for text in done.stderr.splitlines()]
    assert len(problems) == 1 and problems[0] is not None, done.stderr
    assert problems[0]["file"] == str(conf)
    assert int(problems[0]["line"]) == line
    assert "priority" in problems[0]["rest"]
    assert "configuration OK" not in done.stdout


@pytest.mark.parametrize("conf", sorted((DATA / "broken").glob("*.conf")), ids=lambda p: p.stem)
def test_cli_keepalived_config_test_broken_corpus_every_line_located_exits_2(
    conf: Path,
) -> None:
    done = _tandem("-t", "-f", str(conf))

    assert done.returncode == EXIT_CONFIG
    lines = done.stderr.splitlines()
    assert lines, "no problem reported"
    for text in lines:
        assert PROBLEM.match(text), text
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", [["-t"], []], ids=["config-test", "run"])
def test_cli_keepalived_missing_file_clear_message_exits_2(tmp_path: Path, mode: list[str]) -> None:
    missing = tmp_path / "missing.conf"

    done = _tandem(*mode, "-f", str(missing))

    assert done.returncode == EXIT_CONFIG
    assert str(missing) in done.stderr
    assert "cannot read" in done.stderr or "No such file" in done.stderr
    assert "Traceback" not in done.stderr
