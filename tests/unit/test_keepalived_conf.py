"""keepalived.conf compatibility: tokens, includes, the model, the checker, the engine mapping."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tandem.config.keepalived import (
    Location,
    ScriptUser,
    TrackedInterface,
    TrackedScript,
    VirtualAddress,
    analyse_file,
    check_file,
    parse_file,
    parse_statements,
)
from tandem.errors import ConfigError, ConfigProblem

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


# ---- the seed guide's two files ----


def test_parse_file_seed_master_matches_guide() -> None:
    cfg = parse_file(DATA / "seed_master.conf")

    assert cfg.globals.skip_check_adv_addr is True
    assert cfg.globals.strict is False  # commented out with '#'
    assert cfg.globals.garp_interval == 0 and cfg.globals.gna_interval == 0
    check = cfg.scripts["check_ex_alived"]
    assert check.command == "/etc/keepalived/check_alive.sh"
    assert (check.interval, check.fall, check.rise, check.weight) == (5, 3, 1, 0)
    assert check.timeout == 5  # keepalived: timeout defaults to the interval
    [inst] = cfg.instances
    assert (inst.name, inst.state, inst.interface, inst.vrid) == ("VI_1", "MASTER", "eth0", 51)
    assert (inst.priority, inst.advert_int, inst.version) == (100, 1, 2)
    assert inst.nopreempt is False  # '# nopreempt' is a comment
    assert (inst.auth_type, inst.auth_pass) == ("PASS", "abcdefgh")
    assert inst.vips == (IPv4Interface("192.160.127.254/17"),)
    assert inst.unicast_peers == (IPv4Address("10.0.0.223"),)
    assert inst.unicast_src_ip is None
    assert inst.track_scripts == (TrackedScript("check_ex_alived", None),)
    assert inst.notify_fault == "/etc/keepalived/fault.sh"
    assert inst.notify_master == "/etc/keepalived/master.sh"
    assert inst.notify_backup is None
    assert inst.location == Location(str(DATA / "seed_master.conf"), 15)


def test_parse_file_seed_backup_matches_guide() -> None:
    cfg = parse_file(DATA / "seed_backup.conf")

    assert cfg.scripts == {}
    [inst] = cfg.instances
    assert (inst.state, inst.priority, inst.nopreempt) == ("BACKUP", 90, True)
    assert (inst.auth_type, inst.auth_pass) == ("PASS", "abcdefgh")
    assert inst.vips == (IPv4Interface("192.160.127.254/17"),)
    assert inst.unicast_peers == (IPv4Address("10.0.0.127"),)
    assert inst.track_scripts == ()
    assert inst.notify_master == "/etc/keepalived/master.sh"
    assert inst.notify_backup == "/etc/keepalived/backup.sh"
    assert inst.notify_fault is None


@pytest.mark.parametrize("name", ["seed_master.conf", "seed_backup.conf"])
def test_analyse_file_seed_configs_only_warn_about_zero_garp_intervals(name: str) -> None:
    result = analyse_file(DATA / name)

    assert result.errors == ()
    # keepalived 2.2.7 itself flags the guide's `vrrp_garp_interval 0` / `vrrp_gna_interval 0`.
    assert [w.field for w in result.warnings] == [
        "global_defs.vrrp_garp_interval",
        "global_defs.vrrp_gna_interval",
    ]


def test_seed_files_are_verbatim_copies_of_the_guide() -> None:
    guide = SHARED / "seed" / "neuronex-master-backup-mode.txt"
    if not guide.exists():
        pytest.skip("seed guide not present on this machine")
    text = guide.read_text()
    for name in ("seed_master.conf", "seed_backup.conf"):
        assert (DATA / name).read_text() in text


# ---- keepalived's own capture configs ----


def vector_confs() -> list[Path]:
    return sorted(VECTORS.glob("*.conf"))


@pytest.mark.skipif(not VECTORS.is_dir(), reason="keepalived vectors not present")
@pytest.mark.parametrize("conf", vector_confs(), ids=lambda p: p.name)
def test_parse_file_keepalived_vector_configs_parse(conf: Path) -> None:
    cfg = parse_file(conf)

    [inst] = cfg.instances
    assert inst.vrid == 51
    assert inst.interface == "cvA"
    expected_version = 3 if "v3" in conf.name else 2
    assert inst.version == expected_version


@pytest.mark.skipif(not VECTORS.is_dir(), reason="keepalived vectors not present")
def test_parse_file_v3_fast_vector_keeps_centisecond_interval() -> None:
    inst = parse_file(VECTORS / "v3_fast.conf").instances[0]

    assert inst.advert_int == pytest.approx(0.1)
    assert inst.priority == 200


# ---- layout: comments, quotes, braces, includes ----


def test_parse_file_full_layout_reads_every_global_and_script_keyword() -> None:
    cfg = parse_file(GOOD / "full.conf")

    g = cfg.globals
    assert g.router_id == "edge-a"
    assert (g.garp_interval, g.gna_interval, g.garp_master_delay) == (0, 2.0, 3)
    assert (g.garp_master_repeat, g.check_unicast_src) == (2, True)
    assert g.notify_fifo_owner == ScriptUser("tandem", None, Location(str(GOOD / "full.conf"), 8))
    assert g.notify_fifo == Path("/run/tandem/notify.fifo")
    assert (g.script_user, g.script_group, g.enable_script_security) == ("tandem", "tandem", True)
    hub = cfg.scripts["chk_hub"]
    assert hub.command == "/usr/local/bin/check_hub --tag=#1 !loud"
    assert (hub.interval, hub.timeout, hub.weight, hub.rise, hub.fall) == (2, 1, -20, 2, 3)
    assert (hub.user, hub.group) == ("nobody", "nogroup")
    plc = cfg.scripts["chk_plc"]
    assert plc.command == "/usr/bin/test -e /run/plc.ok"
    assert (plc.interval, plc.timeout, plc.weight, plc.rise, plc.fall) == (1, 1, 0, 1, 1)
    assert plc.location == Location(str(GOOD / "full.conf"), 26)


def test_parse_file_full_layout_reads_every_instance_keyword() -> None:
    cfg = parse_file(GOOD / "full.conf")

    inst = cfg.instance("VI_HUB")
    assert (inst.priority, inst.advert_int, inst.nopreempt, inst.preempt_delay) == (
        150,
        2,
        True,
        10,
    )
    assert (inst.auth_type, inst.auth_pass) == ("PASS", "s3cret")
    assert inst.vips == (
        IPv4Interface("10.0.0.10/24"),
        IPv4Interface("10.0.0.11/24"),
        IPv4Interface("10.0.0.12/32"),
    )
    assert inst.virtual_addresses[1] == VirtualAddress(
        IPv4Interface("10.0.0.11/24"),
        dev="eth0",
        label="eth0:vip",
        broadcast=IPv4Address("10.0.0.255"),
        scope=253,
    )
    assert inst.virtual_addresses[2] == VirtualAddress(
        IPv4Interface("10.0.0.12/32"), dev="eth3", broadcast=IPv4Address("10.0.0.1"), track=False
    )
    assert inst.unicast_src_ip == IPv4Address("10.0.0.2")
    assert inst.unicast_peers == (IPv4Address("10.0.0.3"), IPv4Address("10.0.0.4"))
    assert inst.track_scripts == (TrackedScript("chk_hub", None), TrackedScript("chk_plc", 10))
    assert inst.track_interfaces == (TrackedInterface("eth1", -5), TrackedInterface("eth2", None))
    assert inst.notify_master == "/etc/tandem/notify.sh master"
    assert inst.notify_backup == "/etc/tandem/notify.sh"
    assert inst.notify_users == {
        "notify_backup": ScriptUser("tandem", "tandem", Location(str(GOOD / "full.conf"), 64)),
    }
    assert (inst.notify_fault, inst.notify_stop, inst.notify) == (
        "/etc/tandem/fault.sh",
        "/etc/tandem/stop.sh",
        "/etc/tandem/notify_any.sh",
    )
    assert (inst.garp_master_delay, inst.dont_track_primary) == (2, True)
    assert (inst.garp_master_repeat, inst.check_unicast_src) == (3, True)

    fast = cfg.instance("VI_FAST")
    assert (fast.version, fast.advert_int, fast.priority, fast.state) == (3, 0.25, 255, "MASTER")


def test_parse_file_glob_include_reports_included_file_locations() -> None:
    cfg = parse_file(GOOD / "with_includes.conf")

    assert [i.name for i in cfg.instances] == ["VI_INC", "VI_LOCAL"]
    inc = cfg.instance("VI_INC")
    assert inc.location == Location(str(GOOD / "conf.d" / "20-instance.conf"), 3)
    assert inc.track_scripts == (TrackedScript("chk_included", 5),)
    assert cfg.scripts["chk_included"].location == Location(
        str(GOOD / "conf.d" / "10-scripts.conf"), 2
    )
    assert cfg.scripts["chk_included"].interval == 3


def test_parse_file_include_inside_block_adds_to_that_block() -> None:
    cfg = parse_file(GOOD / "with_includes.conf")

    assert cfg.instance("VI_LOCAL").vips == (IPv4Interface("10.3.0.1/24"),)


def test_parse_file_relative_include_resolves_against_includer_not_cwd(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(workdir, "etc/sub/part.conf", MINIMAL_INSTANCE)
    top = write(workdir, "etc/keepalived.conf", "include sub/part.conf\n")
    monkeypatch.chdir(workdir)  # a different directory from the includer's

    cfg = parse_file(top)

    assert cfg.instances[0].location == Location(str(workdir / "etc" / "sub" / "part.conf"), 1)


def test_parse_file_include_glob_order_is_sorted(workdir: Path) -> None:
    write(workdir, "d/b.conf", MINIMAL_INSTANCE.replace("VI_1", "VI_B").replace(" 51", " 52"))
    write(workdir, "d/a.conf", MINIMAL_INSTANCE.replace("VI_1", "VI_A"))
    top = write(workdir, "top.conf", "include d/*.conf  # both parts\n")

    assert [i.name for i in parse_file(top).instances] == ["VI_A", "VI_B"]


def test_parse_statements_braces_on_same_line_split_into_block(workdir: Path) -> None:
    conf = write(workdir, "k.conf", "virtual_ipaddress { 10.0.0.1/24 dev eth0 }\n}\n")

    statements, problems = parse_statements(conf)

    assert statements[0].keyword == "virtual_ipaddress"
    assert statements[0].block is not None
    [vip] = statements[0].block
    assert (vip.keyword, vip.args) == ("10.0.0.1/24", ("dev", "eth0"))
    assert [(p.line, p.message) for p in problems] == [(2, "unexpected '}' with no open block")]


def test_parse_statements_comments_outside_quotes_end_the_line(workdir: Path) -> None:
    conf = write(
        workdir,
        "k.conf",
        'a 1 ! bang\nb "x # y" # hash\n  # whole line\n! whole line\nc"q"d\n',
    )

    statements, problems = parse_statements(conf)

    assert problems == []
    assert [(s.keyword, s.args, s.location.line) for s in statements] == [
        ("a", ("1",), 1),
        ("b", ("x # y",), 2),
        ("c", ("q", "d"), 5),
    ]


def test_parse_statements_open_brace_on_next_line_starts_block(workdir: Path) -> None:
    conf = write(workdir, "k.conf", "global_defs\n{\n  router_id r1\n}\n")

    statements, problems = parse_statements(conf)

    assert problems == []
    assert statements[0].block is not None
    assert statements[0].block[0].location.line == 3


def test_parse_file_unreadable_top_file_reports_without_line(workdir: Path) -> None:
    missing = workdir / "nope.conf"

    problems = check_file(missing)

    assert len(problems) == 1
    assert problems[0].file == str(missing)
    assert problems[0].line is None
    assert "cannot read" in problems[0].message


# ---- the broken corpus ----

# (file in broken/, file the error is reported against, line, field, part of the message)
BROKEN_CASES = [
    (
        "unknown_keyword.conf",
        None,
        5,
        "vrrp_instance VI_1.prioirty",
        "unsupported keyword 'prioirty'",
    ),
    ("unknown_top_level.conf", None, 2, "virtual_server", "unsupported keyword 'virtual_server'"),
    ("priority_300.conf", None, 6, "vrrp_instance VI_1.priority", "300 is out of range 1..255"),
    ("missing_brace.conf", None, 1, "vrrp_instance VI_1", "not closed before line 9"),
    ("missing_brace_at_end.conf", None, 8, "virtual_ipaddress", "not closed before the end"),
    ("stray_close_brace.conf", None, 8, "", "unexpected '}'"),
    ("unterminated_quote.conf", None, 7, "", "unterminated quoted string"),
    (
        "undefined_track_script.conf",
        None,
        12,
        "vrrp_instance VI_1.track_script",
        "'chk_missing' is not a defined vrrp_script",
    ),
    ("bad_ip.conf", None, 8, "vrrp_instance VI_1.unicast_peer", "'10.0.0.300' is not an IPv4"),
    ("bad_vip_prefix.conf", None, 6, "vrrp_instance VI_1.virtual_ipaddress", "'10.0.0.2/33'"),
    ("vip_ipv6.conf", None, 5, "vrrp_instance VI_1.virtual_ipaddress", "IPv6"),
    ("vrid_0.conf", None, 3, "vrrp_instance VI_1.virtual_router_id", "0 is out of range 1..255"),
    (
        "missing_vrid.conf",
        None,
        4,
        "vrrp_instance VI_1.virtual_router_id",
        "no 'virtual_router_id'",
    ),
    ("duplicate_instance.conf", None, 8, "vrrp_instance VI_1", "duplicate vrrp_instance name"),
    ("duplicate_vrid.conf", None, 8, "vrrp_instance VI_2.virtual_router_id", "already used"),
    (
        "bad_auth_type.conf",
        None,
        5,
        "vrrp_instance VI_1.authentication.auth_type",
        "'MD5' is not PASS or AH",
    ),
    ("auth_ah.conf", None, 5, "vrrp_instance VI_1.authentication.auth_type", "AH"),
    (
        "empty_auth_pass.conf",
        None,
        6,
        "vrrp_instance VI_1.authentication.auth_pass",
        "password is empty",
    ),
    ("advert_int_0.conf", None, 4, "vrrp_instance VI_1.advert_int", "out of range 1..255"),
    ("advert_int_fraction_v2.conf", None, 7, "vrrp_instance VI_1.advert_int", "whole number"),
    ("advert_int_v3_too_long.conf", None, 4, "vrrp_instance VI_1.advert_int", "0.01..40.95"),
    ("include_missing.conf", None, 2, "include", "no file matches"),
    (
        "include_broken_part.conf",
        "parts/bad_priority.inc",
        5,
        "vrrp_instance VI_1.priority",
        "'high' is not a whole number",
    ),
    ("include_loop.conf", None, 8, "include", "include loop"),
    ("bad_state.conf", None, 2, "vrrp_instance VI_1.state", "'PRIMARY' is not MASTER or BACKUP"),
    ("script_weight_out_of_range.conf", None, 4, "vrrp_script chk.weight", "-253..253"),
    ("script_interval_0.conf", None, 3, "vrrp_script chk.interval", "out of range"),
    ("script_without_command.conf", None, 1, "vrrp_script chk.script", "no 'script' line"),
    ("flag_with_value.conf", None, 4, "vrrp_instance VI_1.nopreempt", "takes no value"),
]


@pytest.mark.parametrize(
    ("name", "reported_in", "line", "field", "fragment"),
    BROKEN_CASES,
    ids=[c[0] for c in BROKEN_CASES],
)
def test_check_file_broken_config_reports_exact_location(
    name: str, reported_in: str | None, line: int, field: str, fragment: str
) -> None:
    problems = check_file(BROKEN / name)

    expected_file = str(BROKEN / (reported_in or name))
    matching = [p for p in problems if fragment in p.message]
    assert matching, f"no problem mentions {fragment!r}: {[str(p) for p in problems]}"
    assert (matching[0].file, matching[0].line, matching[0].field) == (expected_file, line, field)


@pytest.mark.parametrize("name", [c[0] for c in BROKEN_CASES])
def test_parse_file_broken_config_raises_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_file(BROKEN / name)

    assert excinfo.value.problems == check_file(BROKEN / name)
    assert all(isinstance(p, ConfigProblem) for p in excinfo.value.problems)


def test_broken_corpus_every_file_is_covered() -> None:
    covered = {c[0] for c in BROKEN_CASES} | {"many_errors.conf"}

    assert {p.name for p in BROKEN.glob("*.conf")} == covered


def test_check_file_many_errors_reports_all_in_file_order() -> None:
    problems = check_file(BROKEN / "many_errors.conf")

    assert [(p.line, p.field) for p in problems] == [
        (3, "global_defs.vrrp_version"),
        (7, "vrrp_script chk.rise"),
        (12, "vrrp_instance VI_1.virtual_router_id"),
        (13, "vrrp_instance VI_1.priority"),
        (14, "vrrp_instance VI_1.advert_int"),
        (16, "vrrp_instance VI_1.virtual_ipaddress"),
        (19, "vrrp_instance VI_1.unicast_peer"),
        (22, "vrrp_instance VI_1.track_script"),
        (24, "vrrp_instance VI_1.smtp_alert"),
    ]


def test_config_error_message_lists_file_line_for_each_problem() -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_file(BROKEN / "many_errors.conf")

    lines = str(excinfo.value).splitlines()
    assert len(lines) == 9
    assert lines[0] == (
        f"{BROKEN / 'many_errors.conf'}:3: global_defs.vrrp_version: 4 is out of range 2..3"
    )


@pytest.mark.parametrize("conf", sorted(GOOD.glob("*.conf")), ids=lambda p: p.name)
def test_check_file_good_corpus_has_no_errors(conf: Path) -> None:
    assert check_file(conf) == []
