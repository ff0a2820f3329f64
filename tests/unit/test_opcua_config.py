"""Config of OPC UA devices and of the OPC UA server: what is accepted, what is refused where."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.config.hub import OpcUaDevice, load_config_text, parse_device
from tandem.errors import ConfigError

PAIR = """
ha:
  peer_url: http://127.0.0.3:8085
  secret: a-long-enough-secret
  vrrp: {transport: udp, unicast_src_ip: 127.0.0.2, unicast_peers: [127.0.0.3]}
"""


def opcua_yaml(device: str = "", server: str = "", pair: bool = False) -> str:
    return (
        "node: edge1\n"
        "devices:\n"
        "  - name: ua1\n"
        "    protocol: opcua\n"
        "    endpoint: opc.tcp://10.0.0.5:4840/\n"
        f"{device}"
        "    groups:\n"
        "      - name: g\n"
        "        tags:\n"
        '          - {name: temp, node_id: "ns=2;s=Line1.Temp", type: float64}\n'
        f"{server}"
        f"{PAIR if pair else ''}"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "node.yaml")
    return [str(p) for p in caught.value.problems]


def test_opcua_config_device_defaults_to_no_security_and_read_mode() -> None:
    config = load_config_text(opcua_yaml(), "node.yaml")
    device = config.devices[0]
    assert isinstance(device, OpcUaDevice)
    assert device.security.policy == "None" and device.security.mode == "None"
    assert device.groups[0].mode == "read"
    assert config.opcua_server is None


@pytest.mark.parametrize(
    ("node_id", "ok"),
    [
        ("ns=2;s=Line1.Temp", True),
        ("i=2267", True),
        ("ns=3;i=1001", True),
        ("nsu=urn:plant:line1;s=Temp", True),
        ("ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", True),
        ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", True),
        ("Line1.Temp", False),
        ("ns=x;s=Temp", False),
        ("ns=2;s=", False),
        ("ns=2;i=abc", False),
    ],
)
def test_opcua_config_node_id_forms_checked(node_id: str, ok: bool) -> None:
    data = {
        "protocol": "opcua",
        "name": "ua1",
        "endpoint": "opc.tcp://h:4840",
        "groups": [{"name": "g", "tags": [{"name": "t", "node_id": node_id, "type": "int32"}]}],
    }
    if ok:
        assert isinstance(parse_device(data), OpcUaDevice)
    else:
        with pytest.raises(ValueError, match="not a NodeId"):
            parse_device(data)


def test_opcua_config_bad_node_id_names_file_line_and_field() -> None:
    text = opcua_yaml().replace("ns=2;s=Line1.Temp", "Line1.Temp")
    (problem,) = problems(text)
    assert problem.startswith("node.yaml:9: devices[0].groups[0].tags[0].node_id:")


@pytest.mark.parametrize(
    ("security", "field", "message"),
    [
        ("{policy: Basic256Sha256}", "mode", "needs mode Sign or SignAndEncrypt"),
        ("{policy: 'None', mode: Sign}", "mode", "security policy None needs mode None"),
        (
            "{policy: Basic256Sha256, mode: Sign, certificate: c.der, private_key: k.pem}",
            "server_certificate",
            "needs server_certificate",
        ),
        ("{certificate: c.der}", "certificate", "only used with a security policy"),
    ],
)
def test_opcua_config_security_combinations_refused(
    security: str, field: str, message: str
) -> None:
    found = problems(opcua_yaml(device=f"    security: {security}\n"))
    assert any(f"devices[0].security.{field}: " in p and message in p for p in found), found


def test_opcua_config_basic256sha256_with_certificates_accepted() -> None:
    security = (
        "    security: {policy: Basic256Sha256, mode: SignAndEncrypt, certificate: c.der,\n"
        "               private_key: k.pem, server_certificate: s.der}\n"
    )
    device = load_config_text(opcua_yaml(device=security), "node.yaml").devices[0]
    assert isinstance(device, OpcUaDevice) and device.security.mode == "SignAndEncrypt"


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        ("    username: op\n", "username"),
        ("    username: op\n    password_file: p\n    password_env: P\n", "username"),
        ("    password_env: P\n", "password_env"),
    ],
)
def test_opcua_config_password_only_from_one_file_or_variable(credentials: str, field: str) -> None:
    found = problems(opcua_yaml(device=credentials))
    assert any(f"devices[0].{field}:" in p for p in found), found


def test_opcua_config_password_itself_is_not_a_key() -> None:
    found = problems(opcua_yaml(device="    username: op\n    password: hunter2\n"))
    assert any("devices[0].password: unknown key" in p for p in found), found
    assert not any("hunter2" in p for p in found)


def test_opcua_config_endpoint_with_credentials_refused() -> None:
    text = opcua_yaml().replace("opc.tcp://10.0.0.5", "opc.tcp://op:pw@10.0.0.5")
    assert any("devices[0].endpoint:" in p for p in problems(text))


def test_opcua_config_max_length_only_for_strings() -> None:
    text = opcua_yaml().replace("type: float64}", "type: float64, max_length: 10}")
    assert any("max_length is only valid with type string" in p for p in problems(text))


def test_opcua_config_server_in_pair_needs_peer_uri() -> None:
    found = problems(opcua_yaml(server="opcua_server: {port: 4840}\n", pair=True))
    assert any("opcua_server.peer_uri: required in a pair" in p for p in found), found


def test_opcua_config_server_peer_uri_must_differ() -> None:
    server = "opcua_server: {port: 4840, peer_uri: 'urn:tandem:edge1'}\n"
    found = problems(opcua_yaml(server=server, pair=True))
    assert any("must differ" in p for p in found), found


def test_opcua_config_server_secure_endpoint_needs_certificate() -> None:
    server = "opcua_server: {security: [Basic256Sha256-Sign]}\n"
    found = problems(opcua_yaml(server=server))
    assert any("opcua_server.certificate:" in p for p in found), found


def test_opcua_config_server_defaults() -> None:
    server: Any = load_config_text(opcua_yaml(server="opcua_server: {}\n"), "n.yaml").opcua_server
    assert server.port == 4840 and server.security == ["None"]
    assert server.uri("edge1") == "urn:tandem:edge1"


def test_opcua_config_modbus_checks_skip_opcua_devices() -> None:
    # Two OPC UA devices on one endpoint share nothing: no shared-line or register checks.
    text = opcua_yaml() + (
        "  - name: ua2\n"
        "    protocol: opcua\n"
        "    endpoint: opc.tcp://10.0.0.5:4840/\n"
        "    groups: [{name: g, tags: [{name: t, node_id: 'ns=2;s=Line1.Temp', type: int32}]}]\n"
    )
    config = load_config_text(text, "node.yaml")
    assert len(config.devices) == 2
