"""`tandem demo`: a PLC simulator, a broker and a two-node pair on loopback, with a live view."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from tandem.errors import TandemError
from tandem.ha.audit import AuditSubscriber, DeliveryAudit

log = logging.getLogger(__name__)

StandbyMode = Literal["hot", "cold"]

LOOPBACK = "127.0.0.1"
SEED_API_PORT = 8085  # the port the seed configs and the docs use; taken only when free
TOPIC = "/neuron/{node}"
CLUSTER = "demo"
MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_HINT = (
    "tandem demo needs the mosquitto MQTT broker. Install it with ./scripts/setup demo "
    "(or: sudo apt-get install mosquitto) and run the demo again."
)
STOP_GRACE_S = 8.0  # a master's shutdown handover may take up to 3 s, then the hub flushes
PR_SET_PDEATHSIG = 1  # linux/prctl.h
INTERACTIVE_RESTART_S = 5.0  # how long a node killed by hand stays down in interactive mode
CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
REASON_WIDTH = 60  # the last-failover reason is long; the view must fit one screen


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One member of the demo pair: its name, loopback address and election priority."""

    name: str
    address: str
    priority: int
    api_port: int


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """How long the scenario lets things settle; --quick shortens them for CI."""

    steady_s: float
    settle_s: float
    down_s: float
    takeover_timeout_s: float

    @classmethod
    def for_mode(cls, quick: bool) -> DemoTimings:
        if quick:
            return cls(steady_s=1.5, settle_s=1.5, down_s=1.5, takeover_timeout_s=15.0)
        return cls(steady_s=5.0, settle_s=4.0, down_s=5.0, takeover_timeout_s=30.0)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One fault of the scenario as the subscriber saw it."""

    step: str
    new_master: str
    takeover_ms: float | None  # fault -> first message from the new master
    gap_ms: float | None  # last message before the fault's takeover -> first after it
    lost: int
    duplicates: int
    out_of_order: int

    @property
    def clean(self) -> bool:
        return self.takeover_ms is not None and self.lost == 0 and self.duplicates == 0


@dataclass(frozen=True, slots=True)
class AuditTotals:
    messages: int
    lost: int
    duplicates: int
    out_of_order: int
    publisher: str | None

    @classmethod
    def of(cls, audit: DeliveryAudit) -> AuditTotals:
        last = audit.arrivals[-1].delivered.source_node if audit.arrivals else None
        return cls(audit.messages, audit.lost, audit.duplicates, audit.out_of_order, last)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the live view shows of one node: its process and its last status answer."""

    name: str
    url: str
    pid: int | None
    priority: int
    status: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[NodeView, ...]
    totals: AuditTotals
    events: tuple[tuple[int, str, str], ...]  # (ts_ms, node, message), newest last
    step: str = ""


# ---- configs and ports (pure, or nearly) ----


def node_specs(api_ports: tuple[int, int]) -> tuple[NodeSpec, NodeSpec]:
    """The pair of the examples: node-a preferred (100) on 127.0.0.2, node-b (90) on .3."""
    return (
        NodeSpec("node-a", "127.0.0.2", 100, api_ports[0]),
        NodeSpec("node-b", "127.0.0.3", 90, api_ports[1]),
    )


def node_config(
    spec: NodeSpec,
    peer: NodeSpec,
    *,
    plc_port: int,
    broker_port: int,
    vrrp_port: int,
    standby: StandbyMode,
    data_dir: Path,
    secret: str,
) -> dict[str, Any]:
    """One node's config, derived from examples/ha: groups at 100 ms, v3 adverts every 0.1 s."""
    return {
        "node": spec.name,
        "data_dir": str(data_dir),
        "api": {"host": spec.address, "port": spec.api_port},
        "mqtt": {"host": LOOPBACK, "port": broker_port, "topic": TOPIC},
        "devices": [
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
        ],
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
                "advert_interval": 0.1,
                "udp_port": vrrp_port,
                "unicast_src_ip": spec.address,
                "unicast_peers": [peer.address],
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


# ---- processes ----


def _die_with_parent() -> None:
    """Runs in the child before exec: if the demo dies hard, its children get SIGTERM."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process of the demo with its log file in the work dir; restartable."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as out:
            # Own session: a Ctrl-C in the terminal reaches the demo only, and the demo stops
            # its children in an order that keeps the pair consistent.
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.running:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL if it does not leave in time; always reaps the process."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                proc.kill()
                proc.wait(5)
        else:
            proc.wait()

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


# ---- the running pair ----


@dataclass
class DemoCluster:
    """Everything the demo runs: simulator, broker, two nodes, and an in-process subscriber.

    Use as an async context manager; leaving it stops every process it started and, unless
    the work dir was given, removes it.
    """

    standby: StandbyMode = "hot"
    workdir: Path | None = None
    keep_workdir: bool = False
    specs: tuple[NodeSpec, NodeSpec] | None = None
    nodes: dict[str, ManagedProcess] = field(default_factory=dict)
    plc: ManagedProcess | None = None
    broker: ManagedProcess | None = None
    broker_port: int = 0
    plc_port: int = 0
    subscriber: AuditSubscriber | None = None
    _http: httpx.AsyncClient | None = None
    _statuses: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack | None = None

    @property
    def audit(self) -> DeliveryAudit:
        assert self.subscriber is not None
        return self.subscriber.audit

    def url(self, name: str) -> str:
        assert self.specs is not None
        spec = next(s for s in self.specs if s.name == name)
        return f"http://{spec.address}:{spec.api_port}"

    @property
    def names(self) -> tuple[str, str]:
        assert self.specs is not None
        return (self.specs[0].name, self.specs[1].name)

    def priority(self, name: str) -> int:
        assert self.specs is not None
        return next(s.priority for s in self.specs if s.name == name)

    async def __aenter__(self) -> DemoCluster:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise TandemError(INSTALL_HINT)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
        else:
            self.keep_workdir = True
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = self.workdir.resolve()
        try:
            await self._start(mosquitto)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self, mosquitto: str) -> None:
        workdir = self.workdir
        assert workdir is not None
        self._http = httpx.AsyncClient(timeout=2.0)
        python = [sys.executable, "-m", "tandem"]

        self.plc = ManagedProcess("plc", [*python, "simulate-plc", "--port", "0"], workdir)
        self.plc.start()
        self.broker_port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(self.broker_port))
        self.broker = ManagedProcess("mosquitto", [mosquitto, "-c", str(conf)], workdir)
        self.broker.start()
        self.plc_port = await self._plc_port(timeout=20.0)
        await _wait_tcp(LOOPBACK, self.broker_port, self.broker, timeout=10.0)

        self.specs = node_specs((api_port_for("127.0.0.2"), api_port_for("127.0.0.3")))
        vrrp_port = shared_udp_port(tuple(s.address for s in self.specs))
        secret = secrets.token_hex(16)
        a, b = self.specs
        for spec, peer in ((a, b), (b, a)):
            cfg = node_config(
                spec,
                peer,
                plc_port=self.plc_port,
                broker_port=self.broker_port,
                vrrp_port=vrrp_port,
                standby=self.standby,
                data_dir=workdir / spec.name,
                secret=secret,
            )
            path = workdir / f"{spec.name}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            self.nodes[spec.name] = ManagedProcess(
                spec.name, [*python, "run", "-c", str(path)], workdir
            )

        self._stack = contextlib.AsyncExitStack()
        self.subscriber = await self._stack.enter_async_context(
            AuditSubscriber(LOOPBACK, self.broker_port, TOPIC, client_id="tandem-demo-audit")
        )
        await asyncio.wait_for(self.subscriber.connected.wait(), 10.0)
        # The preferred node first: it wins the first election, so the demo starts from the
        # pair's normal state instead of with an immediate switchback.
        self.nodes[a.name].start()
        await self.wait_for(lambda: self.role_of(a.name) == "MASTER", 30.0, "node-a master")
        self.nodes[b.name].start()

    async def _plc_port(self, timeout: float) -> int:
        assert self.plc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on [\d.]+:(\d+)", self.plc.log_tail())
            if match:
                return int(match.group(1))
            if not self.plc.running:
                raise TandemError(f"the PLC simulator exited: {self.plc.log_tail()}")
            await asyncio.sleep(0.05)
        raise TandemError("the PLC simulator did not start in time")

    async def close(self) -> None:
        """Stop everything in reverse order of dependency, then remove the temp work dir.

        Processes are stopped with blocking calls on purpose: a second Ctrl-C during cleanup
        must not leave a half-stopped pair behind.
        """
        # The backup first: a master stopped last finds no peer to hand over to and exits
        # at once, instead of handing the role to a node that is about to go too.
        order = sorted(self.nodes.values(), key=lambda p: self.role_of(p.name) == "MASTER")
        for proc in (*order, self.plc, self.broker):
            if proc is not None:
                proc.stop()
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        stack, self._stack = self._stack, None
        http, self._http = self._http, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()
        if http is not None:
            await http.aclose()

    # ---- reading the nodes ----

    async def refresh(self) -> dict[str, dict[str, Any] | None]:
        """Ask both nodes for their status at once; None for a node that does not answer."""
        names = list(self.nodes)
        bodies = await asyncio.gather(*(self._get(n, "/api/v1/status") for n in names))
        self._statuses = {
            n: b if isinstance(b, dict) else None for n, b in zip(names, bodies, strict=True)
        }
        return dict(self._statuses)

    async def _get(self, name: str, path: str) -> Any:
        if self._http is None or not self.nodes[name].running:
            return None
        try:
            response = await self._http.get(self.url(name) + path)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError):
            return None

    def role_of(self, name: str) -> str | None:
        body = self._statuses.get(name)
        return str(body.get("role")) if body else None

    def master(self) -> str | None:
        masters = [n for n in self.nodes if self.role_of(n) == "MASTER"]
        return masters[0] if len(masters) == 1 else None

    async def timeline(self, limit: int = 6) -> list[tuple[int, str, str]]:
        """The newest events of both nodes' timelines merged, oldest first."""
        names = list(self.nodes)
        answers = await asyncio.gather(
            *(self._get(n, f"/api/v1/timeline?limit={limit}") for n in names)
        )
        events = [
            (int(e.get("ts_ms", 0)), name, str(e.get("message", "")))
            for name, answer in zip(names, answers, strict=True)
            if isinstance(answer, list)
            for e in answer
        ]
        return sorted(events)[-limit:]

    async def snapshot(self, step: str = "") -> Snapshot:
        await self.refresh()
        views = tuple(
            NodeView(n, self.url(n), p.pid, self.priority(n), self._statuses.get(n))
            for n, p in self.nodes.items()
        )
        return Snapshot(views, AuditTotals.of(self.audit), tuple(await self.timeline()), step)

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.1
    ) -> None:
        """Refresh the nodes' status until `condition` holds; TandemError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            await self.refresh()
            if condition():
                return
            if time.monotonic() >= deadline:
                raise TandemError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(poll_s)

    def steady(self) -> bool:
        """One master, one backup that sees it, and the master's data reaching the subscriber."""
        master = self.master()
        if master is None:
            return False
        others = [n for n in self.nodes if n != master]
        if not all(self.role_of(n) == "BACKUP" for n in others):
            return False
        for n in self.nodes:
            ha = (self._statuses.get(n) or {}).get("ha") or {}
            if ha.get("peer_state") in (None, "unreachable"):
                return False
        recent = self.audit.first_after(time.time() - 0.5, master)
        return recent is not None

    async def switchover(self, via: str) -> dict[str, Any]:
        assert self._http is not None
        response = await self._http.post(self.url(via) + "/api/v1/switchover", timeout=15.0)
        if response.status_code != 200:
            raise TandemError(f"switchover refused ({response.status_code}): {response.text}")
        body = response.json()
        return body if isinstance(body, dict) else {}


async def _wait_tcp(host: str, port: int, proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise TandemError(f"{proc.name} exited: {proc.log_tail()}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise TandemError(f"{proc.name} did not listen on {host}:{port} within {timeout:.0f} s")


# ---- the failover scenario ----


def measure_step(
    audit: DeliveryAudit,
    step: str,
    new_master: str,
    fault_at: float,
    before: AuditTotals,
) -> StepResult:
    """Judge one step from the subscriber's arrivals: takeover time, gap, and what went wrong."""
    first = audit.first_after(fault_at, new_master)
    takeover_ms = gap_ms = None
    if first is not None:
        takeover_ms = (first.at - fault_at) * 1000
        previous = [
            a.at
            for a in audit.arrivals
            if a.at < first.at and a.delivered.source_node != new_master
        ]
        if previous:
            gap_ms = (first.at - previous[-1]) * 1000
    now = AuditTotals.of(audit)
    return StepResult(
        step=step,
        new_master=new_master,
        takeover_ms=takeover_ms,
        gap_ms=gap_ms,
        lost=now.lost - before.lost,
        duplicates=now.duplicates - before.duplicates,
        out_of_order=now.out_of_order - before.out_of_order,
    )


async def run_failover_scenario(
    cluster: DemoCluster, timings: DemoTimings, progress: Callable[[str], None] | None = None
) -> list[StepResult]:
    """kill -9, restart (switchback), manual switchover, SIGTERM + restart: one result each."""
    say = progress or (lambda _msg: None)
    a, b = cluster.names
    results: list[StepResult] = []

    say("waiting for a steady pair")
    await cluster.wait_for(cluster.steady, timings.takeover_timeout_s * 2, "a steady pair")
    await asyncio.sleep(timings.steady_s)

    async def step(
        name: str,
        new_master: str,
        fault: Callable[[], Awaitable[None] | None],
        *,
        from_steady: bool = True,
    ) -> None:
        say(name)
        if from_steady:
            await cluster.wait_for(cluster.steady, timings.takeover_timeout_s, "a steady pair")
        before = AuditTotals.of(cluster.audit)
        fault_at = time.time()
        outcome = fault()
        if outcome is not None:
            await outcome
        try:
            await cluster.wait_for(
                lambda: (
                    cluster.audit.first_after(fault_at, new_master) is not None
                    and cluster.role_of(new_master) == "MASTER"
                ),
                timings.takeover_timeout_s,
                f"{new_master} to take over",
            )
        except TandemError as exc:
            say(str(exc))
        await asyncio.sleep(timings.settle_s)
        result = measure_step(cluster.audit, name, new_master, fault_at, before)
        results.append(result)
        say(_describe(result))

    await step(f"kill -9 {a} (master)", b, lambda: cluster.nodes[a].signal(signal.SIGKILL))
    await asyncio.sleep(timings.down_s)
    await step(f"restart {a} (automatic switchback)", a, cluster.nodes[a].start, from_steady=False)
    await step(f"switchover {a} -> {b} (POST)", b, lambda: _ignore_result(cluster.switchover(a)))
    await step(f"SIGTERM {b} (master)", a, lambda: cluster.nodes[b].signal(signal.SIGTERM))
    # The stopped node comes back as backup: the pair ends as it began.
    await asyncio.to_thread(cluster.nodes[b].stop)
    cluster.nodes[b].start()
    say(f"restarted {b}; waiting for it to rejoin as backup")
    with contextlib.suppress(TandemError):
        await cluster.wait_for(cluster.steady, timings.takeover_timeout_s, "a steady pair")
    return results


async def _ignore_result(aw: Awaitable[Any]) -> None:
    await aw


def _describe(r: StepResult) -> str:
    took = "no takeover seen" if r.takeover_ms is None else f"takeover {r.takeover_ms:.0f} ms"
    return f"{r.step}: {took}, lost {r.lost}, duplicates {r.duplicates}"


# ---- rendering (pure) ----

ROLE_STYLES = {"MASTER": "bold green", "BACKUP": "bold blue", "FAULT": "bold red"}


def role_style(role: str) -> str:
    return next((s for r, s in ROLE_STYLES.items() if role.startswith(r)), "yellow")


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def render_summary(snap: Snapshot) -> Any:
    """The one-screen live view: both nodes side by side, the subscriber, the last events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    nodes = Table(title="Tandem pair", expand=False)
    nodes.add_column("")
    for view in snap.nodes:
        nodes.add_column(f"{view.name}\n{view.url}")
    rows: dict[str, list[Any]] = {k: [] for k in (
        "role", "pid", "term", "priority", "published", "outbox depth", "watermark lag",
        "last failover",
    )}  # fmt: skip
    for view in snap.nodes:
        body = view.status or {}
        role = "stopped" if view.pid is None else str(body.get("role") or "starting")
        rows["role"].append(Text(role, style=role_style(role) if body else "dim"))
        rows["pid"].append(_fmt(view.pid))
        rows["term"].append(_fmt(body.get("term")))
        vrrp = body.get("vrrp") or {}
        rows["priority"].append(f"{_fmt(vrrp.get('priority'))} (base {view.priority})")
        rows["published"].append(_fmt((body.get("publisher") or {}).get("published_total")))
        rows["outbox depth"].append(_fmt((body.get("outbox") or {}).get("depth")))
        ha = body.get("ha") or {}
        rows["watermark lag"].append(_fmt(ha.get("watermark_lag")))
        reason = _fmt((ha.get("last_failover") or {}).get("reason"))
        rows["last failover"].append(Text(reason[:REASON_WIDTH], overflow="fold"))
    for name, cells in rows.items():
        nodes.add_row(name, *cells)

    t = snap.totals
    audit = Table(title="Subscriber (what a consumer got)", expand=False)
    for column in ("messages", "lost", "duplicates", "out-of-order", "publisher"):
        audit.add_column(column, justify="right")

    def bad(n: int) -> Text:
        return Text(str(n), style="bold red" if n else "green")

    audit.add_row(
        str(t.messages), bad(t.lost), bad(t.duplicates), bad(t.out_of_order), _fmt(t.publisher)
    )
    events = Table(title="Timeline (newest last)", expand=False, show_header=False)
    events.add_column("time")
    events.add_column("node")
    events.add_column("event", overflow="fold")
    for ts_ms, node, message in snap.events:
        clock = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))
        events.add_row(f"{clock}.{ts_ms % 1000:03d}", node, message[:110])
    parts: list[Any] = [nodes, audit, events]
    if snap.step:
        parts.append(Text(snap.step, style="bold"))
    return Group(*parts)


def results_table(results: list[StepResult], standby: str) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Failover results ({standby} standby)", box=box.ASCII)
    for column in ("step", "new master", "takeover ms", "gap ms", "lost", "duplicates", "ooo"):
        table.add_column(column, justify="left" if column in ("step", "new master") else "right")
    for r in results:
        table.add_row(
            r.step,
            r.new_master,
            "-" if r.takeover_ms is None else f"{r.takeover_ms:.0f}",
            "-" if r.gap_ms is None else f"{r.gap_ms:.0f}",
            str(r.lost),
            str(r.duplicates),
            str(r.out_of_order),
        )
    return table


def scenario_exit_code(results: list[StepResult], standby: str, expected_steps: int = 4) -> int:
    """Hot standby must show no loss and no duplicate anywhere; cold only has to take over."""
    if len(results) < expected_steps or any(r.takeover_ms is None for r in results):
        return 1
    if standby == "hot" and not all(r.clean for r in results):
        return 1
    return 0


# ---- the command ----


@dataclass(frozen=True, slots=True)
class DemoOptions:
    scenario: str | None = None
    quick: bool = False
    standby: StandbyMode = "hot"
    workdir: Path | None = None
    no_color: bool = False


def anomaly_report(audit: DeliveryAudit) -> list[str]:
    """Which slots were missing or repeated, and who sent the repeats: the first thing to read."""
    lines: list[str] = []
    for key, stream in audit.streams.items():
        if stream.lost:
            lines.append(f"{key}: missing slots {stream.missing()[:20]}")
        for slot in stream.duplicate_slots[:20]:
            senders = [
                (a.delivered.source_node, a.delivered.term, round(a.at, 3))
                for a in audit.arrivals
                if a.delivered.slot == slot and f"{a.delivered.device}/{a.delivered.group}" == key
            ]
            lines.append(f"{key}: slot {slot} delivered {len(senders)} times: {senders}")
    return lines


def run_demo(options: DemoOptions) -> int:
    """Blocking entry for `tandem demo`: 0 on success, 1 on a failed scenario or start."""
    from rich.console import Console

    console = Console(no_color=options.no_color, highlight=False, width=None)
    if not console.is_terminal:
        console.width = 120  # a pipe would otherwise wrap the results table at 80 columns
    try:
        return asyncio.run(_main(options, console))
    except KeyboardInterrupt:
        console.print("stopped")
        return 130


async def _main(options: DemoOptions, console: Any) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (a test's timeout) and SIGHUP (the terminal closed) are treated like Ctrl-C:
    # clean up, then exit.
    for sig in CLEANUP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    try:
        async with DemoCluster(standby=options.standby, workdir=options.workdir) as cluster:
            console.print(f"work dir: {cluster.workdir}")
            plc_pid = cluster.plc.pid if cluster.plc else None
            broker_pid = cluster.broker.pid if cluster.broker else None
            console.print(f"PLC simulator: {LOOPBACK}:{cluster.plc_port} (pid {plc_pid})")
            console.print(f"MQTT broker:   {LOOPBACK}:{cluster.broker_port} (pid {broker_pid})")
            for name in cluster.names:
                console.print(f"dashboard {name}: {cluster.url(name)}/")
            if options.scenario is None:
                await _interactive(cluster, console)
                return 0
            if options.scenario != "failover":
                console.print(f"unknown scenario {options.scenario!r} (known: failover)")
                return 2
            return await _scenario(cluster, console, options)
    except TandemError as exc:
        console.print(f"tandem demo: {exc}")
        return 1
    except asyncio.CancelledError:
        console.print("stopped; everything the demo started is gone")
        return 130
    finally:
        for sig in CLEANUP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _interactive(cluster: DemoCluster, console: Any) -> None:
    from rich.live import Live

    hint = (
        "Ctrl-C stops everything. Try: kill -9 <master pid>, or "
        f"tandem switchover --url {cluster.url(cluster.names[0])}"
    )
    down_since: dict[str, float] = {}
    note = ""
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        while True:
            # A node that died (killed by hand) comes back after a while, so the switchback
            # can be watched too, as in the unattended scenario.
            now = time.monotonic()
            for name, proc in cluster.nodes.items():
                if proc.running:
                    down_since.pop(name, None)
                elif now - down_since.setdefault(name, now) >= INTERACTIVE_RESTART_S:
                    proc.start()
                    down_since.pop(name, None)
                    note = f"{time.strftime('%H:%M:%S')} the demo restarted {name}"
            snap = await cluster.snapshot(f"{hint}\n{note}" if note else hint)
            live.update(render_summary(snap))
            # A demo may run for hours: keep the arrivals the view needs, not all of them.
            if len(cluster.audit.arrivals) > 5000:
                del cluster.audit.arrivals[:-1000]
            await asyncio.sleep(0.25)


async def _scenario(cluster: DemoCluster, console: Any, options: DemoOptions) -> int:
    timings = DemoTimings.for_mode(options.quick)
    started = time.monotonic()
    if console.is_terminal:
        from rich.live import Live

        state = {"step": "starting"}
        live = Live(console=console, refresh_per_second=4)

        async def refresh_view() -> None:
            while True:
                live.update(render_summary(await cluster.snapshot(state["step"])))
                await asyncio.sleep(0.25)

        def progress(message: str) -> None:
            state["step"] = message
            live.console.log(message)

        with live:
            viewer = asyncio.create_task(refresh_view(), name="demo-view")
            try:
                results = await run_failover_scenario(cluster, timings, progress)
            finally:
                viewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await viewer
    else:

        def progress(message: str) -> None:
            console.print(f"[{time.monotonic() - started:5.1f} s] {message}")

        results = await run_failover_scenario(cluster, timings, progress)
    console.print(results_table(results, options.standby))
    totals = AuditTotals.of(cluster.audit)
    console.print(
        f"subscriber totals: {totals.messages} messages, {totals.lost} lost, "
        f"{totals.duplicates} duplicates, {totals.out_of_order} out of order"
    )
    for line in anomaly_report(cluster.audit):
        console.print(line)
    code = scenario_exit_code(results, options.standby)
    if options.standby == "cold":
        gaps = [r.lost for r in results]
        console.print(f"cold standby: the backup polls only once master; gaps {gaps} samples")
    console.print("RESULT: " + ("PASS" if code == 0 else "FAIL"))
    return code


__all__ = [
    "DemoCluster",
    "DemoOptions",
    "DemoTimings",
    "NodeSpec",
    "StepResult",
    "find_mosquitto",
    "measure_step",
    "node_config",
    "node_specs",
    "render_summary",
    "results_table",
    "run_demo",
    "run_failover_scenario",
    "scenario_exit_code",
]
