"""Each supported Neuron export, imported with `tandem config import-neuron`, runs on a real
hub (`tandem run`) against the PLC simulator (Modbus TCP, RTU on a PTY, RTU over TCP) and a
real mosquitto; every published value equals what Neuron's decoding gives for the
registers the simulator was loaded with."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tandem.config.neuron import tandem_name
from tests.integration.broker import Broker, RecordingSubscriber
from tests.integration.plc import PtyPair, SimProcess, start_pty_pair, start_sim
from tests.integration.test_hub_e2e import NodeProcess
from tests.neuron_model import BIT, DOUBLE, FLOAT, STRING, point, published

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data" / "neuron" / "good"
COLLECT_TIMEOUT_S = 30.0
TEXT = b"NEURON-TANDEM-0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ"


Preset = dict[str, dict[str, list[int]]]
# (area, start) -> the bytes preset there; every unit id sees the simulator's one set of tables
Wire = dict[tuple[str, int], bytes]
Seen = dict[tuple[str, str], dict[str, Any]]


@dataclass
class Site:
    """One imported export on its simulator: what each group published, last message first."""

    payloads: Seen
    topics: dict[tuple[str, str], str]
    wire: Wire
    config_text: str
    config_mode: int


def tag_rows(export: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    settings = {s["node"]: s["params"] for s in export.get("settings", [])}
    rows = []
    for node in export["nodes"]:
        params = node.get("params") or settings.get(node["name"], {})
        for group in node.get("groups", []):
            rows += [(node["name"], group["group"], t, params) for t in group["tags"]]
    for block in export.get("tags", []):
        params = settings.get(block["driver"], {})
        rows += [(block["driver"], block["group"], t, params) for t in block["tags"]]
    return rows


def wire_for(tag: dict[str, Any], index: int, size: int) -> bytes:
    """Register contents that tell every byte order apart and decode to finite numbers."""
    kind = tag["type"]
    if kind == STRING:
        return TEXT[index % 7 : index % 7 + size]
    if kind == FLOAT:  # 0x41..0x44 in any order: an exponent byte that keeps the float finite
        return bytes([0x41, 0x42, 0x43, 0x44])
    if kind == DOUBLE:
        return bytes([0x40 + (index + k) % 8 for k in range(8)])
    if kind == BIT:
        return bytes([0xA5, 0x83]) if size == 2 else bytes([index % 2])
    return bytes([(0x81 + 37 * index + 11 * k) & 0xFF for k in range(size)])


def preset_for(export: dict[str, Any]) -> tuple[Preset, Wire]:
    """The simulator preset for every tag, and the bytes each tag's registers hold."""
    preset: Preset = {}
    wire: Wire = {}
    for index, (_, _, tag, params) in enumerate(tag_rows(export)):
        p = point(tag["address"], tag["type"], params.get("address_base", 1))
        key = (p.area, p.start)
        if key in wire:
            continue  # another node or unit reads the same registers: same contents
        if p.area in ("coil", "discrete"):
            data = wire_for(tag, index, 1)
            preset.setdefault(p.area, {})[str(p.start)] = [data[0]]
        else:
            data = wire_for(tag, index, p.registers * 2)
            words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
            preset.setdefault(p.area, {})[str(p.start)] = words
        wire[key] = data
    return preset, wire


def patch_export(
    export: dict[str, Any], endpoint: dict[str, Any], broker: Broker
) -> dict[str, Any]:
    """The export as the site would have it, pointed at the simulator and the test broker."""
    params_of = [n["params"] for n in export["nodes"] if "params" in n]
    params_of += [s["params"] for s in export.get("settings", [])]
    for params in params_of:
        if "client-id" in params:  # the MQTT app
            params.update(host=broker.host, port=broker.port)
        elif "device" in params:
            params["device"] = endpoint["device"]
        else:
            params.update(host="127.0.0.1", port=endpoint["port"])
            params.pop("backup_host", None)
    return export


def run_import(export_path: Path, out: Path) -> None:
    tandem = [sys.executable, "-m", "tandem", "config"]
    done = subprocess.run(
        [*tandem, "import-neuron", str(export_path), "--node", "site", "-o", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    checked = subprocess.run(
        [*tandem, "validate", str(out)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


def runnable(text: str, data_dir: Path, broker: Broker) -> str:
    """The imported config on this machine: a private data_dir, an ephemeral API port."""
    text = text.replace('data_dir: "/var/lib/tandem"', f"data_dir: {json.dumps(str(data_dir))}")
    text += 'api:\n  host: "127.0.0.1"\n  port: 0\n'
    if "\nmqtt:" not in text:  # global/drivers exports carry no MQTT app
        text += f'mqtt:\n  host: "{broker.host}"\n  port: {broker.port}\n'
    return text


async def collect(
    config: Path, log: Path, broker: Broker, groups: set[tuple[str, str]]
) -> tuple[Seen, dict[tuple[str, str], str]]:
    """The last clean message of every group the node publishes, and its topic."""
    payloads: Seen = {}
    topics: dict[tuple[str, str], str] = {}
    async with RecordingSubscriber(broker.host, broker.port) as sub:
        node = NodeProcess(config, log)
        try:
            await node.wait_ready()
            deadline = asyncio.get_running_loop().time() + COLLECT_TIMEOUT_S
            while not groups <= payloads.keys():
                if asyncio.get_running_loop().time() > deadline:
                    pytest.fail(
                        f"published {sorted(payloads)} of {sorted(groups)}\n{node.log_text()}"
                    )
                await asyncio.sleep(0.2)
                for message in sub.messages:
                    body = message.json()
                    if isinstance(body, dict) and "values" in body and not body.get("errors"):
                        key = (body["node"], body["group"])
                        payloads[key], topics[key] = body, message.topic
        finally:
            node.terminate()
    return payloads, topics


def expected_groups(text: str) -> set[tuple[str, str]]:
    from tandem.config.hub import load_config_text

    config = load_config_text(text)
    return {(d.name, g.name) for d in config.devices for g in d.groups}


def endpoint_for(name: str, stack: list[SimProcess | PtyPair], preset: Path) -> dict[str, Any]:
    common = ["--load-registers", "0", "--preset", str(preset)]
    if name.startswith("rtu_serial"):
        pty = start_pty_pair()
        stack.append(pty)
        stack.append(start_sim(["--rtu", pty.device, *common]))
        return {"device": pty.hub}
    framing = ["--rtu-over-tcp"] if name.startswith("rtu_over_tcp") else []
    sim = start_sim(["--port", "0", *framing, *common])
    stack.append(sim)
    return {"port": sim.ports[0]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    root = tmp_path_factory.mktemp("neuron")
    broker = Broker(root)
    broker.start()
    stack: list[SimProcess | PtyPair] = []
    try:
        found: dict[str, Site] = {}
        for path in sorted(DATA.glob("*.json")):
            work = root / path.stem
            work.mkdir()
            export = json.loads(path.read_text())
            preset, wire = preset_for(export)
            (work / "preset.json").write_text(json.dumps(preset))
            endpoint = endpoint_for(path.name, stack, work / "preset.json")
            (work / path.name).write_text(json.dumps(patch_export(export, endpoint, broker)))
            out = work / "tandem.yaml"
            run_import(work / path.name, out)
            text = out.read_text()
            mode = os.stat(out).st_mode & 0o777
            config = work / "run.yaml"
            config.write_text(runnable(text, work / "data", broker))
            groups = expected_groups(config.read_text())
            payloads, topics = asyncio.run(collect(config, work / "node.log", broker, groups))
            found[path.name] = Site(payloads, topics, wire, text, mode)
        yield found
    finally:
        for item in reversed(stack):
            item.stop()
        broker.stop()


def cases() -> list[tuple[str, str, str, dict[str, Any], dict[str, Any]]]:
    rows = []
    for path in sorted(DATA.glob("*.json")):
        export = json.loads(path.read_text())
        subscribed = {
            (g["driver"], g["group"]) for s in export.get("subscriptions", []) for g in s["groups"]
            if s["app"] == "mqtt"
        }  # fmt: skip
        for node, group, tag, params in tag_rows(export):
            if "subscriptions" in export and (node, group) not in subscribed:
                continue
            if tag["attribute"] == 2:  # write-only: Neuron does not read it
                continue
            rows.append((path.name, node, group, tag, params))
    return rows


CASES = cases()


def device_of(site: Site, node: str, tag: dict[str, Any], group: str) -> dict[str, Any]:
    unit = tag["address"].split("!")[0]
    for name in (tandem_name(node), f"{tandem_name(node)}-unit{unit}"):
        body = site.payloads.get((name, tandem_name(group)))
        if body is not None and tag["name"] in body["values"]:
            return body
    raise AssertionError(f"no payload carries {node}/{group}/{tag['name']}")


@pytest.mark.parametrize(
    ("file", "node", "group", "tag", "params"),
    CASES,
    ids=[f"{c[0]}:{c[1]}/{c[2]}/{c[3]['name']}" for c in CASES],
)
def test_import_neuron_published_value_equals_neuron_decoding(
    sites: dict[str, Site],
    file: str,
    node: str,
    group: str,
    tag: dict[str, Any],
    params: dict[str, Any],
) -> None:
    site = sites[file]
    p = point(tag["address"], tag["type"], params.get("address_base", 1))
    expected = published(tag, params, site.wire[(p.area, p.start)])
    body = device_of(site, node, tag, group)
    assert body["values"][tag["name"]] == expected


def test_import_neuron_topics_are_the_subscriptions_topics(sites: dict[str, Site]) -> None:
    topics = sites["tcp_global_config.json"].topics
    assert topics[("plc-1", "registers")] == "/neuron/mqtt/plc-1/registers"
    assert topics[("plc-1", "bits")] == "/neuron/mqtt/plc-1/bits"  # Neuron's default topic
    assert ("plc-1", "analytics") not in sites["tcp_global_config.json"].payloads


def test_import_neuron_output_file_is_private_and_holds_the_password(
    sites: dict[str, Site],
) -> None:
    site = sites["tcp_global_config.json"]
    assert site.config_mode == 0o600
    assert 'password: "broker-secret-42"' in site.config_text
