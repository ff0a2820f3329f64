"""The seed guide's two keepalived.conf files, imported with `tandem config import-keepalived`,
run as a native pair in namespaces and behave like the originals: same roles, same transitions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.netns.ha_cluster import NodePlan, Place, ServiceBroker, TandemNode, wait_until
from tests.netns.netns import Topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
SECRET = "imported-seed-pair-secret"
# The guide's scripts, verbatim: the importer reads them to decide what they are replaced by.
SCRIPTS = {
    "check_alive.sh": '#!/bin/bash\nif ! curl 127.0.0.1:8085 >/dev/null 2>&1; then echo "neuronex '
    'start failed"; exit 1; fi\n',
    "master.sh": "#!/bin/bash\nsystemctl start neuronex\n",
    "backup.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
    "fault.sh": "#!/bin/bash\nsystemctl stop neuronex\n",
}


def adapt(seed: str, interface: str, peer: str) -> str:
    """The guide's file on this test network: its interface and its peer's address."""
    text = (DATA / seed).read_text()
    text = text.replace("interface eth0", f"interface {interface}")
    return text.replace("10.0.0.223", peer).replace("10.0.0.127", peer)


def import_seed(
    workdir: Path,
    seed: str,
    node: str,
    interface: str,
    address: str,
    peer: str,
    broker: ServiceBroker,
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, body in SCRIPTS.items():
        (workdir / name).write_text(body)
    conf = workdir / "keepalived.conf"
    conf.write_text(adapt(seed, interface, peer))
    hub = workdir / "hub.yaml"
    hub.write_text(
        yaml.safe_dump(
            {
                "node": node,
                "data_dir": str(workdir / "data"),
                "api": {"host": address, "port": 8085},
                "mqtt": {"host": broker.host, "port": broker.port},
                "devices": [],
            }
        )
    )
    out = workdir / "tandem.yaml"
    tandem = [sys.executable, "-m", "tandem"]
    done = subprocess.run(
        [*tandem, "config", "import-keepalived", str(conf), "--hub", str(hub),
         "--secret-file", "-", "-o", str(out)],
        capture_output=True, text=True, timeout=60, input=SECRET + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "replaced" in done.stderr  # the curl check and the start/stop scripts
    checked = subprocess.run(
        [*tandem, "config", "validate", str(out)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    return out


def vip_on(node: object, vip: str = "192.160.127.254") -> bool:
    ns = node.place.ns  # type: ignore[attr-defined]
    return vip in ns.run(["ip", "-4", "addr", "show"]).stdout


def test_imported_seed_pair_keeps_the_guides_roles_and_transitions(tmp_path: Path) -> None:
    with Topology(3) as topo:
        a_host, b_host, services = topo[0], topo[1], topo[2]
        broker = ServiceBroker(Place(services.ns), str(services.address.ip), tmp_path / "broker")
        broker.start()
        a_ip, b_ip = str(a_host.address.ip), str(b_host.address.ip)
        conf_a = import_seed(tmp_path / "a", "seed_master.conf", "neuronex-a",
                             a_host.ifname, a_ip, b_ip, broker)  # fmt: skip
        conf_b = import_seed(tmp_path / "b", "seed_backup.conf", "neuronex-b",
                             b_host.ifname, b_ip, a_ip, broker)  # fmt: skip
        imported = yaml.safe_load(conf_a.read_text())["ha"]
        assert (imported["priority"], imported["vrrp"]["version"]) == (100, 2)
        assert yaml.safe_load(conf_b.read_text())["ha"]["priority"] == 90

        def node(name: str, host: object, ip: str, peer: str, prio: int, conf: Path) -> TandemNode:
            plan = NodePlan(name, ip, 8085, peer, 8085, prio, "raw", host.ifname)  # type: ignore[attr-defined]
            return TandemNode(Place(host.ns), plan, conf, conf.parent / "node.log")  # type: ignore[attr-defined]

        a = node("neuronex-a", a_host, a_ip, b_ip, 100, conf_a)
        b = node("neuronex-b", b_host, b_ip, a_ip, 90, conf_b)
        try:
            # The guide's start: the priority-100 node is MASTER, the other BACKUP.
            a.start()
            wait_until(lambda: a.role() == "MASTER", 20, "the master node to be MASTER")
            b.start()
            wait_until(lambda: b.role() == "BACKUP", 20, "the backup node to be BACKUP")
            assert vip_on(a) and not vip_on(b)

            # Host failure: the backup takes over (advert 1 s: 3 x advert + skew = 3.65 s).
            killed = a.kill()
            wait_until(lambda: b.role() == "MASTER", 15, "the backup to take over")
            assert time.time() - killed < 3.65 + 2.0
            assert vip_on(b)

            # Master recovery: the priority-100 node is MASTER again and the other BACKUP.
            a.start()
            wait_until(lambda: a.role() == "MASTER", 30, "the master node to take back its role")
            wait_until(lambda: b.role() == "BACKUP", 10, "the backup to step down")
            assert vip_on(a) and not vip_on(b)
            timeline = b.request("GET", "/api/v1/timeline?limit=50").json()
            assert any("became BACKUP" in e["message"] for e in timeline), timeline
        except BaseException:
            print(a.tail(80), b.tail(80), sep="\n")
            raise
        finally:
            a.stop()
            b.stop()
            broker.stop()
