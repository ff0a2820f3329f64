"""keepalived keywords that change behaviour: implemented as keepalived 2.2.7 does, or refused."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tandem.config.keepalived import (
    ScriptUser,
    TrackedInterface,
    VirtualAddress,
    analyse_file,
    to_instance_config,
)
from tandem.vrrp.types import SourceCheck

LOCAL = IPv4Address("10.0.0.1")


def conf(tmp_path: Path, instance: str = "", globals_: str = "", scripts: str = "") -> Path:
    """A one-instance keepalived.conf with `instance` lines added inside vrrp_instance VI_1."""
    path = tmp_path / "keepalived.conf"
    path.write_text(
        f"global_defs {{\n{globals_}\n}}\n{scripts}\n"
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n"
        "  unicast_peer {\n    10.0.0.2\n  }\n"
        f"  virtual_ipaddress {{\n    10.0.0.100/24\n  }}\n{instance}\n}}\n"
    )
    return path


def problems(path: Path) -> tuple[list[str], list[str]]:
    result = analyse_file(path)
    as_text = [f"{p.line}: {p.field}: {p.message}" for p in result.errors]
    return as_text, [f"{p.line}: {p.field}: {p.message}" for p in result.warnings]


def only_instance(path: Path):  # type: ignore[no-untyped-def]
    result = analyse_file(path)
    assert result.errors == (), result.errors
    assert result.config is not None
    return result.config, result.config.instances[0]


# ---- check_unicast_src ----


@pytest.mark.parametrize(
    ("instance", "globals_", "expected"),
    [
        ("", "", SourceCheck.OFF),
        ("  check_unicast_src", "", SourceCheck.KEEPALIVED),
        ("", "  vrrp_check_unicast_src", SourceCheck.KEEPALIVED),
    ],
)
def test_check_unicast_src_maps_to_source_check(
    tmp_path: Path, instance: str, globals_: str, expected: SourceCheck
) -> None:
    cfg, inst = only_instance(conf(tmp_path, instance, globals_))
    assert to_instance_config(inst, cfg, LOCAL).source_check is expected


def test_check_unicast_src_without_peers_warns_no_effect(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n check_unicast_src\n"
        " virtual_ipaddress {\n  10.0.0.9\n }\n}\n"
    )
    errors, warnings = problems(path)
    assert errors == []
    assert warnings == [
        "4: vrrp_instance VI_1.check_unicast_src: has no effect without unicast_peer, "
        "as in keepalived"
    ]


# ---- gratuitous ARP ----


def test_garp_master_delay_and_repeat_instance_wins_over_global(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "  garp_master_delay 7\n  garp_master_repeat 2",
        "  vrrp_garp_master_delay 3\n  vrrp_garp_master_repeat 9",
    )
    cfg, inst = only_instance(path)
    engine = to_instance_config(inst, cfg, LOCAL)
    assert (engine.garp_master_delay, engine.garp_master_repeat) == (7.0, 2)


def test_garp_master_defaults_are_keepalived_five_and_five(tmp_path: Path) -> None:
    cfg, inst = only_instance(conf(tmp_path))
    engine = to_instance_config(inst, cfg, LOCAL)
    assert (engine.garp_master_delay, engine.garp_master_repeat) == (5.0, 5)


def test_garp_master_repeat_zero_becomes_one_with_warning(tmp_path: Path) -> None:
    path = conf(tmp_path, "  garp_master_repeat 0")
    errors, warnings = problems(path)
    assert errors == []
    assert "must be greater than 0; 1 is used, as keepalived" in warnings[0]
    cfg, inst = only_instance(path)
    assert to_instance_config(inst, cfg, LOCAL).garp_master_repeat == 1


def test_garp_interval_nonzero_refused_with_line(tmp_path: Path) -> None:
    errors, _ = problems(conf(tmp_path, globals_="  vrrp_garp_interval 0.001"))
    assert errors == [
        "2: global_defs.vrrp_garp_interval: 0.001 s between gratuitous ARPs is not supported; "
        "Tandem sends each burst back to back (use 0)"
    ]


# ---- track_interface ----


def test_track_interface_weights_kept_and_own_interface_ignored(tmp_path: Path) -> None:
    path = conf(tmp_path, "  track_interface {\n    eth1 weight -5\n    eth0\n    eth2\n  }")
    errors, warnings = problems(path)
    assert errors == []
    assert any("eth0 is this instance's own interface" in w for w in warnings)
    _, inst = only_instance(path)
    assert inst.track_interfaces == (TrackedInterface("eth1", -5), TrackedInterface("eth2", None))


@pytest.mark.parametrize("option", ["reverse", "noreverse"])
def test_track_interface_reverse_refused(tmp_path: Path, option: str) -> None:
    errors, _ = problems(conf(tmp_path, f"  track_interface {{\n    eth1 weight 5 {option}\n  }}"))
    assert errors == [
        f"15: vrrp_instance VI_1.track_interface: 'weight N {option}' is not supported"
    ]


def test_vrrp_script_weight_reverse_refused(tmp_path: Path) -> None:
    scripts = 'vrrp_script chk {\n  script "/bin/true"\n  weight 10 reverse\n}\n'
    errors, _ = problems(conf(tmp_path, scripts=scripts))
    assert errors == ["6: vrrp_script chk.weight: 'weight N reverse' is not supported"]


# ---- virtual_ipaddress options ----


def vip_line(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "k.conf"
    path.write_text(
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n"
        f" virtual_ipaddress {{\n  {line}\n }}\n}}\n"
    )
    return path


NET = IPv4Interface("10.1.2.3/24")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("10.1.2.3/24 brd -", VirtualAddress(NET, broadcast=IPv4Address("10.1.2.0"))),
        ("10.1.2.3/24 scope host label eth0:x", VirtualAddress(NET, label="eth0:x", scope=254)),
        ("10.1.2.3/24 scope 17", VirtualAddress(NET, scope=17)),
        (
            "10.1.2.3 dev eth9 no_track",
            VirtualAddress(IPv4Interface("10.1.2.3/32"), dev="eth9", track=False),
        ),
    ],
)
def test_virtual_ipaddress_options_parsed(
    tmp_path: Path, line: str, expected: VirtualAddress
) -> None:
    _, inst = only_instance(vip_line(tmp_path, line))
    assert inst.virtual_addresses == (expected,)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10.1.2.3/24 peer 10.1.2.4", "unsupported virtual_ipaddress option 'peer'"),
        ("10.1.2.3/24 label", "'label' needs a value"),
        ("10.1.2.3/24 label abcdefghijklmnop", "label 'abcdefghijklmnop' is not 1..15 bytes long"),
        ("10.1.2.3/24 scope galaxy", "scope 'galaxy' is not one of global, site, link, host"),
        ("10.1.2.3/31 brd +", "prefix /31 is too long for brd"),
        ("10.1.2.3/24 dev eth0 dev eth1", "'dev' given twice"),
    ],
)
def test_virtual_ipaddress_bad_option_is_error_with_line(
    tmp_path: Path, line: str, message: str
) -> None:
    errors, _ = problems(vip_line(tmp_path, line))
    assert len(errors) == 1 and errors[0].startswith("5: vrrp_instance VI_1.virtual_ipaddress:")
    assert message in errors[0]


# ---- notify SCRIPT [USER [GROUP]] ----


def test_notify_quoted_script_with_user_and_group(tmp_path: Path) -> None:
    path = conf(tmp_path, '  notify_master "/etc/ka/master.sh now" operator staff')
    errors, warnings = problems(path)
    assert (errors, warnings) == ([], [])
    _, inst = only_instance(path)
    assert inst.notify_master == "/etc/ka/master.sh now"
    assert inst.notify_users["notify_master"].user == "operator"
    assert inst.notify_users["notify_master"].group == "staff"


def test_notify_unquoted_words_are_a_user_with_warning(tmp_path: Path) -> None:
    path = conf(tmp_path, "  notify_backup /etc/ka/notify.sh backup")
    _, warnings = problems(path)
    assert warnings == [
        "14: vrrp_instance VI_1.notify_backup: runs '/etc/ka/notify.sh' as user 'backup': "
        "keepalived reads the words after an unquoted script as USER [GROUP]; quote the "
        "command to pass arguments"
    ]
    _, inst = only_instance(path)
    assert inst.notify_backup == "/etc/ka/notify.sh"
    assert inst.notify_users == {
        "notify_backup": ScriptUser("backup", None, inst.notify_locations["notify_backup"])
    }


def test_notify_too_many_words_is_error(tmp_path: Path) -> None:
    errors, _ = problems(conf(tmp_path, "  notify /etc/ka/n.sh a b c"))
    assert errors == [
        "14: vrrp_instance VI_1.notify: expects SCRIPT [USER [GROUP]]; quote a command that "
        "has arguments"
    ]


def test_script_user_and_fifo_owner_parsed(tmp_path: Path) -> None:
    path = conf(tmp_path, globals_="  script_user op staff\n  vrrp_notify_fifo /run/ka.fifo op")
    cfg, _ = only_instance(path)
    assert (cfg.globals.script_user, cfg.globals.script_group) == ("op", "staff")
    assert cfg.globals.notify_fifo_owner is not None
    assert cfg.globals.notify_fifo_owner.user == "op"
