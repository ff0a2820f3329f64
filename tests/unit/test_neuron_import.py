"""tandem config import-neuron: the corpus of Neuron exports in tests/data/neuron, every
supported tag decoding as Neuron decodes it, and every refusal naming what it refuses."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.config.hub import TagConfig, TandemConfig, load_config_text
from tandem.config.neuron import NeuronOptions, import_neuron, import_neuron_file, tandem_name
from tandem.errors import ConfigError
from tandem.hub.codec import DecodeError, decode_value
from tests.neuron_model import BIT, STRING, point, published

DATA = Path(__file__).resolve().parents[1] / "data" / "neuron"
GOOD = sorted((DATA / "good").glob("*.json"))
BAD = json.loads((DATA / "bad" / "expected.json").read_text())


def export_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def neuron_tags(export: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(node, group, tag, node params) for every tag of an export, in either format."""
    found = []
    settings_of = {s["node"]: s["params"] for s in export.get("settings", [])}
    for node in export["nodes"]:
        params = node.get("params") or settings_of.get(node["name"], {})
        for group in node.get("groups", []):
            found += [(node["name"], group["group"], tag, params) for tag in group["tags"]]
    for block in export.get("tags", []):
        params = settings_of.get(block["driver"], {})
        found += [(block["driver"], block["group"], tag, params) for tag in block["tags"]]
    return found


def imported_tag(config: TandemConfig, node: str, group: str, tag: dict[str, Any]) -> TagConfig:
    unit = int(tag["address"].split("!")[0])
    names = {tandem_name(node), f"{tandem_name(node)}-unit{unit}"}
    for device in config.devices:
        if device.name in names and device.unit == unit:
            for g in device.groups:
                for t in g.tags:
                    if g.name == tandem_name(group) and t.name == tag["name"]:
                        return t
    raise AssertionError(f"{node}/{group}/{tag['name']} was not imported")


def imported(path: Path, **options: Any) -> TandemConfig:
    return import_neuron_file(path, NeuronOptions(all_groups=True, **options)).config


CASES = [
    (path.name, node, group, tag, params)
    for path in GOOD
    for node, group, tag, params in neuron_tags(export_of(path))
    if not tag["attribute"] & 8
]
CONFIGS = {path.name: imported(path) for path in GOOD}


def wire_strategy(tag: dict[str, Any], params: dict[str, Any]) -> st.SearchStrategy[bytes]:
    p = point(tag["address"], tag["type"], params.get("address_base", 1))
    if p.area in ("coil", "discrete"):
        return st.sampled_from([b"\x00", b"\x01"])
    size = p.registers * 2
    if tag["type"] == STRING:  # text without NULs (C strings end there, Tandem strips them)
        letters = st.sampled_from(list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_ "))
        return st.lists(letters, min_size=size, max_size=size).map(bytes)
    return st.binary(min_size=size, max_size=size)


def test_corpus_covers_the_supported_cases() -> None:
    addresses = [tag["address"] for _, _, _, tag, _ in CASES]
    types = {tag["type"] for _, _, _, tag, _ in CASES}
    assert types == {3, 4, 5, 6, 7, 8, 9, 10, 11, 13}
    for suffix in ("#B", "#L", "#LL", "#LB", "#BL", "#BB", "#WS", "#WR", "H", "L", "D", "E"):
        assert any(a.endswith(suffix) for a in addresses), suffix
    areas = {a.split("!")[1][0] for a in addresses}
    assert areas == {"0", "1", "3", "4"}
    bases = {params.get("address_base") for *_, params in CASES}
    assert bases == {0, 1}
    assert {params.get("endianess") for *_, params in CASES} >= {1, 2, 3, 4}
    assert {params.get("endianess_64") for *_, params in CASES} >= {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_import_neuron_good_export_renders_valid_yaml(path: Path) -> None:
    result = import_neuron_file(path, NeuronOptions(node="site-a"))
    config = load_config_text(result.yaml_text, path.name)
    assert config == result.config
    assert config.node == "site-a"
    assert config.devices
    assert str(result.notes).count("Traceback") == 0


@pytest.mark.parametrize(
    ("file", "node", "group", "tag", "params"),
    CASES,
    ids=[f"{c[0]}:{c[1]}/{c[2]}/{c[3]['name']}" for c in CASES],
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_import_neuron_tag_decodes_as_neuron_does(
    file: str,
    node: str,
    group: str,
    tag: dict[str, Any],
    params: dict[str, Any],
    data: st.DataObject,
) -> None:
    wire = data.draw(wire_strategy(tag, params))
    expected = published(tag, params, wire)
    mine = imported_tag(CONFIGS[file], node, group, tag)
    if mine.area in ("coil", "discrete"):
        words: list[int] = [wire[0]]
    else:
        words = list(struct.unpack(f">{len(wire) // 2}H", wire))
    if isinstance(expected, float) and not math.isfinite(expected):
        with pytest.raises(DecodeError):  # Neuron sends an error code for NaN as well
            decode_value(mine, words)
        return
    assert decode_value(mine, words) == expected
    if tag["type"] == BIT:
        assert decode_value(mine, words) is bool(expected)


def test_import_neuron_write_attribute_becomes_access() -> None:
    config = CONFIGS["tcp_global_config.json"]
    tags = {t.name: t for d in config.devices for g in d.groups for t in g.tags}
    assert tags["u16_rw"].access == "read_write"
    assert tags["u16_write_only"].access == "write"
    assert tags["u16_subscribe"].access == "read"
    assert tags["coil_rw"].access == "read_write"


def test_import_neuron_unsubscribed_group_left_out_unless_asked() -> None:
    path = DATA / "good" / "tcp_global_config.json"
    result = import_neuron_file(path)
    groups = {g.name for d in result.config.devices for g in d.groups}
    assert groups == {"registers", "bits"}
    assert any("'analytics': no MQTT app subscribes" in str(n) for n in result.notes)
    everything = import_neuron_file(path, NeuronOptions(all_groups=True)).config
    assert "analytics" in {g.name for d in everything.devices for g in d.groups}


def test_import_neuron_mqtt_app_maps_broker_topic_and_qos() -> None:
    result = import_neuron_file(DATA / "good" / "tcp_global_config.json")
    mqtt = result.config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.qos, mqtt.username) == (
        "broker.plant.local", 1883, 1, "neuron",
    )  # fmt: skip
    assert mqtt.topic == "/neuron/mqtt/{node}/{group}"
    assert mqtt.client_id is None  # a pair must not share Neuron's client id


def test_import_neuron_password_only_into_a_private_file() -> None:
    path = DATA / "good" / "tcp_global_config.json"
    printed = import_neuron_file(path)
    assert "broker-secret-42" not in printed.yaml_text
    assert "broker-secret-42" not in " ".join(str(n) for n in printed.notes)
    assert printed.config.mqtt.password is None
    assert not printed.has_password
    private = import_neuron_file(path, NeuronOptions(keep_password=True))
    assert private.config.mqtt.password == "broker-secret-42"
    assert private.has_password
    assert "broker-secret-42" not in " ".join(str(n) for n in private.notes)


def test_import_neuron_node_with_two_units_becomes_two_devices() -> None:
    config = CONFIGS["tcp_drivers_orders.json"]
    units = {d.name: d.unit for d in config.devices if d.name.startswith("order_1")}
    assert units == {"order_1-unit1": 1, "order_1-unit2": 2}


def test_import_neuron_backup_host_becomes_second_path() -> None:
    device = next(d for d in CONFIGS["tcp_drivers_orders.json"].devices if d.name == "order_2")
    assert [e.label for e in device.endpoints()] == ["192.168.10.21:502", "192.168.11.21:502"]
    assert device.path_mode == "switch-on-failure"


def test_import_neuron_rtu_serial_settings_decoded_from_codes() -> None:
    (device,) = CONFIGS["rtu_serial.json"].devices
    assert device.protocol == "modbus-rtu"
    (line,) = device.endpoints()
    assert (line.port, line.baudrate, line.parity, line.stopbits) == ("/dev/ttyUSB0", 19200, "N", 2)  # type: ignore[union-attr]
    assert device.unit == 5
    assert device.timeout == 3.0


def test_import_neuron_rtu_link_ethernet_and_rtu_over_tcp_plugin_both_gateways() -> None:
    devices = CONFIGS["rtu_over_tcp.json"].devices
    assert {d.protocol for d in devices} == {"modbus-rtu-over-tcp"}
    assert sorted(d.unit for d in devices) == [3, 4]


@pytest.mark.parametrize("name", sorted(BAD))
def test_import_neuron_bad_export_refused_with_every_problem(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        import_neuron_file(DATA / "bad" / name)
    lines = [str(p) for p in info.value.problems]
    assert len(lines) == len(BAD[name]), "\n".join(lines)
    for field, reason, words in BAD[name]:
        assert any(field in line and reason in line and words in line for line in lines), (
            f"{field} / {reason} / {words} not in:\n" + "\n".join(lines)
        )
    assert all(line.startswith(str(DATA / "bad" / name)) for line in lines)


def test_import_neuron_skip_unsupported_imports_the_rest() -> None:
    path = DATA / "bad" / "unsupported_plugin.json"
    result = import_neuron_file(path, NeuronOptions(skip_unsupported=True))
    assert [d.name for d in result.config.devices] == ["plc"]
    dropped = [n.text for n in result.notes if n.kind == "dropped" and "--skip" in n.text]
    assert len(dropped) == 1
    assert 'node "opc"' in dropped[0]
    assert "unsupported plugin" in dropped[0]


def test_import_neuron_skip_unsupported_refuses_an_unknown_type_code() -> None:
    with pytest.raises(ConfigError) as info:
        import_neuron_file(DATA / "bad" / "types.json", NeuronOptions(skip_unsupported=True))
    assert any("type 99 is not a Neuron type" in str(p) for p in info.value.problems)


def test_import_neuron_skip_unsupported_still_refuses_broken_input() -> None:
    with pytest.raises(ConfigError) as info:
        import_neuron_file(DATA / "bad" / "wrong_types.json", NeuronOptions(skip_unsupported=True))
    assert len(info.value.problems) == len(BAD["wrong_types.json"])


def test_import_neuron_skip_unsupported_drops_overlapping_tags_once() -> None:
    result = import_neuron_file(DATA / "bad" / "overlap.json", NeuronOptions(skip_unsupported=True))
    (device,) = result.config.devices
    assert [t.name for g in device.groups for t in g.tags] == ["word", "ok"]


def minimal(tag: dict[str, Any], node: str = "plc", group: str = "g", **params: Any) -> str:
    export = {
        "nodes": [
            {
                "name": node,
                "plugin": "Modbus TCP",
                "params": {"host": "10.0.0.1", **params},
                "groups": [{"group": group, "interval": 1000, "tags": [tag]}],
            }
        ]
    }
    return json.dumps(export)


def test_import_neuron_names_outside_tandem_pattern_renamed_and_round_trip() -> None:
    tag = {"name": 'Füllstand "Tank" 🛢', "address": "1!400001", "type": 4, "attribute": 1}
    result = import_neuron(minimal(tag, node="Linie 3/Halle", group="schnell #1"))
    (device,) = result.config.devices
    assert device.name == "Linie_3_Halle"
    assert device.groups[0].name == "schnell__1"
    assert device.groups[0].tags[0].name == 'Füllstand "Tank" 🛢'
    assert any("-> device 'Linie_3_Halle'" in str(n) for n in result.notes)


def test_import_neuron_oversized_export_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import tandem.config.neuron_export as boundary

    monkeypatch.setattr(boundary, "MAX_EXPORT_BYTES", 100)
    with pytest.raises(ConfigError, match="larger than"):
        import_neuron(minimal({"name": "t", "address": "1!400001", "type": 4, "attribute": 1}))


def test_import_neuron_deep_but_parseable_params_do_not_crash() -> None:
    deep: Any = 1
    for _ in range(500):
        deep = [deep]
    tag = {"name": "t", "address": "1!400001", "type": 4, "attribute": 1}
    result = import_neuron(minimal(tag, vendor_extension=deep))
    assert result.config.devices[0].groups[0].tags[0].name == "t"


@pytest.mark.parametrize(
    ("ssl", "fmt", "warning"),
    [(True, 0, "mqtt.tls"), (False, 2, "ECP-format"), (False, 4, "protobuf")],
)
def test_import_neuron_mqtt_settings_without_equivalent_warn(
    ssl: bool, fmt: int, warning: str
) -> None:
    export = json.loads(minimal({"name": "t", "address": "1!400001", "type": 4, "attribute": 1}))
    export["apps"] = [  # GET /api/v2/global/apps, merged into the same file
        {"name": "up", "plugin": "MQTT", "params": {"host": "b", "port": 8883, "ssl": ssl,
         "format": fmt}, "groups": [{"driver": "plc", "group": "g"}]}
    ]  # fmt: skip
    result = import_neuron(json.dumps(export))
    assert any(n.kind == "warning" and warning in n.text for n in result.notes)
    assert (result.config.mqtt.tls is not None) is ssl
    assert result.config.mqtt.topic == "/neuron/up/{node}/{group}"


def test_import_neuron_topic_changes_named_when_a_node_is_split() -> None:
    export = json.loads(minimal({"name": "a", "address": "1!400001", "type": 4, "attribute": 1}))
    export["nodes"][0]["groups"][0]["tags"].append(
        {"name": "b", "address": "2!400001", "type": 4, "attribute": 1}
    )
    export["apps"] = [
        {"name": "up", "plugin": "MQTT", "params": {"host": "b"},
         "groups": [{"driver": "plc", "group": "g"}]}
    ]  # fmt: skip
    result = import_neuron(json.dumps(export))
    warnings = [n.text for n in result.notes if n.kind == "warning"]
    assert any("'/neuron/up/plc/g'" in w and "plc-unit2" in w for w in warnings), warnings


def test_import_neuron_node_name_outside_pattern_refused() -> None:
    tag = {"name": "t", "address": "1!400001", "type": 4, "attribute": 1}
    with pytest.raises(ConfigError, match="--node"):
        import_neuron(minimal(tag), options=NeuronOptions(node="line 3"))
