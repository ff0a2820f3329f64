"""keepalived.conf: warnings for keepalived's quiet corrections, mapping to the engine, merging."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tandem.config.keepalived import (
    KeepalivedConfig,
    Location,
    analyse_file,
    check_file,
    parse_file,
    parse_statements,
    to_instance_config,
)
from tandem.vrrp.types import InstanceConfig, SourceCheck, State

DATA = Path(__file__).resolve().parent.parent / "data" / "keepalived"
GOOD = DATA / "good"
BROKEN = DATA / "broken"
# The project's shared/ folder sits beside the checkout (here and in CI).
SHARED = Path(__file__).resolve().parents[3] / "shared"
VECTORS = SHARED / "vectors" / "keepalived-2.2.7"
LOCAL = IPv4Address("10.0.0.127")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory removed after the test, whatever its outcome."""
    with tempfile.TemporaryDirectory(prefix="tandem-kaconf-") as name:
        yield Path(name)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MINIMAL_INSTANCE = """\
vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 51
  virtual_ipaddress {
    10.0.0.1/24
  }
}
"""


# ---- keepalived's quiet corrections become warnings ----


def analyse_text(directory: Path, text: str) -> tuple[list[str], list[str]]:
    result = analyse_file(write(directory, "k.conf", text))
    return [str(e) for e in result.errors], [str(w) for w in result.warnings]


def test_analyse_file_vrrp_strict_accepted_with_warning(workdir: Path) -> None:
    errors, warnings = analyse_text(workdir, "global_defs {\n  vrrp_strict\n}\n" + MINIMAL_INSTANCE)

    assert errors == []
    assert any(":2: global_defs.vrrp_strict:" in w and "not enforced" in w for w in warnings)


def test_analyse_file_nopreempt_with_state_master_cleared_with_warning(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace("  interface eth0\n", "  state MASTER\n  nopreempt\n")
    text = text.replace("virtual_router_id 51\n", "virtual_router_id 51\n  interface eth0\n")
    conf = write(workdir, "k.conf", text)

    result = analyse_file(conf)

    assert result.config is not None
    assert result.config.instances[0].nopreempt is False
    assert any(w.line == 3 and "will preempt" in w.message for w in result.warnings)


def test_analyse_file_long_auth_pass_warns_and_mapping_truncates(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace(
        "  virtual_ipaddress",
        "  authentication {\n    auth_type PASS\n    auth_pass 0123456789\n  }\n"
        "  virtual_ipaddress",
    )
    result = analyse_file(write(workdir, "k.conf", text))

    assert result.errors == ()
    assert any(w.line == 6 and "longer than 8 bytes" in w.message for w in result.warnings)
    assert result.config is not None
    engine = to_instance_config(result.config.instances[0], result.config, LOCAL)
    assert engine.auth_pass == b"01234567"


def test_analyse_file_repeated_keyword_last_value_wins_with_warning(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace(
        "  interface eth0\n", "  interface eth0\n  priority 10\n  priority 20\n"
    )
    result = analyse_file(write(workdir, "k.conf", text))

    assert result.config is not None
    assert result.config.instances[0].priority == 20
    assert [(w.line, w.field) for w in result.warnings] == [(4, "vrrp_instance VI_1.priority")]


def test_analyse_file_v3_rounds_advert_int_to_centiseconds(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace(
        "  interface eth0\n", "  interface eth0\n  version 3\n  advert_int 0.123\n"
    )
    result = analyse_file(write(workdir, "k.conf", text))

    assert result.config is not None
    assert result.config.instances[0].advert_int == pytest.approx(0.12)
    assert any(w.line == 4 and "rounded" in w.message for w in result.warnings)


def test_analyse_file_no_instance_is_an_error(workdir: Path) -> None:
    errors, _ = analyse_text(workdir, "global_defs {\n  router_id x\n}\n")

    assert len(errors) == 1
    assert "no vrrp_instance" in errors[0]


def test_analyse_file_mail_settings_ignored_with_warning(workdir: Path) -> None:
    text = (
        "global_defs {\n  notification_email {\n    ops@example.com\n  }\n"
        "  smtp_server 127.0.0.1\n}\n"
    )
    errors, warnings = analyse_text(workdir, text + MINIMAL_INSTANCE)

    assert errors == []
    assert len(warnings) == 2


def test_analyse_file_peer_equal_to_own_source_is_an_error(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace(
        "  interface eth0\n",
        "  interface eth0\n  unicast_src_ip 10.0.0.2\n  unicast_peer {\n    10.0.0.2\n  }\n",
    )
    result = analyse_file(write(workdir, "k.conf", text))

    assert [(e.line, e.field) for e in result.errors] == [(4, "vrrp_instance VI_1.unicast_peer")]


# ---- mapping to the engine ----


def seed(name: str) -> KeepalivedConfig:
    return parse_file(DATA / name)


def test_to_instance_config_seed_master_maps_every_field() -> None:
    cfg = seed("seed_master.conf")

    engine = to_instance_config(cfg.instances[0], cfg, LOCAL)

    assert engine == InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=100,
        advert_interval=1.0,
        local_address=LOCAL,
        version=2,
        initial_state=State.MASTER,
        preempt=True,
        preempt_delay=0.0,
        vips=(IPv4Interface("192.160.127.254/17"),),
        auth_pass=b"abcdefgh",
        skip_check_adv_addr=True,
        unicast_peers=(IPv4Address("10.0.0.223"),),
        source_check=SourceCheck.OFF,  # no check_unicast_src: keepalived believes any sender
        garp_master_delay=5.0,
        garp_master_repeat=5,
    )


def test_to_instance_config_seed_backup_nopreempt_disables_preempt() -> None:
    cfg = seed("seed_backup.conf")

    engine = to_instance_config(cfg.instances[0], cfg, IPv4Address("10.0.0.223"))

    assert engine.preempt is False
    assert engine.initial_state is State.BACKUP
    assert engine.priority == 90
    assert engine.local_address == IPv4Address("10.0.0.223")


@pytest.mark.skipif(not VECTORS.is_dir(), reason="keepalived vectors not present")
def test_to_instance_config_unicast_src_ip_wins_over_interface_address() -> None:
    cfg = parse_file(VECTORS / "v2_pass.conf")

    engine = to_instance_config(cfg.instances[0], cfg, LOCAL)

    assert engine.local_address == IPv4Address("10.251.0.1")


@pytest.mark.skipif(not VECTORS.is_dir(), reason="keepalived vectors not present")
def test_to_instance_config_v3_drops_authentication() -> None:
    cfg = parse_file(VECTORS / "v3_pass.conf")

    engine = to_instance_config(cfg.instances[0], cfg, LOCAL)

    assert engine.version == 3
    assert engine.auth_pass is None


def test_to_instance_config_no_authentication_maps_to_none() -> None:
    cfg = parse_file(GOOD / "full.conf")

    engine = to_instance_config(cfg.instance("VI_FAST"), cfg, LOCAL)

    assert engine.auth_pass is None
    assert engine.advert_interval == pytest.approx(0.25)
    assert engine.version == 3


def test_to_instance_config_global_version_is_default(workdir: Path) -> None:
    conf = write(workdir, "k.conf", "global_defs {\n  vrrp_version 3\n}\n" + MINIMAL_INSTANCE)
    cfg = parse_file(conf)

    assert to_instance_config(cfg.instances[0], cfg, LOCAL).version == 3


# ---- recovery and merging ----


def test_check_file_missing_brace_recovers_for_following_sections() -> None:
    problems = check_file(BROKEN / "missing_brace.conf")

    assert [(p.line, p.field) for p in problems] == [(1, "vrrp_instance VI_1")]


def test_analyse_file_missing_brace_keeps_later_instance_parsed(workdir: Path) -> None:
    text = (
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n"
        + MINIMAL_INSTANCE.replace("VI_1", "VI_2").replace(" 51", " 52")
        + MINIMAL_INSTANCE.replace("VI_1", "VI_3").replace(" 51", " 53")
    )
    statements, problems = parse_statements(write(workdir, "k.conf", text))

    assert [(p.line, p.field) for p in problems] == [(1, "vrrp_instance VI_1")]
    assert [(s.keyword, s.args) for s in statements] == [
        ("vrrp_instance", ("VI_1",)),
        ("vrrp_instance", ("VI_2",)),
        ("vrrp_instance", ("VI_3",)),
    ]
    assert all(s.block is not None and len(s.block) >= 2 for s in statements)


def test_parse_file_several_global_defs_merge(workdir: Path) -> None:
    text = "global_defs {\n  router_id r1\n}\nglobal_defs {\n  vrrp_version 3\n}\n"
    cfg = parse_file(write(workdir, "k.conf", text + MINIMAL_INSTANCE))

    assert (cfg.globals.router_id, cfg.globals.vrrp_version) == ("r1", 3)
    assert cfg.globals.location == Location(str(workdir / "k.conf"), 1)


def test_check_file_include_of_directory_is_an_error(workdir: Path) -> None:
    (workdir / "sub").mkdir()
    top = write(workdir, "k.conf", MINIMAL_INSTANCE + "include sub\n")

    problems = check_file(top)

    assert [(p.line, p.field) for p in problems] == [(8, "include")]
    assert "directory" in problems[0].message


def test_check_file_deep_include_chain_is_cut(workdir: Path) -> None:
    for depth in range(20):
        write(workdir, f"f{depth}.conf", f"include f{depth + 1}.conf\n")
    write(workdir, "f20.conf", MINIMAL_INSTANCE)

    problems = check_file(workdir / "f0.conf")

    assert len(problems) == 1
    assert "nested deeper" in problems[0].message


def test_check_file_non_ascii_digits_rejected(workdir: Path) -> None:
    text = MINIMAL_INSTANCE.replace(
        "  interface eth0\n", "  interface eth0\n  priority \u0661\u0660\n"
    )

    problems = check_file(write(workdir, "k.conf", text))

    assert [(p.line, p.field) for p in problems] == [(3, "vrrp_instance VI_1.priority")]


def test_parse_file_logs_each_warning(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = write(workdir, "k.conf", "global_defs {\n  vrrp_strict\n}\n" + MINIMAL_INSTANCE)

    with caplog.at_level("WARNING", logger="tandem.config.keepalived"):
        cfg = parse_file(conf)

    assert [r.getMessage() for r in caplog.records] == [str(w) for w in cfg.warnings]
    assert len(cfg.warnings) == 1
