"""The pure parts of config editing: document edits, error mapping, CSV, diffs and versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.api.configedit import redact_text
from tandem.config import edit
from tandem.config.edit import EditError, EditFailure, EditInvalid, Scope
from tandem.config.tagcsv import CsvInvalid, export_csv, parse_csv, problems_by_line
from tandem.config.versions import VersionStore

CONFIG = """\
# the line-1 hub
node: edge-a
data_dir: /tmp/edge-a  # where the outbox lives
mqtt:
  host: 127.0.0.1
  password: hunter22-secret
devices:
  - name: plc1  # the press
    host: 10.0.0.5
    groups:
      - name: fast
        interval: 0.5
        tags:
          - name: counter  # parts made
            address: 0
          - name: temp
            address: 1
            type: float32
"""


def test_edit_replace_tag_keeps_comments_and_changes_only_the_field() -> None:
    doc = edit.load_doc(CONFIG)
    path = edit.replace(doc, Scope.of("plc1", "fast", "counter"), {"name": "counter", "address": 7})
    text = edit.dump_doc(doc)
    assert path == ("devices", 0, "groups", 0, "tags", 0)
    assert "# parts made" in text and "# the press" in text and "# the line-1 hub" in text
    assert "address: 7" in text
    cfg = edit.checked(text, path)
    assert cfg.devices[0].groups[0].tags[0].address == 7


def test_edit_add_existing_name_refused_as_exists() -> None:
    doc = edit.load_doc(CONFIG)
    with pytest.raises(EditError) as caught:
        edit.add(doc, Scope.of("plc1", "fast"), {"name": "temp", "address": 9})
    assert caught.value.reason is EditFailure.EXISTS


def test_edit_missing_item_refused_as_not_found() -> None:
    doc = edit.load_doc(CONFIG)
    with pytest.raises(EditError) as caught:
        edit.replace(doc, Scope.of("plc1", "slow"), {"name": "slow"})
    assert caught.value.reason is EditFailure.NOT_FOUND
    assert "group 'slow'" in str(caught.value)


def test_edit_body_without_name_refused_as_bad_body() -> None:
    doc = edit.load_doc(CONFIG)
    with pytest.raises(EditError) as caught:
        edit.add(doc, Scope.of(), ["not", "an", "object"])
    assert caught.value.reason is EditFailure.BAD_BODY


def test_edit_invalid_tag_problems_are_relative_to_the_tag() -> None:
    doc = edit.load_doc(CONFIG)
    path = edit.add(
        doc, Scope.of("plc1", "fast"), {"name": "bad", "address": 70000, "colour": "red"}
    )
    with pytest.raises(EditInvalid) as caught:
        edit.checked(edit.dump_doc(doc), path)
    fields = {p.field: p for p in caught.value.problems}
    assert set(fields) == {"address", "colour"}
    assert fields["address"].path == "devices[0].groups[0].tags[2].address"
    assert fields["colour"].message == "unknown key"


def test_edit_overlap_reported_at_the_new_tag_address() -> None:
    doc = edit.load_doc(CONFIG)
    path = edit.duplicate(doc, Scope.of("plc1", "fast", "counter"), {"name": "counter2"})
    with pytest.raises(EditInvalid) as caught:
        edit.checked(edit.dump_doc(doc), path)
    assert [p.field for p in caught.value.problems] == ["address"]
    assert "already used by" in caught.value.problems[0].message


def test_edit_duplicate_device_inserts_copy_after_original() -> None:
    doc = edit.load_doc(CONFIG)
    path = edit.duplicate(doc, Scope.of("plc1"), {"name": "plc2", "host": "10.0.0.6"})
    cfg = edit.checked(edit.dump_doc(doc), path)
    assert [d.name for d in cfg.devices] == ["plc1", "plc2"]
    assert cfg.devices[1].endpoints()[0].label == "10.0.0.6:502"


def test_edit_delete_last_group_problem_is_on_the_device_groups() -> None:
    doc = edit.load_doc(CONFIG)
    edit.delete(doc, Scope.of("plc1", "fast"))
    with pytest.raises(EditInvalid) as caught:
        edit.checked(edit.dump_doc(doc), ("devices", 0))
    assert [p.field for p in caught.value.problems] == ["groups"]


def test_edit_redacted_secret_sent_back_keeps_the_old_value() -> None:
    doc = edit.load_doc(CONFIG)
    edit.merge_into(doc["mqtt"], {"host": "10.1.1.1", "password": "<redacted>"})
    assert doc["mqtt"]["password"] == "hunter22-secret"
    assert doc["mqtt"]["host"] == "10.1.1.1"


def test_edit_with_sections_replaces_devices_from_running_config() -> None:
    doc = edit.load_doc(CONFIG)
    edit.with_sections(doc, {"devices": []}, None)
    text = edit.dump_doc(doc)
    assert "plc1" not in text and "# the line-1 hub" in text


def test_edit_with_sections_keeps_unchanged_device_as_written() -> None:
    cfg = edit.checked(CONFIG, ())
    file_dump = cfg.model_dump(mode="json")
    running = {"devices": [*file_dump["devices"], {**file_dump["devices"][0], "name": "plc9"}]}
    doc = edit.load_doc(CONFIG)
    edit.with_sections(doc, running, {"devices": file_dump["devices"]})
    text = edit.dump_doc(doc, CONFIG)
    assert "# the press" in text and "name: plc9" in text
    assert "bit:" not in text  # None fields of the dump are left out
    assert [d.name for d in edit.checked(text, ()).devices] == ["plc1", "plc9"]


def test_edit_unified_diff_names_versions_and_changed_line() -> None:
    diff = edit.unified("a: 1\nb: 2\n", "a: 1\nb: 3\n", "v1", "v2")
    assert diff.startswith("--- v1\n+++ v2\n")
    assert "-b: 2\n+b: 3\n" in diff


def test_tagcsv_export_then_parse_round_trips() -> None:
    tags = [
        {"name": "counter", "address": 0},
        {"name": "temp", "address": 1, "type": "float32", "scale": 0.1},
    ]
    text = export_csv("modbus-tcp", tags)
    assert text.splitlines()[0].startswith("name,area,address,type")
    rows = parse_csv("modbus-tcp", text)
    assert [r.tag for r in rows] == tags
    assert [r.line for r in rows] == [2, 3]


def test_tagcsv_bad_cells_name_line_and_column() -> None:
    text = "name,address,type\nok,1,uint16\nbad,x,uint16\nworse,3,float99\n"
    with pytest.raises(CsvInvalid) as caught:
        parse_csv("modbus-tcp", text)
    found = {(p.line, p.column) for p in caught.value.problems}
    assert found == {(3, "address"), (4, "type")}


def test_tagcsv_unknown_column_reported_on_header() -> None:
    with pytest.raises(CsvInvalid) as caught:
        parse_csv("modbus-tcp", "name,adress\nx,1\n")
    assert [(p.line, p.column) for p in caught.value.problems] == [(1, "adress")]


def test_tagcsv_model_check_names_the_field_of_a_shape_error() -> None:
    with pytest.raises(CsvInvalid) as caught:
        parse_csv("modbus-tcp", "name,address,type\ns,1,string\n")
    assert [(p.line, p.column) for p in caught.value.problems] == [(2, "length")]


def test_tagcsv_config_problems_map_to_csv_lines() -> None:
    mapped = problems_by_line([2, 4], [((1, "address"), "overlap")])
    assert [(p.line, p.column, p.message) for p in mapped] == [(4, "address", "overlap")]


def test_versions_store_keeps_newest_and_diffs_against_previous(tmp_path: Path) -> None:
    store = VersionStore(tmp_path, keep=3)
    for i in range(5):
        store.add(f"node: n\nx: {i}\n", "alice", f"edit {i}")
    metas = store.list()
    assert [m.id for m in metas] == [5, 4, 3]
    latest = store.get(5)
    assert latest is not None and "-x: 3\n+x: 4\n" in latest.diff
    assert latest.meta.lines_added == 1 and latest.meta.lines_removed == 1
    assert store.get(1) is None


def test_versions_damaged_metadata_skipped(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    store.add("a: 1\n", "alice", "one")
    (store.dir / "000002.json").write_text("{not json")
    assert [m.id for m in store.list()] == [1]


def test_redact_text_nested_key_after_section_line_redacted() -> None:
    out = redact_text("mqtt:\n  password: pw1\n-mqtt:\n-  secret: pw2\n")
    assert "pw1" not in out and "pw2" not in out and out.startswith("mqtt:\n")


def test_redact_text_hides_secret_values_in_yaml_and_json_forms() -> None:
    text = '  password: hunter2\n{"secret": "abc", "host": "h"}\n-  token: xyz # note\n'
    out = redact_text(text)
    assert "hunter2" not in out and "abc" not in out and "xyz" not in out
    assert '"host": "h"' in out


def test_edit_too_deep_body_refused_before_copying() -> None:
    doc = edit.load_doc(CONFIG)
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(EditError) as caught:
        edit.add(doc, Scope.of(), {"name": "x", "groups": deep})
    assert caught.value.reason is EditFailure.BAD_BODY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n  b: 1\nl:\n  - x\n", (2, 4, 2)),
        ("a:\n    b: 1\nl:\n- x\n", (4, 2, 0)),
        ("# c\nl:  # list\n\n    -   x\n", (2, 8, 4)),
        ("{}\n", (2, 2, 0)),
    ],
)
def test_edit_guess_indent_reads_first_nestings(text: str, expected: tuple[int, int, int]) -> None:
    assert edit.guess_indent(text) == expected


def test_edit_dump_keeps_four_space_sequences_unchanged() -> None:
    text = "node: a\ndevices:\n    -   name: x  # c\n        host: h\n"
    doc = edit.load_doc(text)
    assert edit.dump_doc(doc, text) == text


def _large_config(tags: int = 3000) -> str:
    lines = ["node: big  # keep", "data_dir: /tmp/big", "devices:", "  - name: plc1", "    host: h"]
    lines += ["    groups:", "      - name: g", "        tags:"]
    for t in range(tags):
        lines += [f"          - name: t{t}  # tag {t}", f"            address: {t}"]
    return "\n".join(lines) + "\n"


async def test_editworker_large_file_edited_in_worker_process_with_comments() -> None:
    from tandem.config.editworker import perform_off_loop
    from tandem.config.offload import LARGE_TEXT

    base = _large_config()
    assert len(base) >= LARGE_TEXT
    e = edit.Edit(
        edit.EditKind.REPLACE,
        Scope.of("plc1", "g", "t5"),
        {"name": "t5", "address": 5, "scale": 3.0},
    )
    done = await perform_off_loop(base, e)
    assert done.item == {"name": "t5", "address": 5, "scale": 3.0}
    assert done.path == ("devices", 0, "groups", 0, "tags", 5)
    diff = edit.unified(base, done.text, "a", "b")
    assert "+            scale: 3.0\n" in diff and len(diff.splitlines()) == 10


async def test_editworker_problems_and_refusals_come_back_typed() -> None:
    from tandem.config.editworker import perform_off_loop

    base = _large_config()
    bad = edit.Edit(edit.EditKind.ADD, Scope.of("plc1", "g"), {"name": "x", "address": 2})
    with pytest.raises(EditInvalid) as invalid:
        await perform_off_loop(base, bad)
    assert [p.field for p in invalid.value.problems] == ["address"]
    missing = edit.Edit(edit.EditKind.DELETE, Scope.of("plc9"))
    with pytest.raises(EditError) as refused:
        await perform_off_loop(base, missing)
    assert refused.value.reason is EditFailure.NOT_FOUND


def test_versions_known_hunks_used_when_starting_from_previous(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    store.add("a: 1\n", "alice", "one")
    meta = store.add("a: 2\n", "bob", "two", known=("a: 1\n", edit.hunks("a: 1\n", "a: 2\n")))
    version = store.get(meta.id)
    assert version is not None
    assert version.diff == edit.unified("a: 1\n", "a: 2\n", "v1", "v2")
    # From another text the hunks do not apply: the store diffs itself.
    meta = store.add("a: 3\n", "bob", "three", known=("zzz\n", "@@ bogus\n"))
    version = store.get(meta.id)
    assert version is not None and "@@ bogus" not in version.diff and "+a: 3" in version.diff


async def test_editworker_load_large_file_in_worker_gives_plain_data() -> None:
    from tandem.config.editworker import load_off_loop

    data = await load_off_loop(_large_config())
    assert data["devices"][0]["groups"][0]["tags"][2999] == {"name": "t2999", "address": 2999}
    with pytest.raises(EditError) as caught:
        await load_off_loop("a: [\n" + "x" * 70_000)
    assert caught.value.reason is EditFailure.BAD_DOCUMENT
