"""The hub's OPC UA server, end to end: PLC simulator -> Hub -> OPC UA server -> asyncua client.

One hub polls the Modbus simulator and the OPC UA simulator and serves both over OPC UA; a
real asyncua client reads values, types, timestamps and statuses, finds the server refuses
every change (write, AddNodes, admin login), and reads ServiceLevel and ServerRedundancy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.uaerrors import UaError

from tandem.config.hub import TandemConfig
from tandem.hub.runtime import Hub
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tandem.sim.opcua import OpcUaSimulator
from tests.integration.opcua_helpers import CertPair, make_certificate
from tests.integration.plc import running_plc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

INTERVAL = 0.1
WAIT_S = 20.0
NAMESPACE = "urn:tandem:edge1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertPair]:
    base = tmp_path_factory.mktemp("north-pki")
    return {
        "server": make_certificate(base, "tandem", "urn:tandem:edge1"),
        "client": make_certificate(base, "scada", "urn:tandem:test:scada"),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CertPair]
) -> AsyncIterator[Hub]:
    data = tmp_path_factory.mktemp("north-hub")
    with running_plc() as modbus:
        async with OpcUaSimulator(port=0) as sim:
            config = TandemConfig.model_validate(hub_config(data, sim.endpoint, modbus.port, pki))
            sim.set_status("Level", ua.StatusCodes.BadSensorFailure)
            async with Hub(config) as running:
                yield running


def hub_config(data: Path, ua_endpoint: str, modbus_port: int, pki: dict[str, CertPair]) -> Any:
    return {
        "node": "edge1",
        "data_dir": str(data),
        "api": {"host": "127.0.0.1", "port": 0},
        "mqtt": {"host": "127.0.0.1", "port": 1},  # no broker: the server does not need one
        "devices": [
            {
                "name": "plc1",
                "host": "127.0.0.1",
                "port": modbus_port,
                "groups": [
                    {
                        "name": "fast",
                        "interval": INTERVAL,
                        "tags": [
                            {"name": "counter", "address": 0, "type": "uint16"},
                            {"name": "sine", "address": 1, "type": "float32"},
                            {"name": "scaled", "address": 10, "type": "int16", "scale": 0.5},
                            {"name": "text", "address": 20, "type": "string", "length": 8},
                            {"name": "coil0", "area": "coil", "address": 0, "type": "bool"},
                            {"name": "unmapped", "address": 5000, "type": "uint16"},
                        ],
                    }
                ],
            },
            {
                "protocol": "opcua",
                "name": "ua1",
                "endpoint": ua_endpoint,
                "groups": [
                    {
                        "name": "g",
                        "interval": INTERVAL,
                        "tags": [
                            {"name": "total", "node_id": "ns=2;s=Total", "type": "int64"},
                            {"name": "level", "node_id": "ns=2;s=Level", "type": "int16"},
                        ],
                    }
                ],
            },
        ],
        "opcua_server": {
            "host": "127.0.0.1",
            "port": 0,
            "security": ["None", "Basic256Sha256-SignAndEncrypt"],
            "certificate": str(pki["server"].certificate),
            "private_key": str(pki["server"].private_key),
        },
    }


async def read(client: Client, path: str) -> ua.DataValue:
    ns = await client.get_namespace_index(NAMESPACE)
    return await client.get_node(f"ns={ns};s={path}").read_data_value(raise_on_bad_status=False)


async def wait_good(client: Client, path: str) -> ua.DataValue:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = await read(client, path)
        if value.StatusCode is not None and value.StatusCode.is_good():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never good: {value}")


def endpoint(hub: Hub) -> str:
    assert hub.north is not None
    return hub.north.endpoint


async def test_opcua_server_tags_have_values_types_and_slot_timestamps(hub: Hub) -> None:
    async with Client(endpoint(hub)) as client:
        counter = await wait_good(client, "plc1/fast/counter")
        values = {t: await wait_good(client, f"plc1/fast/{t}") for t in ("sine", "scaled", "text")}
        coil = await wait_good(client, "plc1/fast/coil0")
        total = await wait_good(client, "ua1/g/total")
    assert counter.Value is not None and counter.Value.VariantType == ua.VariantType.UInt16
    assert values["sine"].Value.VariantType == ua.VariantType.Float
    assert values["scaled"].Value.VariantType == ua.VariantType.Double
    assert values["scaled"].Value.Value == -617.0  # -1234 * 0.5
    assert values["text"].Value.Value == "TANDEM-SIM"
    assert coil.Value.VariantType == ua.VariantType.Boolean
    assert total.Value.VariantType == ua.VariantType.Int64 and total.Value.Value == 2**40 + 1
    stamp = counter.SourceTimestamp
    assert stamp is not None
    # The slot's grid time: a whole multiple of the interval (both nodes stamp a slot alike).
    seconds = stamp.replace(tzinfo=UTC).timestamp()
    assert abs(seconds / INTERVAL - round(seconds / INTERVAL)) < 1e-3
    assert abs(time.time() - seconds) < 5


async def test_opcua_server_tag_errors_are_bad_status_codes(hub: Hub) -> None:
    async with Client(endpoint(hub)) as client:
        await wait_good(client, "plc1/fast/counter")
        unmapped = await read(client, "plc1/fast/unmapped")
        level = await read(client, "ua1/g/level")
    assert unmapped.StatusCode is not None and level.StatusCode is not None
    # Modbus exception 2 (illegal data address), and the OPC UA server's own code, passed on.
    assert unmapped.StatusCode.value == ua.StatusCodes.BadOutOfRange
    assert level.StatusCode.value == ua.StatusCodes.BadSensorFailure


async def test_opcua_server_single_node_is_healthy_without_redundancy(hub: Hub) -> None:
    async with Client(endpoint(hub)) as client:
        await wait_good(client, "plc1/fast/counter")
        await wait_good(client, "ua1/g/total")
        await asyncio.sleep(0.5)  # a few slots of both groups stored: the data is fresh
        level = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel)).read_value()
        support = await client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerRedundancy_RedundancySupport)
        ).read_value()
        uris = await client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerRedundancy_ServerUriArray)
        ).read_value()
    # Degraded band: some tags are in error (the unmapped register, the bad sensor).
    assert 2 <= level <= 199
    assert support == ua.RedundancySupport.None_
    assert uris == ["urn:tandem:edge1"]
    info = hub.status().opcua_server
    assert info is not None and info.service_level == level and info.reason == "publishing"
    token = create_token(hub.config.data_dir, Role.VIEWER)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        metrics = (await http.get(f"http://127.0.0.1:{hub.api_port}/metrics")).text
    assert f"tandem_opcua_service_level {float(level)}" in metrics


async def test_opcua_server_refuses_every_change(hub: Hub) -> None:
    async with Client(endpoint(hub)) as client:
        ns = await client.get_namespace_index(NAMESPACE)
        node = client.get_node(f"ns={ns};s=plc1/fast/counter")
        await wait_good(client, "plc1/fast/counter")
        with pytest.raises(UaError):
            await node.write_value(ua.Variant(7, ua.VariantType.UInt16))
        with pytest.raises(UaError):
            await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel)).write_value(
                ua.Variant(255, ua.VariantType.Byte)
            )
        with pytest.raises(UaError):
            await client.nodes.objects.add_folder(ns, "intruder")
        with pytest.raises(UaError):
            await node.delete()
        with pytest.raises(UaError):  # nothing was added
            await client.get_node(f"ns={ns};s=intruder").read_browse_name()
    admin = Client(endpoint(hub))
    admin.set_user("admin")
    admin.set_password("anything")
    with pytest.raises((UaError, ConnectionError, TimeoutError)):
        await admin.connect()
    await asyncio.sleep(0)


async def test_opcua_server_basic256sha256_endpoint_serves_values(
    hub: Hub, pki: dict[str, CertPair]
) -> None:
    client = Client(endpoint(hub))
    client.application_uri = pki["client"].uri
    await client.set_security_string(
        f"Basic256Sha256,SignAndEncrypt,{pki['client'].certificate},"
        f"{pki['client'].private_key},{pki['server'].certificate}"
    )
    async with client:
        counter = await wait_good(client, "plc1/fast/counter")
    assert counter.Value is not None and isinstance(counter.Value.Value, int)


async def test_opcua_server_register_server_from_a_client_is_refused(hub: Hub) -> None:
    rogue = ua.RegisteredServer()
    rogue.ServerUri = "urn:rogue"
    rogue.ProductUri = "urn:rogue"
    rogue.ServerNames = [ua.LocalizedText("rogue")]
    rogue.ServerType = ua.ApplicationType.Server
    rogue.DiscoveryUrls = ["opc.tcp://203.0.113.1:4840/"]
    rogue.IsOnline = True
    async with Client(endpoint(hub)) as client:
        with pytest.raises(UaError):
            await client.uaclient.register_server(rogue)
        servers = await client.find_servers()
    assert [s.ApplicationUri for s in servers] == ["urn:tandem:edge1"]


async def test_opcua_server_trusted_clients_only_admits_listed_certificates(
    tmp_path: Path, pki: dict[str, CertPair]
) -> None:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "scada.der").write_bytes(pki["client"].certificate.read_bytes())
    stranger = make_certificate(tmp_path / "other", "stranger", "urn:tandem:test:stranger")
    config = TandemConfig.model_validate(
        {
            "node": "edge1",
            "data_dir": str(tmp_path / "data"),
            "api": {"host": "127.0.0.1", "port": 0},
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "opcua_server": {
                "host": "127.0.0.1",
                "port": 0,
                "security": ["Basic256Sha256-SignAndEncrypt"],
                "certificate": str(pki["server"].certificate),
                "private_key": str(pki["server"].private_key),
                "trusted_clients": str(trusted),
            },
        }
    )

    async def session(cert: CertPair) -> int:
        client = Client(endpoint(running), timeout=5)
        client.application_uri = cert.uri
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{cert.certificate},{cert.private_key},"
            f"{pki['server'].certificate}"
        )
        async with client:
            node = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel))
            return int(await node.read_value())

    async with Hub(config) as running:
        assert await session(pki["client"]) == 255  # no devices: nothing missing
        with pytest.raises((UaError, ConnectionError, TimeoutError)):
            await session(stranger)
