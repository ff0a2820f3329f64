"""The demo pair's configuration: two nodes on loopback, their ports, and the broker's config."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tandem.errors import TandemError

StandbyMode = Literal["hot", "cold"]

LOOPBACK = "127.0.0.1"
SEED_API_PORT = 8085  # the port the seed configs and the docs use; taken only when free
TOPIC = "/neuron/{node}"
CLUSTER = "demo"
DEMO_USER = "operator"
ADVERT_INTERVAL_S = 0.1
MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_HINT = (
    "tandem demo needs the mosquitto MQTT broker. Install it with ./scripts/setup demo "
    "(or: sudo apt-get install mosquitto) and run the demo again."
)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One member of the demo pair: its name, loopback address and election priority."""

    name: str
    address: str
    priority: int
    api_port: int


# ---- configs and ports (pure, or nearly) ----


def node_specs(api_ports: tuple[int, int]) -> tuple[NodeSpec, NodeSpec]:
    """The pair of the examples: node-a preferred (100) on 127.0.0.2, node-b (90) on .3."""
    return (
        NodeSpec("node-a", "127.0.0.2", 100, api_ports[0]),
        NodeSpec("node-b", "127.0.0.3", 90, api_ports[1]),
    )


def demo_devices(plc_port: int) -> list[dict[str, Any]]:
    """The PLC of examples/ha: one group of four tags polled every 100 ms."""
    return [
        {
            "name": "plc1",
            "host": LOOPBACK,
            "port": plc_port,
            "timeout": 0.3,
            "groups": [
                {
                    "name": "fast",
                    "interval": 0.1,
                    "tags": [
                        {"name": "counter", "address": 0, "type": "uint16"},
                        {"name": "sine", "address": 1, "type": "float32"},
                        {"name": "ramp", "address": 3, "type": "uint16"},
                        {"name": "coil0", "area": "coil", "address": 0, "type": "bool"},
                    ],
                }
            ],
        }
    ]


def node_config(
    spec: NodeSpec,
    peer: NodeSpec,
    *,
    devices: list[dict[str, Any]],
    broker_port: int,
    vrrp_port: int,
    standby: StandbyMode,
    data_dir: Path,
    secret: str,
    advert_listeners: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One node's config, derived from examples/ha: v3 adverts every 0.1 s over UDP.

    `advert_listeners` are extra loopback addresses the node's adverts are also sent to, for
    a benchmark that watches their timing; they never send, so they never count as peers.
    """
    return {
        "node": spec.name,
        "data_dir": str(data_dir),
        "api": {"host": spec.address, "port": spec.api_port},
        "mqtt": {"host": LOOPBACK, "port": broker_port, "topic": TOPIC},
        "devices": devices,
        "ha": {
            "cluster": CLUSTER,
            "priority": spec.priority,
            "standby": standby,
            "recovery": "automatic",
            "peer_url": f"http://{peer.address}:{peer.api_port}",
            "secret": secret,
            "vrrp": {
                "transport": "udp",
                "version": 3,
                "advert_interval": ADVERT_INTERVAL_S,
                "udp_port": vrrp_port,
                "unicast_src_ip": spec.address,
                "unicast_peers": [peer.address, *advert_listeners],
            },
        },
    }


def _port_free(host: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out; the process that needs it binds it a moment later."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def api_port_for(address: str) -> int:
    """The seed's 8085 when nobody holds it on this address, else any free port."""
    return SEED_API_PORT if _port_free(address, SEED_API_PORT) else free_port(address)


def shared_udp_port(addresses: tuple[str, ...]) -> int:
    """A UDP port free on every address: both nodes send adverts to the same port number."""
    for _ in range(50):
        port = free_port(addresses[0], socket.SOCK_DGRAM)
        if all(_port_free(a, port, socket.SOCK_DGRAM) for a in addresses[1:]):
            return port
    raise TandemError("no UDP port is free on all of " + ", ".join(addresses))


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def mosquitto_conf(port: int) -> str:
    return (
        "\n".join(
            [
                f"listener {port} {LOOPBACK}",
                "allow_anonymous true",
                "persistence false",
                # The demo's subscriber may fall behind for a moment; never drop its queue.
                "max_queued_messages 0",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
            ]
        )
        + "\n"
    )
