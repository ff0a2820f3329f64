"""Unit tests for keepalived import/export and the generated config reference."""

from __future__ import annotations

import shutil
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path, PurePosixPath

import pytest

from tandem.config.export import export_keepalived
from tandem.config.hub import load_config_text
from tandem.config.keepalived import KeepalivedConfig, parse_file
from tandem.config.migrate import ImportOptions, hub_part, import_keepalived
from tandem.config.reference import render_reference
from tandem.config.scriptread import (
    ScriptText,
    only_switches_service,
    polls_local_api,
    read_scripts,
)
from tandem.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "data" / "keepalived"
# The guide's scripts, verbatim.
GUIDE_SCRIPTS = {
    "master.sh": "#!/bin/bash\nsystemctl start neuronex\n",
    "backup.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "fault.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "check_alive.sh": (
        "#!/bin/bash\nif ! curl 127.0.0.1:8085 >/dev/null 2>&1; then "
        'echo "neuronex start failed"; exit 1; fi\n'
    ),
}


def _seed(tmp_path: Path, name: str, scripts: dict[str, str] | None = None) -> KeepalivedConfig:
    """A seed config copied next to the guide's scripts, as an operator would lay them out."""
    shutil.copy(SEEDS / name, tmp_path / name)
    for script, text in (GUIDE_SCRIPTS if scripts is None else scripts).items():
        (tmp_path / script).write_text(text)
    return parse_file(tmp_path / name)


def _import(tmp_path: Path, name: str, **options: object):
    cfg = _seed(tmp_path, name)
    return import_keepalived(cfg, read_scripts(cfg), ImportOptions(**options))  # type: ignore[arg-type]


def _notes(result, kind: str) -> list[str]:
    return [n.text for n in result.notes if n.kind == kind]


def test_import_seed_master_maps_vrrp_section(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_master.conf", node="node-a")
    ha = result.config.ha
    assert ha is not None
    assert result.config.node == "node-a"
    assert ha.priority == 100
    assert ha.recovery == "automatic"
    assert ha.vrrp.transport == "raw"
    assert ha.vrrp.interface == "eth0"
    assert ha.vrrp.vrid == 51
    assert ha.vrrp.version == 2
    assert ha.vrrp.advert_interval == 1
    assert ha.vrrp.auth_pass == "abcdefgh"
    assert ha.vrrp.vips == [IPv4Interface("192.160.127.254/17")]
    assert ha.vrrp.unicast_peers == [IPv4Address("10.0.0.223")]
    assert ha.peer_url == "http://10.0.0.223:8085"


def test_import_seed_backup_nopreempt_maps_to_automatic_recovery(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_backup.conf")
    ha = result.config.ha
    assert ha is not None
    assert ha.priority == 90
    assert ha.recovery == "automatic"
    assert ha.peer_url == "http://10.0.0.127:8085"
    assert any("nopreempt" in text for text in _notes(result, "mapped"))


def test_import_recovery_option_overrides_nopreempt(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_backup.conf", recovery="manual")
    assert result.config.ha is not None
    assert result.config.ha.recovery == "manual"


def test_import_seed_master_replaces_check_and_service_scripts(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_master.conf")
    ha = result.config.ha
    assert ha is not None
    assert ha.hooks.notify_master is None
    assert ha.hooks.notify_fault is None
    replaced = _notes(result, "replaced")
    assert any("check_ex_alived" in t and "internal health" in t for t in replaced)
    assert any("notify_master" in t and "role gate" in t for t in replaced)
    assert any("notify_fault" in t for t in replaced)


def test_import_explains_dropped_settings_with_reason(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_master.conf")
    dropped = _notes(result, "dropped")
    assert any("state MASTER" in t for t in dropped)
    assert any("global_defs" in t for t in dropped)
    assert all(" because " in t for t in dropped)


def test_import_notify_script_doing_more_is_kept_as_hook(tmp_path: Path) -> None:
    scripts = dict(GUIDE_SCRIPTS)
    scripts["master.sh"] = "#!/bin/sh\nsystemctl start neuronex\nlogger became master\n"
    cfg = _seed(tmp_path, "seed_backup.conf", scripts)
    result = import_keepalived(cfg, read_scripts(cfg))
    assert result.config.ha is not None
    assert result.config.ha.hooks.notify_master == "/etc/keepalived/master.sh"
    assert result.config.ha.hooks.notify_backup is None
    assert any("still starts or stops" in t for t in _notes(result, "warning"))


def test_import_unreadable_notify_script_is_kept_with_note(tmp_path: Path) -> None:
    cfg = _seed(tmp_path, "seed_backup.conf", scripts={})
    result = import_keepalived(cfg, read_scripts(cfg))
    assert result.config.ha is not None
    assert result.config.ha.hooks.notify_backup == "/etc/keepalived/backup.sh"
    assert len(_notes(result, "kept")) == 2


def test_import_unreadable_track_script_raises_with_line(tmp_path: Path) -> None:
    cfg = _seed(tmp_path, "seed_master.conf", scripts={})
    with pytest.raises(ConfigError) as caught:
        import_keepalived(cfg, read_scripts(cfg))
    (problem,) = caught.value.problems
    assert problem.line == 9
    assert "--drop-check check_ex_alived" in problem.message


def test_import_foreign_track_script_raises_unless_dropped(tmp_path: Path) -> None:
    scripts = dict(GUIDE_SCRIPTS)
    scripts["check_alive.sh"] = "#!/bin/sh\nping -c1 -W1 10.0.0.1\n"
    cfg = _seed(tmp_path, "seed_master.conf", scripts)
    with pytest.raises(ConfigError, match="checks something other than the hub"):
        import_keepalived(cfg, read_scripts(cfg))
    options = ImportOptions(drop_checks=frozenset({"check_ex_alived"}))
    result = import_keepalived(cfg, read_scripts(cfg), options)
    assert any("check_ex_alived" in t for t in _notes(result, "dropped"))


def test_import_secret_generated_per_run_and_given_one_kept(tmp_path: Path) -> None:
    first = _import(tmp_path, "seed_backup.conf").config.ha
    second = _import(tmp_path, "seed_backup.conf").config.ha
    given = _import(tmp_path, "seed_backup.conf", secret="shared-secret-123").config.ha
    assert first is not None and second is not None and given is not None
    assert first.secret != second.secret
    assert first.secret is not None and len(first.secret) >= 8
    assert given.secret == "shared-secret-123"


def test_import_peer_url_option_wins_over_unicast_peer(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_backup.conf", peer_url="https://peer.example:9000")
    assert result.config.ha is not None
    assert result.config.ha.peer_url == "https://peer.example:9000"


def test_import_output_yaml_validates_and_has_comments(tmp_path: Path) -> None:
    result = _import(tmp_path, "seed_master.conf", node="node-a")
    reparsed = load_config_text(result.yaml_text)
    assert reparsed == result.config
    assert result.yaml_text.count("\n# ") + result.yaml_text.count("  # ") >= 5
    assert "devices: []" in result.yaml_text


def test_import_with_hub_keeps_devices_and_mqtt(tmp_path: Path) -> None:
    hub_yaml = (REPO / "examples" / "ha" / "node-a.yaml").read_text()
    cfg = _seed(tmp_path, "seed_master.conf")
    result = import_keepalived(cfg, read_scripts(cfg), hub=hub_part(hub_yaml))
    assert result.config.node == "node-a"
    assert [d.name for d in result.config.devices] == ["plc1"]
    assert result.config.api.host == "127.0.0.2"
    assert result.config.mqtt.topic == "/neuron/{node}"
    assert result.config.ha is not None
    assert result.config.ha.vrrp.transport == "raw"


def test_import_several_instances_need_instance_option(tmp_path: Path) -> None:
    text = (SEEDS / "seed_backup.conf").read_text()
    second = text[text.index("vrrp_instance") :].replace("VI_1", "VI_2").replace(" 51", " 52")
    conf = tmp_path / "two.conf"
    conf.write_text(text + "\n" + second)
    cfg = parse_file(conf)
    with pytest.raises(ConfigError, match="--instance"):
        import_keepalived(cfg, read_scripts(cfg))
    result = import_keepalived(cfg, read_scripts(cfg), ImportOptions(instance="VI_2"))
    assert result.config.ha is not None
    assert result.config.ha.vrrp.vrid == 52


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#!/bin/bash\nsystemctl start neuronex\n", True),
        ("#!/bin/sh\nsudo systemctl stop neuronex >/dev/null 2>&1\n", True),
        ("#!/bin/sh\ndocker stop neuronex\n", True),
        ("#!/bin/sh\nsystemctl start neuronex\nlogger hi\n", False),
        ("#!/bin/sh\n# nothing\n", False),
    ],
)
def test_only_switches_service_script_text_classified(text: str, expected: bool) -> None:
    assert only_switches_service(ScriptText("/x.sh", text)) is expected


def test_polls_local_api_other_port_not_recognised() -> None:
    assert polls_local_api(ScriptText("curl -f http://localhost:8085/", None), {8085})
    assert not polls_local_api(ScriptText("curl -f http://localhost:9000/", None), {8085})
    assert not polls_local_api(ScriptText("curl -f http://10.0.0.5:8085/", None), {8085})


def test_polls_local_api_tandem_health_any_port_recognised() -> None:
    check = ScriptText("/c.sh", "#!/bin/sh\ncurl -fsS http://127.0.0.1:9100/api/v1/health\n")
    assert polls_local_api(check, {8085})


# --- export -------------------------------------------------------------------------------------

NATIVE = """
node: node-a
api: {port: 8090}
ha:
  priority: 100
  recovery: %(recovery)s
  peer_url: http://10.0.0.223:8085
  secret: abcdefghijkl
  hooks: {notify_master: /usr/local/bin/tell-scada}
  vrrp:
    interface: eth0
    version: 2
    advert_interval: 1
    auth_pass: abcdefgh
    unicast_peers: [10.0.0.223]
    vips: [192.168.127.254/17]
"""


def _native(recovery: str = "automatic"):
    return load_config_text(NATIVE % {"recovery": recovery})


def test_export_files_are_conf_and_executable_scripts() -> None:
    files = {f.name: f for f in export_keepalived(_native())}
    assert set(files) == {
        "keepalived.conf",
        "tandem-check.sh",
        "tandem-master.sh",
        "tandem-backup.sh",
        "tandem-fault.sh",
    }
    assert files["keepalived.conf"].mode == 0o644
    assert all(f.mode == 0o755 for n, f in files.items() if n.endswith(".sh"))
    assert "systemctl start tandem" in files["tandem-master.sh"].text
    assert "exec /usr/local/bin/tell-scada" in files["tandem-master.sh"].text
    assert "systemctl stop tandem" in files["tandem-backup.sh"].text
    assert "systemctl stop tandem" in files["tandem-fault.sh"].text
    assert "http://127.0.0.1:8090/api/v1/health" in files["tandem-check.sh"].text


def test_export_conf_structure_has_instance_script_and_notify() -> None:
    (conf, *_) = export_keepalived(_native(), PurePosixPath("/etc/keepalived"))
    text = conf.text
    assert "global_defs {" in text
    assert "vrrp_garp_interval 0" not in text  # keepalived 2.2.7 rejects 0
    assert "vrrp_script check_tandem {" in text
    assert 'script "/etc/keepalived/tandem-check.sh"' in text
    assert "virtual_router_id 51" in text
    assert "auth_pass abcdefgh" in text
    assert 'notify_master "/etc/keepalived/tandem-master.sh"' in text
    assert "nopreempt" not in text


def test_export_round_trip_parses_back_to_same_election(tmp_path: Path) -> None:
    native = _native("manual")
    for file in export_keepalived(native, PurePosixPath(str(tmp_path))):
        (tmp_path / file.name).write_text(file.text)
    cfg = parse_file(tmp_path / "keepalived.conf")
    (inst,) = cfg.instances
    assert native.ha is not None
    vrrp = native.ha.vrrp
    assert inst.interface == vrrp.interface
    assert inst.vrid == vrrp.vrid
    assert inst.priority == native.ha.priority
    assert inst.version == vrrp.version
    assert inst.advert_int == vrrp.advert_interval
    assert inst.auth_pass == vrrp.auth_pass
    assert list(inst.vips) == vrrp.vips
    assert list(inst.unicast_peers) == vrrp.unicast_peers
    assert inst.nopreempt  # recovery manual
    assert [t.name for t in inst.track_scripts] == ["check_tandem"]
    assert cfg.scripts["check_tandem"].fall == 3
    assert inst.notify_fault == f"{tmp_path}/tandem-fault.sh"


def test_export_import_round_trip_keeps_election(tmp_path: Path) -> None:
    native = _native()
    for file in export_keepalived(native, PurePosixPath(str(tmp_path))):
        (tmp_path / file.name).write_text(file.text)
    cfg = parse_file(tmp_path / "keepalived.conf")
    back = import_keepalived(cfg, read_scripts(cfg), ImportOptions(secret="abcdefghijkl")).config
    assert back.ha is not None and native.ha is not None
    assert back.ha.vrrp == native.ha.vrrp.model_copy(update={"transport": "raw"})
    assert back.ha.priority == native.ha.priority
    # The exported notify scripts only switch the service, so they are not re-imported.
    assert back.ha.hooks.notify_backup is None


def test_export_udp_transport_or_no_vips_refused() -> None:
    udp = load_config_text(
        "node: a\nha: {peer_url: 'http://b:8085', secret: abcdefghij, vrrp: {transport: udp, "
        "unicast_src_ip: 10.0.0.1, unicast_peers: [10.0.0.2]}}\n"
    )
    with pytest.raises(ConfigError, match="udp") as caught:
        export_keepalived(udp)
    assert any("virtual address" in p.message for p in caught.value.problems)
    with pytest.raises(ConfigError, match="no ha section"):
        export_keepalived(load_config_text("node: a\n"))


# --- reference ----------------------------------------------------------------------------------


def test_reference_committed_docs_is_up_to_date() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render_reference(), (
        "docs/configuration.md is stale: run `tandem config reference > docs/configuration.md`"
    )


def test_reference_lists_every_field_of_every_section() -> None:
    text = render_reference()
    for heading in ("## Top level", "## `api`", "## `mqtt`", "## `mqtt.tls`", "## `outbox`"):
        assert heading in text
    for heading in (
        "## `devices[] (protocol: modbus-tcp)`",
        "## `devices[] (protocol: modbus-rtu)`",
        "## `devices[] (protocol: modbus-rtu-over-tcp)`",
        "## `devices[].serial`",
        "## `devices[].groups[].tags[]`",
        "## `ha.vrrp`",
    ):
        assert heading in text
    # A section every protocol shares is shown once.
    assert text.count("## `devices[].groups[].tags[]`") == 1
    for path in ("`ha.vrrp.advert_interval`", "`devices[].groups[].tags[].word_order`"):
        assert path in text
    row = next(line for line in text.splitlines() if line.startswith("| `ha.priority`"))
    assert "`100`" in row and ">= 1, <= 254" in row
    assert "| `ha.peer_url` | string | required |" in text
