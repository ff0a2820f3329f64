"""The running demo: simulator, broker, two nodes and an in-process subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tandem.demo.pair import (
    DEMO_USER,
    INSTALL_HINT,
    LOOPBACK,
    TOPIC,
    NodeSpec,
    StandbyMode,
    api_port_for,
    demo_devices,
    find_mosquitto,
    free_port,
    mosquitto_conf,
    node_config,
    node_specs,
    shared_udp_port,
)
from tandem.demo.process import ManagedProcess
from tandem.demo.view import AuditTotals, NodeView, Snapshot
from tandem.errors import TandemError
from tandem.files import write_atomic
from tandem.ha.audit import AuditSubscriber, DeliveryAudit
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tandem.security.users import UserStore

TANDEM = [sys.executable, "-m", "tandem"]


@dataclass
class DemoCluster:
    """Everything the demo runs: simulator, broker, two nodes, and an in-process subscriber.

    Use as an async context manager; leaving it stops every process it started and, unless
    the work dir was given, removes it.
    """

    standby: StandbyMode = "hot"
    workdir: Path | None = None
    keep_workdir: bool = False
    # What the nodes poll, given the simulator's port; the benchmark asks for thousands of tags.
    devices: Callable[[int], list[dict[str, Any]]] = field(default=demo_devices)
    load_registers: int = 1000
    # Where the simulator listens: "0.0.0.0" lets devices reach it at several loopback
    # addresses, one TCP connection each (a link is per host and port), as separate PLCs are.
    plc_host: str = "127.0.0.1"
    vrrp_port: int | None = None  # a free one when not given
    advert_listeners: tuple[str, ...] = ()  # see node_config
    specs: tuple[NodeSpec, NodeSpec] | None = None
    nodes: dict[str, ManagedProcess] = field(default_factory=dict)
    plc: ManagedProcess | None = None
    broker: ManagedProcess | None = None
    broker_port: int = 0
    plc_port: int = 0
    subscriber: AuditSubscriber | None = None
    _http: httpx.AsyncClient | None = None
    # The dashboard login and a machine token per node, made before the nodes start.
    login: tuple[str, str] = (DEMO_USER, "")
    tokens: dict[str, str] = field(default_factory=dict)
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
        await self._start_plc_and_broker(mosquitto, workdir)
        self.specs = node_specs((api_port_for("127.0.0.2"), api_port_for("127.0.0.3")))
        self._write_node_configs(workdir)

        self._stack = contextlib.AsyncExitStack()
        self.subscriber = await self._stack.enter_async_context(
            AuditSubscriber(LOOPBACK, self.broker_port, TOPIC, client_id="tandem-demo-audit")
        )
        await asyncio.wait_for(self.subscriber.connected.wait(), 10.0)
        # The preferred node first: it wins the first election, so the demo starts from the
        # pair's normal state instead of with an immediate switchback.
        a, b = self.specs
        self.nodes[a.name].start()
        await self.wait_for(lambda: self.role_of(a.name) == "MASTER", 30.0, "node-a master")
        self.nodes[b.name].start()

    async def _start_plc_and_broker(self, mosquitto: str, workdir: Path) -> None:
        self.plc = ManagedProcess(
            "plc",
            [
                *TANDEM,
                "simulate-plc",
                "--host",
                self.plc_host,
                "--port",
                "0",
                "--load-registers",
                str(self.load_registers),
            ],  # fmt: skip
            workdir,
        )
        self.plc.start()
        self.broker_port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(self.broker_port))
        self.broker = ManagedProcess("mosquitto", [mosquitto, "-c", str(conf)], workdir)
        self.broker.start()
        self.plc_port = await self._plc_port(timeout=20.0)
        await _wait_tcp(LOOPBACK, self.broker_port, self.broker, timeout=10.0)

    def _write_node_configs(self, workdir: Path) -> None:
        assert self.specs is not None
        addresses = (*(s.address for s in self.specs), *self.advert_listeners)
        vrrp_port = self.vrrp_port or shared_udp_port(addresses)
        secret = secrets.token_hex(16)
        a, b = self.specs
        for spec, peer in ((a, b), (b, a)):
            cfg = node_config(
                spec,
                peer,
                devices=self.devices(self.plc_port),
                broker_port=self.broker_port,
                vrrp_port=vrrp_port,
                standby=self.standby,
                data_dir=workdir / spec.name,
                secret=secret,
                advert_listeners=self.advert_listeners,
            )
            path = workdir / f"{spec.name}.yaml"
            write_atomic(path, yaml.safe_dump(cfg, sort_keys=False), mode=0o600)
            self._credentials(spec.name, workdir / spec.name)
            self.nodes[spec.name] = ManagedProcess(
                spec.name, [*TANDEM, "run", "-c", str(path)], workdir
            )

    def _credentials(self, name: str, data_dir: Path) -> None:
        """The demo's operator login (one password for both nodes) and a token per node."""
        if not self.login[1]:
            self.login = (DEMO_USER, secrets.token_urlsafe(9))
        UserStore(data_dir).add(self.login[0], Role.OPERATOR, self.login[1])
        self.tokens[name] = create_token(data_dir, Role.OPERATOR, "demo")
        write_atomic(self.token_file(name), self.tokens[name] + "\n", mode=0o600)

    def token_file(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{name}.token"

    def _auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

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
            response = await self._http.get(self.url(name) + path, headers=self._auth(name))
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
        response = await self._http.post(
            self.url(via) + "/api/v1/switchover", timeout=15.0, headers=self._auth(via)
        )
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
