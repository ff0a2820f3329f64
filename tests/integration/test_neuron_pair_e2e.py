"""The whole migration in one command: the seed guide's keepalived.conf files plus a Neuron
export become one config per node (`import-keepalived --neuron`), `tandem config validate`
accepts them, and the two nodes run as a pair on loopback publishing the imported tags with
the values Neuron's decoding gives; when the master dies, the backup publishes them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.broker import RecordingSubscriber
from tests.integration.plc import SimProcess, start_sim
from tests.integration.test_neuron_import_e2e import patch_export, preset_for, tag_rows
from tests.netns.ha_cluster import (
    LOOPBACK_A,
    LOOPBACK_B,
    LOOPBACK_SERVICES,
    NodePlan,
    Place,
    ServiceBroker,
    TandemNode,
    free_udp_port_on_both,
    wait_until,
)
from tests.neuron_model import point, published

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "data" / "keepalived"
EXPORT = REPO / "tests" / "data" / "neuron" / "good" / "tcp_global_config.json"
SECRET = "neuron-migration-pair-secret"
GUIDE_SCRIPTS = {
    "check_alive.sh": '#!/bin/bash\nif ! curl 127.0.0.1:8085 >/dev/null 2>&1; then echo "neuronex '
    'start failed"; exit 1; fi\n',
    "master.sh": "#!/bin/bash\nsystemctl start neuronex\n",
    "backup.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "fault.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
}
TOPIC = "/neuron/mqtt/plc-1/registers"


def tandem(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem", *map(str, args)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def import_node(work: Path, seed: str, name: str, peer: str, export: Path) -> Path:
    """The guide's /etc/keepalived of one node and the site's export -> that node's config."""
    work.mkdir(parents=True, exist_ok=True)
    for script, body in GUIDE_SCRIPTS.items():
        (work / script).write_text(body)
    conf = work / "keepalived.conf"
    text = (SEEDS / seed).read_text().replace("10.0.0.223", peer).replace("10.0.0.127", peer)
    conf.write_text(text)
    secret = work / "secret"
    secret.write_text(SECRET)
    out = work / "tandem.yaml"
    done = tandem(
        "config", "import-keepalived", conf, "--neuron", export, "--node", name,
        "--secret-file", secret, "-o", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mapped: node 'plc-1'" in done.stderr and "replaced:" in done.stderr
    checked = tandem("config", "validate", out)
    assert checked.returncode == 0, checked.stderr
    return out


def on_loopback(imported: Path, plan: NodePlan, data_dir: Path) -> Path:
    """The imported config on this machine: VRRP over UDP between 127.0.0.2 and 127.0.0.3.

    Only what names the guide's network changes (interface, VIP, addresses, ports); the hub
    half and the election settings stay as imported.
    """
    config: dict[str, Any] = yaml.safe_load(imported.read_text())
    config["data_dir"] = str(data_dir)
    config["api"] = {"host": plan.address, "port": plan.api_port}
    ha = config["ha"]
    ha["peer_url"] = f"http://{plan.peer_address}:{plan.peer_api_port}"
    vrrp = ha["vrrp"]
    for key in ("interface", "vips"):
        vrrp.pop(key, None)
    vrrp.update(
        transport="udp",
        udp_port=plan.udp_port,
        unicast_src_ip=plan.address,
        unicast_peers=[plan.peer_address],
    )
    path = imported.with_name("node.yaml")
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    checked = tandem("config", "validate", path)
    assert checked.returncode == 0, checked.stderr
    return path


class Pair:
    def __init__(self, a: TandemNode, b: TandemNode, broker: ServiceBroker, wire: Any) -> None:
        self.a, self.b, self.broker, self.wire = a, b, broker, wire


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp("neuron-pair")
    services = Place(None, "services")
    broker = ServiceBroker(services, LOOPBACK_SERVICES, work / "broker")
    broker.start()
    sim: SimProcess | None = None
    nodes: list[TandemNode] = []
    try:
        export = json.loads(EXPORT.read_text())
        preset, wire = preset_for(export)
        (work / "preset.json").write_text(json.dumps(preset))
        sim = start_sim(
            ["--port", "0", "--load-registers", "0", "--preset", str(work / "preset.json")]
        )
        patched = work / EXPORT.name
        endpoint = {"port": sim.ports[0]}
        patched.write_text(json.dumps(patch_export(export, endpoint, broker)))  # type: ignore[arg-type]
        udp_port = free_udp_port_on_both()
        ports = (services.free_port(LOOPBACK_A), services.free_port(LOOPBACK_B))
        seeds = (("node-a", "seed_master.conf", LOOPBACK_A, LOOPBACK_B, 100),
                 ("node-b", "seed_backup.conf", LOOPBACK_B, LOOPBACK_A, 90))  # fmt: skip
        for i, (name, seed, address, peer, priority) in enumerate(seeds):
            plan = NodePlan(name, address, ports[i], peer, ports[1 - i], priority, "udp",
                            udp_port=udp_port)  # fmt: skip
            imported = import_node(work / name, seed, name, peer, patched)
            config = on_loopback(imported, plan, work / name / "data")
            nodes.append(TandemNode(Place(None, name), plan, config, work / name / "tandem.log"))
        for node in nodes:
            node.start()
        yield Pair(nodes[0], nodes[1], broker, wire)
    finally:
        for node in nodes:
            node.stop()
            node.place.close()
        if sim is not None:
            sim.stop()
        broker.stop()
        services.close()


def expected_values(wire: Any) -> dict[str, Any]:
    export = json.loads(EXPORT.read_text())
    values = {}
    for _, group, tag, params in tag_rows(export):
        if group == "registers" and tag["attribute"] != 2:
            p = point(tag["address"], tag["type"], params.get("address_base", 1))
            values[tag["name"]] = published(tag, params, wire[(p.area, p.start)])
    return values


async def first_from(sub: RecordingSubscriber, source: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in reversed(sub.messages):
            body = message.json()
            if message.topic == TOPIC and body.get("source_node") == source and not body["errors"]:
                return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    pytest.fail(f"nothing from {source} on {TOPIC} in {timeout} s")


async def test_neuron_pair_publishes_imported_tags_and_fails_over(pair: Pair) -> None:
    await asyncio.to_thread(
        wait_until, lambda: pair.a.role() == "MASTER" and pair.b.role() == "BACKUP", 60,
        "node-a MASTER and node-b BACKUP", lambda: pair.a.tail() + pair.b.tail(),
    )  # fmt: skip
    expected = expected_values(pair.wire)
    async with RecordingSubscriber(pair.broker.host, pair.broker.port) as sub:
        body = await first_from(sub, "node-a", 20)
        assert body["node"] == "plc-1"
        # A write-only tag (access: write) is read too until Tandem writes; Neuron does not.
        assert {name: body["values"][name] for name in expected} == expected
        pair.a.kill()
        await asyncio.to_thread(
            wait_until, lambda: pair.b.role() == "MASTER", 30, "node-b MASTER", pair.b.tail
        )
        taken = await first_from(sub, "node-b", 20)
        assert taken["values"] == body["values"]
        assert taken["term"] > body["term"]
