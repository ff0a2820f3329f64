"""The warden: an HA node's VRRP engine and HA core, in a process of their own.

keepalived runs its VRRP state machine in a child process of its own so that nothing else can
delay an advert; the warden does the same for Tandem. It holds the coordinator (VRRP + the
persisted term) and the pure HA core, and runs the hub (pollers, outbox, publisher, API,
dashboard, peer link) as a child process it supervises, talking to it over a typed local
channel. The hub cannot starve VRRP: its load, its garbage collections and its event loop are
in another process, and the warden runs at a real-time scheduling priority where the system
allows it. The hub cannot outlive the warden's authority either: it publishes only while the
lease the warden renews is current, and it dies with the warden.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from tandem.config.hub import HaConfig, TandemConfig
from tandem.ha.channel import Channel
from tandem.ha.coordinator import Coordinator, VrrpPair
from tandem.ha.core import HaCore
from tandem.ha.health import HealthPolicy
from tandem.ha.messages import CODEC, FACTS, HUB_ACTIONS, HubStart, HubStop
from tandem.ha.records import CoreConfig
from tandem.ha.term import TermStore
from tandem.ha.types import (
    Action,
    Fact,
    HandoverOffer,
    HubConnected,
    HubLost,
    Release,
    RequestToken,
    SendOffer,
    SetPriority,
    ShutdownAsked,
    Stopped,
    Tick,
)
from tandem.hooks import NotifyConfig
from tandem.logs import current_settings
from tandem.net.instance import open_instance
from tandem.net.raw import interface_address
from tandem.signals import stop_on_signals
from tandem.vrrp.types import InstanceConfig, State

log = logging.getLogger(__name__)

RT_PRIORITY = 1
# A real-time process that spins would starve the machine: the kernel stops it after this much
# CPU without blocking (it then dies, the hub with it, and the peer takes over).
RT_CPU_LIMIT_US = 500_000
HUB_RESTART_MIN_S = 0.5
HUB_RESTART_MAX_S = 10.0
HUB_STOP_S = 10.0
SHUTDOWN_HANDOVER_S = 3.0


def instance_config(ha: HaConfig, local: IPv4Address) -> InstanceConfig:
    """The VRRP instance of a native pair: both nodes nopreempt, so only handovers move roles."""
    v = ha.vrrp
    return InstanceConfig(
        name=ha.cluster,
        vrid=v.vrid,
        priority=ha.priority,
        advert_interval=v.advert_interval,
        local_address=local,
        version=v.version,
        initial_state=State.BACKUP,
        preempt=False,
        vips=tuple(v.vips),
        auth_pass=v.auth_pass.encode()[:8] if v.auth_pass and v.version == 2 else None,
        skip_check_adv_addr=True,
        unicast_peers=tuple(v.unicast_peers),
    )


def core_config(cfg: TandemConfig, term: int, started_at: float) -> CoreConfig:
    ha = cfg.ha
    assert ha is not None
    advert, tick = ha.vrrp.advert_interval, ha.health.interval
    return CoreConfig(
        node=cfg.node,
        base_priority=ha.priority,
        standby=ha.standby,
        recovery=ha.recovery,
        health=HealthPolicy(
            base_priority=ha.priority,
            broker_weight=ha.health.broker_weight,
            devices_weight=ha.health.devices_weight,
            fail_after=ha.health.fail_after,
        ),
        quiet_window=3 * advert,
        peer_timeout=ha.peer_fresh_s,
        lease=max(3 * tick, 2 * advert),
        hub_deadline=ha.health.deadline,
        started_at=started_at,
        term=term,
    )


def raise_priority() -> str:
    """Real-time round-robin for this process (not its children), where the system allows it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_RTTIME)
        limit = RT_CPU_LIMIT_US if hard == resource.RLIM_INFINITY else min(hard, RT_CPU_LIMIT_US)
        resource.setrlimit(resource.RLIMIT_RTTIME, (limit, hard))
        policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, policy, os.sched_param(RT_PRIORITY))
    except (OSError, ValueError) as exc:
        return f"normal priority ({exc.strerror if isinstance(exc, OSError) else exc})"
    return f"SCHED_RR priority {RT_PRIORITY}"


class HubProcess:
    """The hub as a child process: started, watched, restarted; its channel carries facts."""

    def __init__(self, start: HubStart, on_fact: Callable[[Fact], None]) -> None:
        """`on_fact` gets every fact the hub reports, and HubLost when it ends."""
        self._start = start
        self._on_fact = on_fact
        self.channel: Channel | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.stopping = False

    def send(self, message: object) -> None:
        if self.channel is not None:
            self.channel.send(message)

    async def run(self) -> None:
        """Keep a hub running until `stop()`; each exit is a HubLost fact, then a restart."""
        backoff = HUB_RESTART_MIN_S
        while not self.stopping:
            started = time.monotonic()
            await self._run_once()
            if self.stopping:
                return
            self._on_fact(HubLost())
            if time.monotonic() - started > 30:
                backoff = HUB_RESTART_MIN_S
            log.warning("hub process ended; restarting in %.1f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, HUB_RESTART_MAX_S)

    async def _run_once(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fmt, verbose = current_settings()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tandem.ha.hubproc",
                str(theirs.fileno()),
                str(os.getpid()),
                fmt,
                "1" if verbose else "0",
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.starts += 1
        channel = await Channel.open(ours, CODEC)
        self.channel = channel
        channel.send(self._start)
        self._on_fact(HubConnected())
        try:
            await channel.pump(self._from_hub)
        finally:
            self.channel = None
            channel.close()
            await self._reap()

    def _from_hub(self, message: object) -> None:
        if isinstance(message, FACTS):
            self._on_fact(message)
        else:
            log.warning("hub process sent %s, which is not a fact; ignored", type(message).__name__)

    async def _reap(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), HUB_STOP_S)
        except TimeoutError:
            log.error("hub process did not stop; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if process.returncode not in (0, None):
            log.warning("hub process exited with %s", process.returncode)

    async def stop(self) -> None:
        """Ask the hub to stop in order and wait for it."""
        self.stopping = True
        self.send(HubStop())
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.channel.drain()
        process = self.process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), HUB_STOP_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()


class Warden:
    """One node: the coordinator and the core here, the hub in its child process."""

    def __init__(self, cfg: TandemConfig, config_path: Path | None) -> None:
        assert cfg.ha is not None
        self.cfg, self.ha = cfg, cfg.ha
        self.terms = TermStore(cfg.data_dir / "term.json")
        started_at = time.time()
        self.core = HaCore(core_config(cfg, self.terms.term, started_at))
        self.hub = HubProcess(
            HubStart(
                cfg.model_dump_json(),
                str(config_path) if config_path is not None else None,
                started_at,
            ),
            self.fact,
        )
        self.coordinator: Coordinator | None = None
        self._queue: deque[Fact] = deque()
        self._busy = False
        self.stopped = asyncio.Event()

    # ---- facts in, actions out ----

    def fact(self, fact: Fact) -> None:
        """Every fact, from any source, in arrival order; actions run before the next fact."""
        self._queue.append(fact)
        if self._busy or self.coordinator is None:
            # An action produced it: handled right after the current one's actions. Or the hub
            # started before VRRP was open: its first facts wait for the coordinator.
            return
        self._busy = True
        try:
            while self._queue:
                actions = self.core.handle(self._queue.popleft(), time.monotonic())
                for action in actions:
                    self._execute(action)
        finally:
            self._busy = False

    def _execute(self, action: Action) -> None:
        c = self.coordinator
        assert c is not None
        if isinstance(action, HUB_ACTIONS):
            self.hub.send(action)
        elif isinstance(action, RequestToken):
            c.request_token(action.at_least)
        elif isinstance(action, SendOffer):
            c.send_offer(action.offer, action.handover)
        elif isinstance(action, Release):
            c.release(action.detail)
        elif isinstance(action, SetPriority):
            c.set_priority(action.fault, action.delta)
        elif isinstance(action, Stopped):
            self.stopped.set()

    def send_offer(self, offer_id: int, offer: HandoverOffer) -> None:
        """The pair's peer link lives in the hub process: offers travel through it."""
        self.hub.send(SendOffer(offer_id, offer))

    async def _ticker(self) -> None:
        interval = self.ha.health.interval
        assert self.coordinator is not None
        while True:
            self.fact(self.coordinator.info())
            self.fact(Tick())
            self.hub.send(self.core.snapshot(time.monotonic()))
            await asyncio.sleep(interval)

    # ---- running ----

    async def run(self, stop: asyncio.Event) -> int:
        # The hub process starts first: its imports and set-up (seconds on a small box) overlap
        # the warden's own; its facts wait until the coordinator is there.
        hub = asyncio.create_task(self.hub.run(), name="hub")
        try:
            return await self._run(stop, hub)
        finally:
            if not hub.done():
                await self.hub.stop()
                hub.cancel()
                await asyncio.wait([hub])

    async def _run(self, stop: asyncio.Event, hub: asyncio.Task[None]) -> int:
        v = self.ha.vrrp
        local = v.unicast_src_ip or interface_address(v.interface or "")
        hooks = self.ha.hooks
        async with contextlib.AsyncExitStack() as stack:
            driver = await open_instance(
                stack,
                instance_config(self.ha, local),
                transport=v.transport,
                interface=v.interface,
                udp_port=v.udp_port,
                notify=NotifyConfig(
                    instance=self.ha.cluster,
                    notify_master=hooks.notify_master,
                    notify_backup=hooks.notify_backup,
                    notify_fault=hooks.notify_fault,
                    notify_stop=hooks.notify_stop,
                    notify=hooks.notify,
                    timeout=hooks.timeout,
                ),
                manage_vips=v.transport == "raw",
            )
            pair = VrrpPair(driver, self.terms, self)
            pair.attach(self.fact)
            self.coordinator = pair
            self.fact(Tick())  # and whatever the hub reported meanwhile
            scheduling = raise_priority()
            log.info(
                "node %s: %s standby, priority %s, peer %s; VRRP at %s",
                self.cfg.node,
                self.ha.standby,
                self.ha.priority,
                self.ha.peer_url,
                scheduling,
            )
            gc.freeze()  # what start-up built is never collected: short pauses from here on
            return await self._supervise(pair, stop, hub)

    async def _supervise(self, pair: VrrpPair, stop: asyncio.Event, hub: asyncio.Task[None]) -> int:
        async with asyncio.TaskGroup() as tg:
            vrrp = tg.create_task(pair.run(), name="vrrp")
            ticker = tg.create_task(self._ticker(), name="ha-tick")
            asked = tg.create_task(stop.wait(), name="stop")
            await asyncio.wait({vrrp, asked}, return_when=asyncio.FIRST_COMPLETED)
            log.info("node %s stopping", self.cfg.node)
            # A planned stop is a handover when we are the active master: the peer resumes
            # exactly after our last ack. Then: publishing off, VRRP resigns, the hub stops.
            self.fact(ShutdownAsked())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), SHUTDOWN_HANDOVER_S)
            pair.stop()
            await asyncio.wait({vrrp}, timeout=5)
            ticker.cancel()
            await self.hub.stop()
            hub.cancel()
            asked.cancel()
        return 0


async def run_ha_node(cfg: TandemConfig, config_path: Path | None = None) -> int:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        return await Warden(cfg, config_path).run(stop)


__all__ = ["HubProcess", "Warden", "core_config", "instance_config", "run_ha_node"]
