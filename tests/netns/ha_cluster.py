"""A real Tandem HA pair for acceptance tests and the failover bench: nodes, broker, PLC, audit.

Everything runs as real processes: `tandem run` per node, mosquitto with persistence, the PLC
simulator, and a delivery-audit subscriber that writes every arrival to a JSON-lines file (a
subprocess, so it can live in the services namespace and keeps its own clock and event loop
away from whatever the test is doing). A `Place` says where a process runs: inside a network
namespace (the netns tests) or in the root namespace on loopback (the non-root variant).

Run as a module, it is that audit subscriber:
    python -m tests.netns.ha_cluster audit HOST PORT OUT_FILE CLIENT_ID
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from tandem.config.hub import load_config
from tandem.ha.audit import Arrival, Delivered, DeliveryAudit
from tandem.security.certs import NodeFiles, init_pair
from tandem.security.roles import Role
from tandem.security.tokens import create_token

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
TANDEM = PYTHON.with_name("tandem")
MOSQUITTO = "/usr/sbin/mosquitto"
TOPIC = "/neuron/{node}"
AUDIT_TOPIC = "/neuron/+"
CLUSTER = "line1"
SECRET = "acceptance-test-peer-secret"
ADVERT_INTERVAL = 0.1
GROUP_INTERVAL = 0.1
DEVICE = "plc1"
GROUPS = ("fast", "bits")
NODE_A, NODE_B = "node-a", "node-b"
_STOP_GRACE = 5.0

Standby = Literal["hot", "warm", "cold"]


class ClusterTimeout(AssertionError):
    """A cluster did not reach the awaited state; the message carries the node log tails."""


# ---- where processes run ----------------------------------------------------------------------


class Place:
    """A network namespace, or the root namespace when `ns` is None (loopback runs)."""

    def __init__(self, ns: Any | None = None, label: str = "root") -> None:
        self.ns = ns
        self.label = label if ns is None else ns.name
        self._processes: list[subprocess.Popen[Any]] = []

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("cwd", str(REPO))
        if self.ns is not None:
            return self.ns.popen(list(argv), **kw)  # type: ignore[no-any-return]
        kw.setdefault("start_new_session", True)
        process: subprocess.Popen[Any] = subprocess.Popen(list(argv), **kw)
        self._processes.append(process)
        return process

    def run(self, argv: Sequence[str]) -> None:
        """A short command (ip route ...) in this place; raises with stderr on failure."""
        full = list(argv) if self.ns is None else ["ip", "netns", "exec", self.ns.name, *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip()}")

    def stop(self, process: subprocess.Popen[Any], grace: float = _STOP_GRACE) -> int | None:
        """SIGTERM the process group, SIGKILL after `grace`; never raises (used in teardown)."""
        if self.ns is not None:
            with contextlib.suppress(Exception):
                return self.ns.stop(process, grace)  # type: ignore[no-any-return]
            return process.poll()
        if process.poll() is None:
            _killpg(process, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                _killpg(process, signal.SIGKILL)
                process.wait(grace)
        _killpg(process, signal.SIGKILL)
        return process.returncode

    def close(self) -> None:
        for process in self._processes:
            self.stop(process)
        self._processes.clear()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Sockets made inside the block belong to this place (the calling thread only)."""
        if self.ns is None:
            yield
        else:
            with self.ns.entered():
                yield

    def free_port(self, address: str, kind: int = socket.SOCK_STREAM) -> int:
        with self.entered(), socket.socket(socket.AF_INET, kind) as s:
            s.bind((address, 0))
            return int(s.getsockname()[1])

    def request(
        self, method: str, url: str, timeout: float = 1.0, verify: Any = True, **kw: Any
    ) -> httpx.Response:
        # A fresh client inside the block: its connection is made in this namespace.
        with self.entered(), httpx.Client(timeout=timeout, verify=verify) as client:
            return client.request(method, url, **kw)

    def accepting(self, address: str, port: int) -> bool:
        with (
            self.entered(),
            contextlib.suppress(OSError),
            socket.create_connection((address, port), 0.3),
        ):
            return True
        return False


def _killpg(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def wait_until(
    cond: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = str
) -> float:
    """Poll `cond` until true; returns the wall time it became true, or raises ClusterTimeout."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.time()
        if time.monotonic() > deadline:
            raise ClusterTimeout(f"timed out after {timeout} s waiting for {what}\n{detail()}")
        time.sleep(0.05)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} missing)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# ---- services: broker, PLC ------------------------------------------------------------------


class ServiceBroker:
    """mosquitto with persistence on `address`, so sessions and queued QoS 1 survive a restart."""

    def __init__(self, place: Place, address: str, workdir: Path) -> None:
        self.place = place
        self.host = address
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = place.free_port(address)
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {address}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 0",
            # The audit must never be the one that drops: no queue limit for its session.
            "max_queued_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user, which cannot write the tmp dir.
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[Any] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self.log.open("ab") as out:
            self.process = self.place.popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: self.place.accepting(self.host, self.port),
            timeout,
            f"mosquitto on {self.host}:{self.port}",
            lambda: tail(self.log),
        )

    def stop(self) -> None:
        """An orderly stop: mosquitto writes its persistence file on SIGTERM."""
        if self.process is not None:
            self.place.stop(self.process)
            self.process = None


class PlcSimulator:
    """`tandem simulate-plc` on `address`, on a port the kernel chose inside the place."""

    def __init__(
        self, place: Place, address: str, workdir: Path, load_registers: int = 1000
    ) -> None:
        self.place = place
        self.host = address
        self.load_registers = load_registers
        self.port = place.free_port(address)
        self.log = workdir / "plc.log"
        self.write_log = workdir / "plc-writes.jsonl"  # every write it receives, one per line
        self.process: subprocess.Popen[Any] | None = None

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("ab") as out:
            self.process = self.place.popen(
                [
                    str(TANDEM),
                    "simulate-plc",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--load-registers",
                    str(self.load_registers),
                    "--write-log",
                    str(self.write_log),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: self.place.accepting(self.host, self.port),
            timeout,
            f"PLC simulator on {self.host}:{self.port}",
            lambda: tail(self.log),
        )

    def stop(self) -> None:
        if self.process is not None:
            self.place.stop(self.process)
            self.process = None


# ---- the audit subscriber -------------------------------------------------------------------


class AuditProcess:
    """The delivery audit as a subprocess; arrivals are read back from its JSON-lines file."""

    def __init__(self, place: Place, host: str, port: int, workdir: Path, client_id: str) -> None:
        self.place = place
        self.out = workdir / "arrivals.jsonl"
        self.log = workdir / "audit.log"
        self.argv = [
            str(PYTHON), "-m", "tests.netns.ha_cluster", "audit",
            host, str(port), str(self.out), client_id,
        ]  # fmt: skip
        self.process: subprocess.Popen[Any] | None = None
        self._cache: list[Arrival] = []
        self.digests: list[str] = []  # parallel to the arrivals
        self.empties: list[bool] = []  # parallel to the arrivals: published without values
        self._offset = 0
        self.unsigned = 0

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("ab") as out:
            self.process = self.place.popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self.subscribed, timeout, "the audit subscriber", lambda: tail(self.log))

    def subscribed(self) -> bool:
        return self.out.exists() and b'"subscribed"' in self.out.read_bytes()[:4096]

    def arrivals(self) -> list[Arrival]:
        """Every data message seen so far, in arrival order (read incrementally)."""
        if self.out.exists():
            with self.out.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            complete = chunk.rfind(b"\n") + 1
            self._offset += complete
            for line in chunk[:complete].splitlines():
                doc = json.loads(line)
                if "slot" in doc and not doc.get("signed", True):
                    self.unsigned += 1  # not the pair's (a test's forgery): not judged
                elif "slot" in doc:
                    self.digests.append(doc.get("digest", ""))
                    self.empties.append(bool(doc.get("empty", False)))
                    self._cache.append(
                        Arrival(
                            doc["at"],
                            Delivered(
                                device=doc["device"],
                                group=doc["group"],
                                slot=doc["slot"],
                                seq=doc.get("seq", 0),
                                term=doc["term"],
                                source_node=doc["source_node"],
                            ),
                        )
                    )
        return list(self._cache)

    def last_arrival(self) -> Arrival | None:
        found = self.arrivals()
        return found[-1] if found else None

    def stop(self) -> None:
        if self.process is not None:
            self.place.stop(self.process)
            self.process = None


def _values(payload: bytes) -> bool:
    try:
        return bool(json.loads(payload).get("values"))
    except (ValueError, AttributeError):
        return False


async def _audit_main(host: str, port: int, out: Path, client_id: str) -> None:
    import aiomqtt

    from tandem.ha.audit import parse_delivered
    from tandem.ha.wire import Signer
    from tandem.security.keys import broker_hmac_key

    # A consumer that checks `sig`: only what the pair signed is judged.
    signer = Signer(broker_hmac_key(SECRET), CLUSTER)
    with out.open("a", buffering=1) as sink:
        while True:
            try:
                async with aiomqtt.Client(
                    host, port, identifier=client_id, clean_session=False, keepalive=5
                ) as client:
                    await client.subscribe(AUDIT_TOPIC, qos=1)
                    sink.write(json.dumps({"subscribed": time.time()}) + "\n")
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            continue
                        d = parse_delivered(bytes(payload))
                        if d is None:
                            continue
                        row = {
                            "at": time.time(),
                            "device": d.device,
                            "group": d.group,
                            "slot": d.slot,
                            "seq": d.seq,
                            "term": d.term,
                            "source_node": d.source_node,
                            # Identical bytes again is a QoS 1 redelivery on some hop, not
                            # a second publish of the slot: the judge tells them apart.
                            "digest": hashlib.blake2b(payload, digest_size=8).hexdigest(),
                            "signed": signer.data_valid(d) and d.source_node in (NODE_A, NODE_B),
                            # A poll that failed is published with errors and no values: the
                            # slot is there, its data is not.
                            "empty": not _values(bytes(payload)),
                        }
                        sink.write(json.dumps(row) + "\n")
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)


# ---- judging a window -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Delivery over a window of slots: every stream judged by tandem.ha.audit's rule."""

    messages: int
    lost: int
    duplicates: int  # a slot published again (another node or term, or other content)
    redeliveries: int  # byte-identical repeats: MQTT QoS 1 at-least-once on a hop
    error_only: int  # slots delivered, but as a failed poll (errors, no values)
    max_gap_s: float  # the longest silence between two arrivals: the interruption felt
    out_of_order: int
    publishers: tuple[str, ...]
    terms: dict[int, tuple[str, ...]]  # term -> the nodes that sent under it
    missing: dict[str, list[int]]
    duplicate_slots: dict[str, list[int]]

    @property
    def one_publisher_at_a_time(self) -> bool:
        """Publishers change only with the term: no two nodes interleave, no term is shared."""
        return len(self.publishers) <= len(self.terms) and all(
            len(nodes) == 1 for nodes in self.terms.values()
        )

    def describe(self) -> str:
        return (
            f"{self.messages} messages, lost {self.lost} {self.missing}, duplicates "
            f"{self.duplicates} {self.duplicate_slots}, redeliveries {self.redeliveries}, "
            f"error-only {self.error_only}, max gap {self.max_gap_s:.3f} s, "
            f"out of order {self.out_of_order}, "
            f"publishers {list(self.publishers)}, terms {self.terms}"
        )


def judge(
    arrivals: Sequence[Arrival],
    start: float,
    end: float,
    digests: Sequence[str] = (),
    empties: Sequence[bool] = (),
) -> Verdict:
    """The slots that arrived within [start, end] per stream, and every arrival of those slots.

    The slot range, not the arrival time, bounds the window: a duplicate of a slot in range
    counts even if it arrived after `end`, and a slot missing in the middle is lost.
    `digests` (parallel to `arrivals`) separate byte-identical redeliveries from duplicates;
    `empties` (parallel too) mark slots published as failed polls.
    """
    ranges: dict[str, tuple[int, int]] = {}
    for a in arrivals:
        if start <= a.at <= end:
            key = f"{a.delivered.device}/{a.delivered.group}"
            lo, hi = ranges.get(key, (a.delivered.slot, a.delivered.slot))
            ranges[key] = (min(lo, a.delivered.slot), max(hi, a.delivered.slot))
    audit = DeliveryAudit()
    terms: dict[int, set[str]] = defaultdict(set)
    first_digest: dict[tuple[str, int], str] = {}
    redeliveries = 0
    error_only = 0
    times: list[float] = []
    for i, a in enumerate(arrivals):
        d = a.delivered
        key = f"{d.device}/{d.group}"
        bounds = ranges.get(key)
        if bounds is not None and bounds[0] <= d.slot <= bounds[1]:
            digest = digests[i] if i < len(digests) else ""
            seen = first_digest.setdefault((key, d.slot), digest)
            if digest and seen == digest and _repeat(audit, key, d.slot):
                redeliveries += 1
                continue
            if not _repeat(audit, key, d.slot) and i < len(empties) and empties[i]:
                error_only += 1
            times.append(a.at)
            audit.add(d, a.at)
            terms[d.term].add(d.source_node)
    return Verdict(
        messages=audit.messages,
        lost=audit.lost,
        duplicates=audit.duplicates,
        redeliveries=redeliveries,
        error_only=error_only,
        max_gap_s=max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0),
        out_of_order=audit.out_of_order,
        publishers=tuple(audit.publishers()),
        terms={t: tuple(sorted(n)) for t, n in sorted(terms.items())},
        missing={k: s.missing()[:20] for k, s in audit.streams.items() if s.lost},
        duplicate_slots={
            k: s.duplicate_slots[:20] for k, s in audit.streams.items() if s.duplicates
        },
    )


MIN_MESSAGES = 40  # two groups at 10 Hz over >= 4 s: far fewer means nothing was audited


# QoS 1 is at-least-once per hop: a message in flight when the broker stops comes again,
# byte for byte, after it returns; bounded by the publisher's inflight window (mqtt.inflight).
MAX_REDELIVERIES_ON_BROKER_RESTART = 20


def assert_exactly_once(
    cluster: HaCluster, start: float, end: float, max_redeliveries: int = 0
) -> Verdict:
    """0 lost, 0 duplicate, one publisher per term; the message carries the node logs."""
    verdict = cluster.judge(start, end)
    why = f"{verdict.describe()}\n{cluster.logs()}"
    assert verdict.messages >= MIN_MESSAGES, why
    assert verdict.lost == 0, why
    assert verdict.duplicates == 0, why
    assert verdict.redeliveries <= max_redeliveries, why
    assert verdict.one_publisher_at_a_time, why
    return verdict


def _repeat(audit: DeliveryAudit, key: str, slot: int) -> bool:
    stream = audit.streams.get(key)
    return stream is not None and slot in stream.seen


def first_publish(arrivals: Sequence[Arrival], after: float, node: str) -> float | None:
    """Wall time of the first message from `node` that arrived at or after `after`."""
    for a in arrivals:
        if a.at >= after and a.delivered.source_node == node:
            return a.at
    return None


# ---- nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Everything that differs between the two nodes' configs."""

    name: str
    address: str  # unicast_src_ip
    api_port: int
    peer_address: str
    peer_api_port: int
    priority: int
    transport: Literal["raw", "udp"]
    interface: str | None = None
    udp_port: int = 5112
    vip: str | None = None
    opcua_port: int | None = None  # this node serves OPC UA (a hot redundant pair of servers)

    @property
    def opcua_uri(self) -> str:
        return f"urn:tandem:{self.name}"

    @property
    def opcua_url(self) -> str | None:
        return None if self.opcua_port is None else f"opc.tcp://{self.address}:{self.opcua_port}/"


def node_config(
    plan: NodePlan,
    *,
    data_dir: Path,
    broker: tuple[str, int],
    plc: tuple[str, int],
    standby: Standby = "hot",
    recovery: Literal["automatic", "manual"] = "automatic",
    load_tags: int = 0,
    peer_opcua_uri: str | None = None,
    peer_opcua_port: int | None = None,
    write_tags: int = 0,
) -> dict[str, Any]:
    """A full `tandem run` config for one node of the pair (JSON is valid YAML).

    `load_tags` adds a group "load" of that many registers (the simulator's load block), for
    tests and benchmarks of a pair under a realistic tag count; `write_tags` a group "w" of
    that many writable uint16 tags w0, w1, ... on the simulator's write block (holding 50-99).
    """
    vrrp: dict[str, Any] = {
        "transport": plan.transport,
        "version": 3,
        "advert_interval": ADVERT_INTERVAL,
        "unicast_src_ip": plan.address,
        "unicast_peers": [plan.peer_address],
    }
    if plan.transport == "raw":
        vrrp["interface"] = plan.interface
        if plan.vip:
            vrrp["vips"] = [plan.vip]
    else:
        vrrp["udp_port"] = plan.udp_port
    extra: dict[str, Any] = {}
    if plan.opcua_port is not None:
        extra["opcua_server"] = {
            "host": plan.address,
            "port": plan.opcua_port,
            "application_uri": plan.opcua_uri,
            "peer_uri": peer_opcua_uri,
            "peer_endpoint": f"opc.tcp://{plan.peer_address}:{peer_opcua_port}/",
        }
    return {
        "node": plan.name,
        "data_dir": str(data_dir),
        "api": {"host": plan.address, "port": plan.api_port},
        "mqtt": {"host": broker[0], "port": broker[1], "topic": TOPIC, "keepalive": 5},
        "devices": [
            {
                "name": DEVICE,
                "host": plc[0],
                "port": plc[1],
                "timeout": 0.3,
                "reconnect_min": 0.1,
                "reconnect_max": 0.5,
                "groups": [
                    {
                        "name": GROUPS[0],
                        "interval": GROUP_INTERVAL,
                        "tags": [
                            {"name": "counter", "address": 0, "type": "uint16"},
                            {"name": "sine", "address": 1, "type": "float32"},
                        ],
                    },
                    {
                        "name": GROUPS[1],
                        "interval": GROUP_INTERVAL,
                        "tags": [{"name": "coil0", "area": "coil", "address": 0, "type": "bool"}],
                    },
                    *load_group(load_tags),
                    *write_group(write_tags),
                ],
            }
        ],
        "ha": {
            "cluster": CLUSTER,
            "priority": plan.priority,
            "standby": standby,
            "recovery": recovery,
            "peer_url": f"http://{plan.peer_address}:{plan.peer_api_port}",
            "secret": SECRET,
            "vrrp": vrrp,
        },
        **extra,
    }


def write_group(tags: int) -> list[dict[str, Any]]:
    if tags <= 0:
        return []
    return [
        {
            "name": "w",
            "interval": 0.5,
            "tags": [
                {"name": f"w{i}", "address": 50 + i, "access": "read_write"}
                for i in range(min(tags, 50))
            ],
        }
    ]


LOAD_GROUP_INTERVAL = 0.5
"""The load group is there for its size (every page, response and stream carries it), not for
the PLC link's capacity: at 10 Hz its 2,000 registers are 320 requests/s from the two nodes into
one simulator process, which a busy 2-core machine cannot answer in time, and the pollers then
skip slots (counted as overruns) that the delivery audit would report as lost."""


def load_group(tags: int) -> list[dict[str, Any]]:
    if tags <= 0:
        return []
    return [
        {
            "name": "load",
            "interval": LOAD_GROUP_INTERVAL,
            "tags": [{"name": f"r{i}", "address": 100 + i} for i in range(tags)],
        }
    ]


class TandemNode:
    """One `tandem run` process; every start appends to the same log file.

    It carries an operator token for its own data dir, made before the node first starts,
    and, for a TLS pair, the CA its API is verified with.
    """

    def __init__(
        self,
        place: Place,
        plan: NodePlan,
        config: Path,
        log_path: Path,
        ca_file: Path | None = None,
    ) -> None:
        self.place = place
        self.plan = plan
        self.name = plan.name
        self.config = config
        self.log = log_path
        scheme = "https" if ca_file is not None else "http"
        self.url = f"{scheme}://{plan.address}:{plan.api_port}"
        self.verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self.token = create_token(load_config(config).data_dir, Role.OPERATOR)
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.process: subprocess.Popen[Any] | None = None
        self.starts = 0

    def request(self, method: str, path: str, timeout: float = 1.0, **kw: Any) -> httpx.Response:
        """An API request to this node with its operator token."""
        return self.place.request(
            method, f"{self.url}{path}", timeout, verify=self.verify, headers=self.headers, **kw
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> float:
        assert not self.running, f"{self.name} already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            self.process = self.place.popen(
                [str(TANDEM), "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return time.time()

    def freeze(self, frozen: bool) -> float:
        """SIGSTOP (or SIGCONT) of the whole process group; returns the wall time."""
        assert self.process is not None
        when = time.time()
        _killpg(self.process, signal.SIGSTOP if frozen else signal.SIGCONT)
        return when

    def kill(self) -> float:
        """kill -9 of the whole process group; returns the wall time of the signal."""
        assert self.process is not None
        when = time.time()
        _killpg(self.process, signal.SIGKILL)
        self.process.wait(10)
        return when

    def terminate(self, wait: float = 15.0) -> float:
        """SIGTERM (a planned stop: the node hands over first); returns the signal's time."""
        assert self.process is not None
        when = time.time()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            _killpg(self.process, signal.SIGKILL)
            self.process.wait(10)
            raise ClusterTimeout(
                f"{self.name} ignored SIGTERM for {wait} s\n{self.tail()}"
            ) from None
        return when

    def stop(self) -> None:
        if self.process is not None:
            self.place.stop(self.process)

    def status(self) -> dict[str, Any] | None:
        """GET /api/v1/status, or None while the node is down or not answering."""
        if not self.running:
            return None
        try:
            response = self.request("GET", "/api/v1/status", timeout=1.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def role(self) -> str | None:
        """The role from status; "MASTER" only once it publishes (not while taking over)."""
        s = self.status()
        if s is None:
            return None
        role = str(s.get("role"))
        if role == "MASTER" and not s.get("publishing"):
            return f"MASTER ({s.get('phase')})"
        return role

    def switchover(self) -> httpx.Response:
        return self.request("POST", "/api/v1/switchover", timeout=15.0)

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} log tail ({self.log})\n{tail(self.log, lines)}"


# ---- the cluster ----------------------------------------------------------------------------


@dataclass
class HaCluster:
    """Two nodes, a broker, a PLC and the audit; A is the preferred master (priority 100)."""

    workdir: Path
    a: TandemNode
    b: TandemNode
    broker: ServiceBroker
    plc: PlcSimulator
    audit: AuditProcess
    places: list[Place] = field(default_factory=list)

    @property
    def nodes(self) -> tuple[TandemNode, TandemNode]:
        return self.a, self.b

    def node(self, name: str) -> TandemNode:
        return self.a if name == self.a.name else self.b

    def other(self, node: TandemNode) -> TandemNode:
        return self.b if node is self.a else self.a

    def logs(self) -> str:
        return "\n".join(n.tail() for n in self.nodes)

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        return wait_until(cond, timeout, what, self.logs)

    def start(self, timeout: float = 30.0) -> None:
        """Services first, then A alone until it publishes, then B as the standby."""
        self.broker.start()
        self.plc.start()
        self.audit.start()
        self.a.start()
        self.wait_role(self.a, "MASTER", timeout)
        self.b.start()
        self.wait_steady(self.a, timeout)

    def wait_role(self, node: TandemNode, role: str, timeout: float = 15.0) -> float:
        return self.wait(lambda: node.role() == role, timeout, f"{node.name} {role}")

    def steady(self, master: TandemNode) -> bool:
        """Master publishing, standby BACKUP, each seeing the other over the peer link."""
        backup = self.other(master)
        m, b = master.status(), backup.status()
        if m is None or b is None:
            return False
        return (
            m["role"] == "MASTER"
            and b["role"] == "BACKUP"
            and (m.get("ha") or {}).get("peer_state") == "BACKUP"
            and (b.get("ha") or {}).get("peer_state") == "MASTER"
            and self.publishing_now(master.name)
        )

    def wait_steady(self, master: TandemNode, timeout: float = 20.0) -> float:
        return self.wait(
            lambda: self.steady(master), timeout, f"steady state, {master.name} master"
        )

    def wait_switchover_ready(self, master: TandemNode, timeout: float = 15.0) -> float:
        """Until the master says a switchover would go ahead (the standby's buffer covers
        every stream: a standby that just started has not polled every group yet)."""

        def ready() -> bool:
            status = master.status()
            return status is not None and (status.get("ha") or {}).get("switchover") == "ready"

        return self.wait(ready, timeout, f"{master.name} ready to switch over")

    def publishing_now(self, node: str, within: float = 0.5) -> bool:
        last = self.audit.last_arrival()
        return (
            last is not None
            and last.delivered.source_node == node
            and (time.time() - last.at < within)
        )

    def masters(self) -> list[str]:
        return [n.name for n in self.nodes if n.role() == "MASTER"]

    def ensure_running(self) -> None:
        """Services up and both nodes running (a scenario may have stopped any of them)."""
        self.broker.start()
        for node in self.nodes:
            if not node.running:
                node.start()

    def reset(self, timeout: float = 30.0) -> None:
        """Back to the starting shape: A publishing, B hot standby.

        A restarted A gets the role back by automatic switchback; after a manual switchover B
        keeps it (an operator's choice sticks), so it is asked to switch back explicitly.
        """
        self.ensure_running()
        # A node just started needs a while (imports, its API) before either shape shows.
        self.wait(lambda: self.steady(self.a) or self.steady(self.b), timeout, "a steady pair")
        if self.steady(self.a):
            return
        with contextlib.suppress(ClusterTimeout):
            self.wait_steady(self.a, 10)  # an automatic switchback on its way
            return
        self.wait_steady(self.b, timeout)
        self.wait_switchover_ready(self.b, timeout)
        response = self.b.switchover()
        if response.status_code != 200:
            raise ClusterTimeout(f"switch back refused: {response.text}\n{self.logs()}")
        self.wait_steady(self.a, timeout)

    def judge(self, start: float, end: float) -> Verdict:
        arrivals = self.audit.arrivals()
        return judge(arrivals, start, end, self.audit.digests, self.audit.empties)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        self.audit.stop()
        self.plc.stop()
        self.broker.stop()
        for place in self.places:
            place.close()


def with_tls(
    config: dict[str, Any], own: NodeFiles, peer: NodeFiles, *, pin: bool, ca_file: Path
) -> None:
    """HTTPS for a node's API, and how it verifies its peer: the CA, or the peer's pin."""
    config["api"]["tls"] = {"cert_file": str(own.cert_file), "key_file": str(own.key_file)}
    ha = config["ha"]
    ha["peer_url"] = ha["peer_url"].replace("http://", "https://", 1)
    ha["peer_tls"] = {"fingerprint": peer.fingerprint} if pin else {"ca_file": str(ca_file)}


def build_cluster(
    workdir: Path,
    *,
    node_places: tuple[Place, Place],
    services: Place,
    node_addresses: tuple[str, str],
    broker_address: str,
    plc_address: str,
    transport: Literal["raw", "udp"],
    interfaces: tuple[str | None, str | None] = (None, None),
    standby: Standby = "hot",
    recovery: Literal["automatic", "manual"] = "automatic",
    api_ports: tuple[int, int] | None = None,
    udp_port: int = 5112,
    vip: str | None = None,
    load_tags: int = 0,
    tls: bool = False,
    opcua: bool = False,
    write_tags: int = 0,
) -> HaCluster:
    """Write both configs and make (not start) every process of the pair.

    With `tls`, a CA and node certificates (`tandem certs init`'s code) make API and peer link
    HTTPS: node-a verifies node-b against the CA, node-b pins node-a's certificate.
    `opcua` gives each node an `opcua_server` section naming the other as its peer.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    certs = (
        init_pair(
            workdir / "certs", list(zip((NODE_A, NODE_B), node_addresses, strict=True)), CLUSTER
        )
        if tls
        else None
    )
    broker = ServiceBroker(services, broker_address, workdir / "broker")
    plc = PlcSimulator(services, plc_address, workdir, max(1000, load_tags))
    ports = api_ports or (
        node_places[0].free_port(node_addresses[0]),
        node_places[1].free_port(node_addresses[1]),
    )
    opcua_ports = (
        (node_places[0].free_port(node_addresses[0]), node_places[1].free_port(node_addresses[1]))
        if opcua
        else (None, None)
    )
    nodes = []
    for i, (name, priority) in enumerate(((NODE_A, 100), (NODE_B, 90))):
        j = 1 - i
        plan = NodePlan(
            name=name,
            address=node_addresses[i],
            api_port=ports[i],
            peer_address=node_addresses[j],
            peer_api_port=ports[j],
            priority=priority,
            transport=transport,
            interface=interfaces[i],
            udp_port=udp_port,
            vip=vip,
            opcua_port=opcua_ports[i],
        )
        config = node_config(
            plan,
            data_dir=workdir / name / "data",
            broker=(broker.host, broker.port),
            plc=(plc.host, plc.port),
            standby=standby,
            recovery=recovery,
            load_tags=load_tags,
            peer_opcua_uri=f"urn:tandem:{(NODE_A, NODE_B)[j]}" if opcua else None,
            peer_opcua_port=opcua_ports[j],
            write_tags=write_tags,
        )
        if certs is not None:
            with_tls(config, certs[i], certs[j], pin=i == 1, ca_file=workdir / "certs" / "ca.pem")
        (workdir / name).mkdir(exist_ok=True)
        path = workdir / name / "node.yaml"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)  # it holds the cluster secret
        nodes.append(
            TandemNode(
                node_places[i],
                plan,
                path,
                workdir / name / "tandem.log",
                ca_file=workdir / "certs" / "ca.pem" if certs is not None else None,
            )
        )
    audit = AuditProcess(
        services, broker.host, broker.port, workdir, f"audit-{os.getpid()}-{time.time_ns()}"
    )
    places = [p for p in (*node_places, services) if p.ns is None]
    return HaCluster(workdir, nodes[0], nodes[1], broker, plc, audit, places=places)


# Topology(3): node A = 10.77.0.1, node B = 10.77.0.2, services = 10.77.0.3; the PLC gets a
# second address so a blackhole route can take the devices from A without the broker.
SERVICES_ADDRESS = "10.77.0.3"
PLC_ADDRESS = "10.77.0.4"
VIP = "10.77.0.100/24"
API_PORT = 8085


def netns_cluster(topology: Any, workdir: Path, standby: Standby = "hot") -> HaCluster:
    """The pair on a 3-namespace Topology: raw VRRP v3 on each node's veth, VIP, API :8085."""
    services_node = topology[2]
    services_node.ns.run(["ip", "addr", "add", f"{PLC_ADDRESS}/24", "dev", services_node.ifname])
    return build_cluster(
        workdir,
        node_places=(Place(topology[0].ns), Place(topology[1].ns)),
        services=Place(services_node.ns),
        node_addresses=(str(topology[0].address.ip), str(topology[1].address.ip)),
        broker_address=SERVICES_ADDRESS,
        plc_address=PLC_ADDRESS,
        transport="raw",
        interfaces=(topology[0].ifname, topology[1].ifname),
        standby=standby,
        api_ports=(API_PORT, API_PORT),
        vip=VIP,
    )


LOOPBACK_A, LOOPBACK_B, LOOPBACK_SERVICES = "127.0.0.2", "127.0.0.3", "127.0.0.1"


def free_udp_port_on_both(a: str = LOOPBACK_A, b: str = LOOPBACK_B) -> int:
    """A UDP port free on both addresses: the UDP transport binds the same port on each."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((a, 0))
            port = int(first.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind((b, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no UDP port free on both loopback addresses")


def loopback_cluster(
    workdir: Path,
    standby: Standby = "hot",
    load_tags: int = 0,
    *,
    tls: bool = False,
    opcua: bool = False,
    write_tags: int = 0,
) -> HaCluster:
    """The pair without root: VRRP over UDP between 127.0.0.2 and 127.0.0.3 (examples/ha)."""
    root = Place(None)
    return build_cluster(
        workdir,
        node_places=(root, Place(None, "root-b")),
        services=Place(None, "root-services"),
        node_addresses=(LOOPBACK_A, LOOPBACK_B),
        broker_address=LOOPBACK_SERVICES,
        plc_address=LOOPBACK_SERVICES,
        transport="udp",
        standby=standby,
        udp_port=free_udp_port_on_both(),
        load_tags=load_tags,
        tls=tls,
        opcua=opcua,
        write_tags=write_tags,
    )


def cut_peer_link(cluster: HaCluster) -> None:
    """Cut only A<->B (VRRP adverts and the peer link); both keep the broker and the PLC.

    A blackhole route alone is not enough: the raw VRRP socket is bound to its device
    (SO_BINDTODEVICE), and a device-bound send skips routes without that device, so adverts
    would still leave. Strict reverse-path filtering drops them on arrival instead: the route
    back to the sender is the blackhole.
    """
    for node in cluster.nodes:
        peer = cluster.other(node)
        blackhole(node.place, peer.plan.address)
        node.place.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1"])


def heal_peer_link(cluster: HaCluster) -> None:
    for node in cluster.nodes:
        unblackhole(node.place, cluster.other(node).plan.address)
        with contextlib.suppress(RuntimeError):
            node.place.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0"])


def blackhole(place: Place, address: str) -> None:
    place.run(["ip", "route", "add", "blackhole", f"{address}/32"])


def unblackhole(place: Place, address: str) -> None:
    with contextlib.suppress(RuntimeError):
        place.run(["ip", "route", "del", "blackhole", f"{address}/32"])


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "audit":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_audit_main(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]))
    else:
        sys.exit("usage: python -m tests.netns.ha_cluster audit HOST PORT OUT_FILE CLIENT_ID")
