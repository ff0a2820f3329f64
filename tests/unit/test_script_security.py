"""script_user and enable_script_security as keepalived 2.2.7 applies them, on real files."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.config.keepalived import check_file, parse_file
from tandem.health.process import run_command
from tandem.health.scriptplan import plan_scripts
from tandem.health.security import ScriptFlag, check_script, default_user, resolve
from tandem.health.spawn import RunAs
from tandem.hooks import NotifyConfig, NotifyRunner

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root to create a user and root-owned scripts",
)

ROOT = RunAs(0, 0, "root")


@pytest.fixture
def system_user() -> Iterator[RunAs]:
    """A real unprivileged user, removed after the test whatever its outcome."""
    name = f"tdm-ka-{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield RunAs(entry.pw_uid, entry.pw_gid, name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def scripts_dir() -> Iterator[Path]:
    """A root-owned 0755 directory every user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tdm-scripts-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def script(directory: Path, name: str = "check.sh", mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nid -u\n")
    path.chmod(mode)
    return path


def conf(directory: Path, command: Path, globals_: str = "", notify_user: str = "") -> Path:
    path = directory / "keepalived.conf"
    path.write_text(
        f"global_defs {{\n{globals_}\n}}\n"
        f'vrrp_script chk {{\n  script "{command}"\n}}\n'
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n"
        "  virtual_ipaddress {\n    10.0.0.100/24\n  }\n  track_script {\n    chk\n  }\n"
        f'  notify_master "{command}" {notify_user}\n}}\n'
    )
    return path


# ---- the check itself ----


def test_check_script_root_script_in_user_writable_directory_is_insecure(
    system_user: RunAs, scripts_dir: Path
) -> None:
    os.chown(scripts_dir, system_user.uid, system_user.gid)
    path = script(scripts_dir)
    reported = check_script(str(path), ROOT, script_security=False)
    assert reported.flags & ScriptFlag.INSECURE and reported.runnable
    assert f"{scripts_dir} is owned by uid {system_user.uid}" in reported.reason
    refused = check_script(str(path), ROOT, script_security=True)
    assert refused.flags & ScriptFlag.INHIBIT and not refused.runnable


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_check_script_group_or_world_writable_file_is_insecure(
    scripts_dir: Path, mode: int
) -> None:
    path = script(scripts_dir, mode=mode)
    os.chown(path, 0, 100)  # a non-root group: its write bit matters
    assert not check_script(str(path), ROOT, script_security=True).runnable


def test_check_script_sticky_world_writable_directory_is_fine(scripts_dir: Path) -> None:
    sticky = scripts_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp
    assert check_script(str(script(sticky)), ROOT, script_security=True).runnable


def test_check_script_unprivileged_user_needs_no_path_check(
    system_user: RunAs, scripts_dir: Path
) -> None:
    os.chown(scripts_dir, system_user.uid, system_user.gid)  # unsafe only for root
    verdict = check_script(str(script(scripts_dir)), system_user, script_security=True)
    assert verdict.runnable and not verdict.flags & ScriptFlag.INSECURE


def test_check_script_not_executable_for_its_user_is_disabled(
    system_user: RunAs, scripts_dir: Path
) -> None:
    verdict = check_script(str(script(scripts_dir, mode=0o744)), system_user, True)
    assert not verdict.runnable and "is not executable for uid:gid" in verdict.reason


def test_check_script_missing_and_bare_name_resolution(scripts_dir: Path) -> None:
    assert check_script(str(scripts_dir / "absent.sh"), ROOT, True).flags & ScriptFlag.NOT_FOUND
    assert check_script("no-such-program-here --flag", ROOT, True).flags & ScriptFlag.NOT_FOUND
    assert check_script("true", ROOT, True).runnable  # found in PATH, root-owned all the way


def test_default_user_order_script_user_then_keepalived_script_then_self(
    system_user: RunAs,
) -> None:
    assert default_user(system_user.name, None, security=True) == system_user
    assert default_user(None, None, security=False).uid == os.geteuid()
    with pytest.raises(LookupError, match="enable_script_security"):
        default_user(None, None, security=True)  # no keepalived_script user on this host
    with pytest.raises(LookupError, match="does not exist"):
        resolve("no-such-user-tdm")


# ---- the whole config, as the engine and `-t` see it ----


def test_plan_insecure_script_disabled_with_security_and_reported_by_check_file(
    system_user: RunAs, scripts_dir: Path
) -> None:
    os.chown(scripts_dir, system_user.uid, system_user.gid)
    path = conf(scripts_dir, script(scripts_dir), "  enable_script_security\n  script_user root")
    plan = plan_scripts(parse_file(path))
    assert plan.checks == {} and plan.notify == {"VI_1": {}}
    problems = check_file(path, scripts=True)
    assert [(p.line, p.field) for p in problems] == [
        (5, "vrrp_script chk"),
        (17, "vrrp_instance VI_1.notify_master"),
    ]
    assert "track script disabled: unsafe permissions" in problems[0].message


def test_plan_without_security_runs_insecure_script_and_warns_like_keepalived(
    system_user: RunAs, scripts_dir: Path
) -> None:
    os.chown(scripts_dir, system_user.uid, system_user.gid)
    plan = plan_scripts(parse_file(conf(scripts_dir, script(scripts_dir))))
    assert plan.checks == {"chk": RunAs(0, 0, "root")}
    messages = [w.message for w in plan.warnings]
    assert (
        "SECURITY VIOLATION - scripts are being executed but script_security not enabled. "
        "There are insecure scripts." in messages
    )


def test_plan_script_user_and_per_notify_user(system_user: RunAs, scripts_dir: Path) -> None:
    path = conf(
        scripts_dir,
        script(scripts_dir),
        f"  enable_script_security\n  script_user {system_user.name}",
        notify_user="root",
    )
    plan = plan_scripts(parse_file(path))
    assert plan.checks == {"chk": system_user}
    assert plan.notify == {"VI_1": {"notify_master": RunAs(0, 0, "root")}}
    assert plan.errors == [] and plan.warnings == []  # security on: no violation line


def test_plan_unknown_script_user_disables_scripts_with_line(scripts_dir: Path) -> None:
    path = conf(scripts_dir, script(scripts_dir), "  script_user no-such-user-tdm")
    problems = check_file(path, scripts=True)
    assert [p.line for p in problems] == [4, 16]
    assert "user 'no-such-user-tdm' does not exist" in problems[0].message


def test_plan_security_without_any_default_user_disables_scripts(scripts_dir: Path) -> None:
    path = conf(scripts_dir, script(scripts_dir), "  enable_script_security")
    plan = plan_scripts(parse_file(path))
    assert plan.checks == {}
    assert "keepalived_script" in plan.errors[0].message


# ---- running as the user ----


async def test_script_and_hook_run_as_their_configured_users(
    system_user: RunAs, scripts_dir: Path
) -> None:
    path = script(scripts_dir)
    result = await run_command([str(path)], timeout=5, user=system_user)
    assert result.ok and result.output.strip() == str(system_user.uid)
    out = scripts_dir / "out"
    out.touch()
    os.chown(out, system_user.uid, system_user.gid)
    config = NotifyConfig(
        instance="VI_1",
        notify_master=f"id -u > {out}; id -G >> {out}",
        users={"notify_master": system_user},
    )
    async with NotifyRunner(config) as runner:
        runner.submit("MASTER", 100)
        await runner.drain()
    uid, groups = out.read_text().split("\n", 1)
    assert uid == str(system_user.uid)
    assert groups.split() == [str(system_user.gid)]  # only its group, as keepalived
