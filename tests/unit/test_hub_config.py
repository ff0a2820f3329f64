"""Native config: good examples load; every broken one is rejected at the right line and field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from tandem.config.hub import (
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTcpDevice,
    SerialConfig,
    TagConfig,
    TandemConfig,
    dump_schema,
    load_config,
    load_config_text,
    parse_device,
)
from tandem.config.yamlload import format_path
from tandem.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "hub"
GOOD = sorted((DATA / "good").glob("*.yaml"))
BAD = sorted((DATA / "bad").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+) (\S+) (.+)$")


@dataclass(frozen=True, slots=True)
class Expected:
    line: int
    field: str  # "-" for a problem that belongs to no field
    text: str


def expectations(path: Path) -> list[Expected]:
    """Each bad file states its own expected problems in ``# expect: <line> <field> <text>``."""
    found = []
    for raw in path.read_text().splitlines():
        match = EXPECT.match(raw)
        if match:
            found.append(Expected(int(match[1]), match[2], match[3]))
    return found


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 16
    assert all(expectations(p) for p in BAD), "every bad file must state what it expects"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_load_config_good_example_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, TandemConfig)
    assert config.node


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_load_config_bad_example_reports_file_line_and_field(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    expected = expectations(path)
    assert len(problems) == len(expected), [str(p) for p in problems]
    for want in expected:
        field = "" if want.field == "-" else want.field
        matching = [p for p in problems if p.line == want.line and p.field == field]
        assert matching, f"no problem at line {want.line} field {field!r}: {problems}"
        assert any(want.text in p.message for p in matching), matching
        assert all(p.file == str(path) for p in matching)


def test_load_config_defaults_data_dir_from_node() -> None:
    config = load_config(DATA / "good" / "minimal.yaml")
    assert config.data_dir == Path(".tandem") / "edge-b"
    assert config.api.port == 8085
    assert config.mqtt.topic == "/neuron/{node}"
    assert config.mqtt.qos == 1
    assert config.outbox.overflow == "drop_oldest"
    tag = config.devices[0].groups[0].tags[0]
    assert (tag.area, tag.type, tag.scale, tag.offset) == ("holding", "uint16", 1.0, 0.0)


def test_load_config_full_example_keeps_every_value() -> None:
    config = load_config(DATA / "good" / "full.yaml")
    device = config.devices[0]
    assert (device.name, device.port, device.unit) == ("plc1", 5020, 1)
    fast = device.groups[0]
    assert fast.interval == pytest.approx(0.1)
    by_name = {t.name: t for t in fast.tags}
    assert by_name["label"].width == 8
    assert by_name["energy"].word_order == "little"
    assert by_name["fault"].bit == 1


def test_load_config_bit_tags_sharing_a_register_are_accepted() -> None:
    config = load_config(DATA / "good" / "full.yaml")
    bits = [t for t in config.devices[0].groups[0].tags if t.type == "bit"]
    assert {t.address for t in bits} == {4}
    assert len(bits) == 2


def test_load_config_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert "cannot read" in caught.value.problems[0].message


def test_load_config_text_bit_tag_overlapping_whole_register_rejected() -> None:
    text = """\
node: n
devices:
  - name: d
    host: h
    groups:
      - name: g
        tags:
          - {name: word, address: 4}
          - {name: flag, address: 4, type: bit, bit: 3}
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "inline.yaml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == ("inline.yaml", 9)
    assert problem.field == "devices[0].groups[0].tags[1].address"


def test_load_config_text_same_address_in_different_areas_accepted() -> None:
    text = """\
node: n
devices:
  - name: d
    host: h
    groups:
      - name: g
        tags:
          - {name: h0, area: holding, address: 0}
          - {name: i0, area: input, address: 0}
          - {name: c0, area: coil, address: 0, type: bool}
          - {name: d0, area: discrete, address: 0, type: bool}
"""
    config = load_config_text(text)
    assert len(config.devices[0].groups[0].tags) == 4


def test_tag_config_past_end_of_address_space_rejected() -> None:
    with pytest.raises(ValueError, match="past address 65535"):
        TagConfig(name="t", address=65535, type="float32")


def test_tag_config_string_width_is_length() -> None:
    assert TagConfig(name="s", address=0, type="string", length=5).width == 5


def test_format_path_mixes_keys_and_indices() -> None:
    assert format_path(("devices", 0, "groups", 1, "tags", 3, "address")) == (
        "devices[0].groups[1].tags[3].address"
    )
    assert format_path(()) == ""


def test_dump_schema_describes_devices_and_tags() -> None:
    schema = dump_schema()
    assert "devices" in schema["properties"]
    assert "TagConfig" in schema["$defs"]
    assert schema["$defs"]["TagConfig"]["additionalProperties"] is False


# --- the ha section -------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ha"


def test_ha_config_examples_load_with_mirrored_addresses() -> None:
    a = load_config(EXAMPLES / "node-a.yaml")
    b = load_config(EXAMPLES / "node-b.yaml")
    assert a.ha is not None and b.ha is not None
    assert (a.ha.priority, b.ha.priority) == (100, 90)
    assert a.ha.vrrp.unicast_src_ip == b.ha.vrrp.unicast_peers[0]
    assert b.ha.vrrp.unicast_src_ip == a.ha.vrrp.unicast_peers[0]
    assert a.devices == b.devices and a.mqtt == b.mqtt


def test_ha_config_raw_transport_without_interface_names_field() -> None:
    text = """
node: n1
ha:
  peer_url: http://10.0.0.2:8085
  secret: abcdefghij
  vrrp:
    transport: raw
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "n1.yaml")
    (problem,) = err.value.problems
    assert problem.field == "ha.vrrp.interface"
    assert problem.line == 6


def test_ha_config_secret_and_secret_file_are_exclusive() -> None:
    text = """
node: n1
ha:
  peer_url: http://10.0.0.2:8085
  vrrp: {transport: udp, unicast_src_ip: 127.0.0.2, unicast_peers: [127.0.0.3]}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "n1.yaml")
    assert [p.field for p in err.value.problems] == ["ha.secret"]


def test_ha_config_v2_fractional_advert_rejected() -> None:
    text = """
node: n1
ha:
  peer_url: http://10.0.0.2:8085
  secret: abcdefghij
  vrrp: {transport: udp, version: 2, advert_interval: 0.5, unicast_src_ip: 127.0.0.2,
         unicast_peers: [127.0.0.3]}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "n1.yaml")
    assert [p.field for p in err.value.problems] == ["ha.vrrp.advert_interval"]


# --- devices by protocol ------------------------------------------------------------------------


def test_load_config_device_without_protocol_is_modbus_tcp() -> None:
    config = load_config(DATA / "good" / "minimal.yaml")
    (device,) = config.devices
    assert isinstance(device, ModbusTcpDevice)
    assert device.protocol == "modbus-tcp" and device.framing == "mbap"
    assert [e.label for e in device.endpoints()] == [f"{device.host}:{device.port}"]
    assert device.path_mode == "primary-only"


def test_load_config_serial_buses_example_builds_each_protocol() -> None:
    config = load_config(DATA / "good" / "serial-buses.yaml")
    meter1, meter2, drive, plc, meter3 = config.devices
    assert isinstance(meter1, ModbusRtuDevice) and isinstance(meter2, ModbusRtuDevice)
    assert meter1.serial == meter2.serial  # one bus, one setting
    assert meter1.serial is not None and meter1.serial.char_bits == 1 + 8 + 0 + 2
    assert isinstance(drive, ModbusRtuOverTcpDevice) and drive.framing == "rtu"
    assert [e.label for e in drive.endpoints()] == ["10.0.0.50:4001"]
    assert [e.label for e in plc.endpoints()] == ["10.0.1.10:502", "10.0.2.10:5020"]
    assert plc.path_mode == "switch-on-trigger"
    assert plc.redundancy is not None and plc.redundancy.bad_polls == 3
    assert [e.label for e in meter3.endpoints()] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    # Serial defaults follow Modbus over Serial Line: 19200 baud, even parity, 8E1 = 11 bits.
    assert isinstance(meter3.endpoints()[1], SerialConfig)
    assert meter3.endpoints()[1].char_bits == 11


def test_parse_device_rtu_unit_zero_is_broadcast_and_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_device(
            {
                "name": "m",
                "protocol": "modbus-rtu",
                "unit": 0,
                "serial": {"port": "/dev/ttyS0"},
                "groups": [{"name": "g", "tags": [{"name": "t", "address": 0}]}],
            }
        )


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_tandem_config_dump_round_trips_through_json(path: Path) -> None:
    # HA hands the config to its hub process as JSON: a dump must validate as it was.
    config = load_config(path)
    assert TandemConfig.model_validate_json(config.model_dump_json()) == config
