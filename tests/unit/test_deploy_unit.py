"""deploy/tandem.service: its systemd sandbox rating and the privileges it grants."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "tandem.service"
MAX_EXPOSURE = 2.0
CAPABILITIES = {"CAP_NET_RAW", "CAP_NET_ADMIN"}
# The capability lines systemd-analyze may still mark as exposed: exactly the two we grant.
EXPOSED_CAPABILITY_LINES = {
    "CapabilityBoundingSet=~CAP_NET_ADMIN",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys repeat), comments and sections dropped."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def security() -> str:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Overall exposure level" in result.stdout, result.stdout + result.stderr
    return result.stdout


def test_deploy_unit_security_exposure_at_most_two(security: str) -> None:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", security)
    assert match is not None, security
    assert float(match.group(1)) <= MAX_EXPOSURE, security


def test_deploy_unit_security_only_the_two_network_capabilities_exposed(security: str) -> None:
    exposed = {
        line.split()[1]
        for line in security.splitlines()
        if line.startswith("✗") and "Capabilit" in line.split()[1]
    }
    assert exposed == EXPOSED_CAPABILITY_LINES | {"AmbientCapabilities="}, security
    granted = {line.split()[1] for line in security.splitlines() if line.startswith("✓")} & {
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "CapabilityBoundingSet=~CAP_SYS_(NICE|RESOURCE)",
    }
    assert len(granted) == 2, security  # no CAP_SYS_NICE: real time comes from LimitRTPRIO


def test_deploy_unit_capability_sets_are_exactly_net_raw_and_net_admin() -> None:
    settings = unit_settings(UNIT)
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        (value,) = settings[key]
        assert set(value.split()) == CAPABILITIES, key
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["User"] == ["tandem"] and settings["Group"] == ["tandem"]


def test_deploy_unit_real_time_by_rlimit_and_writable_paths_limited() -> None:
    settings = unit_settings(UNIT)
    assert settings["LimitRTPRIO"] == ["1"]
    assert settings["LimitRTTIME"] and settings["LimitRTTIME"][0] not in ("infinity", "")
    assert "RestrictRealtime" not in settings  # it would refuse SCHED_RR to the VRRP process
    assert settings["ProtectSystem"] == ["strict"]
    assert set(settings["ReadWritePaths"][0].split()) == {"/var/lib/tandem", "/etc/tandem"}
    assert settings["UMask"] == ["0077"]
    families = set(settings["RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"}


def test_deploy_unit_system_calls_the_node_needs_stay_allowed() -> None:
    """capset: hooks are forked from a thread that drops the capabilities first (it fails
    without it); sched_setscheduler: the VRRP process takes SCHED_RR under LimitRTPRIO."""
    settings = unit_settings(UNIT)
    filters = settings["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert any(f.startswith("~") and "@privileged" in f[1:].split() for f in filters)
    readded = {name for f in filters if not f.startswith(("~", "@")) for name in f.split()}
    assert readded == {"capset", "sched_setscheduler"}
    assert settings["SystemCallErrorNumber"] == ["EPERM"]


def test_deploy_unit_ip_traffic_limited_to_plant_addresses() -> None:
    settings = unit_settings(UNIT)
    assert settings["IPAddressDeny"] == ["any"]
    allowed = {entry for line in settings["IPAddressAllow"] for entry in line.split()}
    assert {"localhost", "multicast", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= allowed
    assert "any" not in allowed and "0.0.0.0/0" not in allowed
