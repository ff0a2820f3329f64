"""An HA node: the VRRP engine and the hub in one process, the controller deciding between them.

Composition root of `tandem run` with an `ha` section. Facts flow in (VRRP transitions, peer
states, broker observations, publisher acks, hub health), the controller plans, and this
module applies the plan: term persisted, outbox trimmed, polling and publishing gated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tandem.api.view import HaInfo
from tandem.config.hub import HaConfig, TandemConfig
from tandem.errors import TandemError
from tandem.ha.configsync import ConfigSync, stamp_label
from tandem.ha.controller import HaController, Plan, stream_key
from tandem.ha.observer import BrokerObserver, Delivered, heartbeat_topic, restamp, state_topic
from tandem.ha.peer import HandoverAnswer, HandoverRequest, PeerClient, PeerState, peer_router
from tandem.ha.term import TermStore
from tandem.hooks import NotifyConfig
from tandem.hub.model import Sample
from tandem.hub.mqtt import MqttPublisher, MqttSettings
from tandem.hub.outbox import Outbox, OutboxRow
from tandem.hub.runtime import Hub
from tandem.net.driver import VrrpDriver
from tandem.net.instance import open_instance
from tandem.net.raw import interface_address
from tandem.supervisor import stop_on_signals
from tandem.vrrp.types import ChecksChanged, InstanceConfig, Reason, State, Transition

log = logging.getLogger(__name__)

HANDOVER_DRAIN_S = 1.0  # how long a handing-over master waits for its in-flight PUBACKs
HOLD_MAX_S = 2.0  # the longest a master keeps back samples its standby has better data for


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


class HaNode:
    """One member of a Tandem pair."""

    def __init__(self, cfg: TandemConfig, config_path: Path | None = None) -> None:
        # synced-config.json (what the master last sent) wins over the file's shared sections.
        cfg = ConfigSync.effective_config(cfg)
        assert cfg.ha is not None
        self.cfg = cfg
        self.ha = cfg.ha
        self.config_path = config_path
        self.secret = self.ha.shared_secret()
        v = self.ha.vrrp
        self.local = v.unicast_src_ip or interface_address(v.interface or "")
        self.terms = TermStore(cfg.data_dir / "term.json")
        self.ctl = HaController(
            node=cfg.node,
            base_priority=self.ha.priority,
            standby=self.ha.standby,
            recovery=self.ha.recovery,
            fence_window=3 * v.advert_interval,
            peer_timeout=max(3 * v.advert_interval, 0.5),
            term=self.terms.term,
            started_at=time.time(),
        )
        self.settings = MqttSettings.from_config(cfg.mqtt)
        self.hub = Hub(cfg, publisher_factory=self._make_publisher)
        self.hub.standby_mode = self.ha.standby
        self.hub.ha_info = self.ha_info
        self.hub.vrrp_info = self.vrrp_info
        self.hub.switchover_handler = self.switchover
        self.hub.on_sample.append(self._on_sample)
        self.hub.gate.role = "INIT"
        self.hub.gate.polling = self.ha.standby != "cold"
        self._polling = self.ha.standby == "hot"
        if self.ha.standby == "warm":
            for poller in self.hub.pollers:
                poller.paused = True  # type: ignore[attr-defined]
        self.hub.gate.publishing = False
        self.hub.gate.term = self.terms.term
        self.peer = PeerClient(self.ha.peer_url, self.secret, self._on_peer_state)
        self.configsync = ConfigSync(
            cfg,
            config_path,
            self._apply_config,
            self.peer,
            lambda message, detail: self.hub.add_timeline("config", message, detail),
        )
        self.configsync.main_routes(self.hub.app)
        self.hub.app.include_router(
            peer_router(
                self.secret,
                self.peer_state,
                v.advert_interval,
                self._on_handover_request,
                extra=self._extra_routes,
            )
        )
        self.observer = BrokerObserver(
            self.settings,
            self.ha.cluster,
            cfg.node,
            on_delivered=self._on_delivered,
            on_state=self._on_state_message,
            on_heartbeat=self._on_heartbeat,
        )
        self.driver: VrrpDriver | None = None
        self._latest_slot: dict[str, int] = {}
        self._label = "INIT"
        self._vrrp_reason = "startup"
        self.last_failover: dict[str, Any] | None = None
        self._handover_lock = asyncio.Lock()
        self._barrier_passed = False
        self._barrier_task: asyncio.Task[None] | None = None
        self._hold_since: float | None = None
        self._last_delivery_at: float | None = None
        self._gap_from: float | None = None
        self._health_key: tuple[bool, int] | None = None
        self._checks: dict[str, bool] = {}

    # ---- wiring ----

    def _make_publisher(self, outbox: Outbox, may_publish: Callable[[], bool]) -> MqttPublisher:
        return MqttPublisher(
            self.settings,
            outbox,
            may_publish=lambda: may_publish() and self._term_is_highest(),
            payload_for=lambda row: restamp(row.payload, self.ctl.term),
            hold=self._hold,
            on_acked=self._on_acked,
        )

    async def _apply_config(self, cfg: TandemConfig) -> None:
        """A new shared config (file, PUT or the master's): applied live, outbox kept."""
        if cfg.mqtt != self.cfg.mqtt:
            # The observer keeps its broker connection until restart; the publisher moves now.
            self.settings = MqttSettings.from_config(cfg.mqtt)
        self.cfg = cfg
        await self.hub.reconfigure(cfg, publisher_factory=self._make_publisher)
        if self.ha.standby == "warm":
            for poller in self.hub.pollers:
                poller.paused = not self._polling  # type: ignore[attr-defined]

    def _hold(self, row: OutboxRow) -> bool:
        """Keep back a sample a healthy hot standby has better data for, until it takes over.

        A row with no values at all means our path to the device is failing. While the peer
        could continue exactly from our last delivered slot, such rows wait; if they are still
        the only thing we have after `health.fail_after`, our health drops, the handover goes
        out at the last delivered slot, and the peer publishes its own samples from there. A
        blip shorter than that costs a short delay, not a role change; after HOLD_MAX_S (the
        peer never took over) the rows go out as they are.
        """
        if row.value_count > 0:
            self._hold_since = None
            return False
        peer = self.ctl.peer
        if peer is None or peer.standby != "hot" or not self.ctl.peer_ready(_now())[0]:
            self._hold_since = None
            return False
        now = _now()
        if self._hold_since is None:
            self._hold_since = now
            log.warning(
                "holding %s/%s slot %s: no values; %s has them",
                row.node,
                row.group,
                row.slot,
                peer.node,
            )
        return now - self._hold_since < HOLD_MAX_S

    @property
    def holding_back(self) -> bool:
        """Held for longer than a blip: counts as a failed device path."""
        if self._hold_since is None:
            return False
        held = _now() - self._hold_since
        return self.ha.health.fail_after <= held < HOLD_MAX_S

    def _term_is_highest(self) -> bool:
        # Checked before every message: a higher term anywhere stops us at once.
        return self.ctl.highest_term <= self.ctl.term

    def _extra_routes(self, router: Any, auth: Callable[[str | None], None]) -> None:
        from fastapi import Header

        self.configsync.routes(router, auth)

        @router.post("/switchover")
        async def forwarded_switchover(authorization: str | None = Header(default=None)) -> Any:
            auth(authorization)
            return await self._handover("operator switchover (requested on the peer)", manual=True)

    # ---- facts in ----

    def _on_sample(self, sample: Sample) -> None:
        key = stream_key(sample.node, sample.group)
        self.ctl.polled(key, sample.slot)
        self._latest_slot[key] = sample.slot
        if sample.slot <= self.ctl.watermarks.get(key, -1):
            # A late poll of a slot that is already delivered (we started late, or caught up
            # after a stall): trims ran before it existed, so drop it now, before the
            # publisher can see it.
            self.hub.outbox.trim_through(sample.group, sample.slot, node=sample.node)

    def _on_acked(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            self.ctl.acked(stream_key(row.node, row.group), row.slot)
        if self._gap_from is not None and self.last_failover is not None:
            # The gap subscribers saw: last delivery by anyone before we took over, to our
            # first delivery after it.
            self.last_failover["gap_ms"] = round((_now() - self._gap_from) * 1000, 1)
            self._gap_from = None

    def _on_delivered(self, d: Delivered) -> None:
        self._last_delivery_at = _now()
        before = self.ctl.highest_term
        self.ctl.observed(stream_key(d.device, d.group), d.slot, d.term, d.source_node, _now())
        if self.ctl.highest_term != before:
            self.apply()

    def _on_state_message(self, term: int, node: str) -> None:
        before = self.ctl.highest_term
        self.ctl.learn_term(term, node)
        if self.ctl.highest_term != before:
            self.apply()

    def _on_heartbeat(self, term: int, node: str) -> None:
        before = self.ctl.highest_term
        self.ctl.heartbeat(term, node, _now())
        if self.ctl.highest_term != before:
            self.apply()

    def _on_peer_state(self, state: PeerState) -> None:
        self.configsync.on_peer_state(state, state.publishing)
        before = self.ctl.highest_term
        self.ctl.peer_update(state.view(_now()))
        if self.ctl.highest_term != before:
            self.apply()

    def _on_vrrp(self, t: Transition) -> None:
        self._barrier_passed = False
        if t.reason is Reason.MASTER_RESIGNED:
            # A Tandem master gates its publishing off before it resigns: no need to wait
            # for the broker to go quiet.
            self.ctl.expect_handover_until = max(self.ctl.expect_handover_until, _now() + 3.0)
        self.ctl.vrrp_changed(t.new.value)
        detail = f": {t.detail}" if t.detail else ""
        self._vrrp_reason = f"VRRP {t.old.value} -> {t.new.value} ({t.reason.value}{detail})"
        self.apply()

    async def _on_handover_request(self, req: HandoverRequest) -> HandoverAnswer:
        self.ctl.config_ok = self.configsync.config_ok
        ok, reason = self.ctl.accept_handover(
            req.from_node, req.term, req.watermarks, req.manual, _now()
        )
        if ok:
            self._vrrp_reason = f"handover from {req.from_node}: {req.reason}"
            log.info("accepted handover from %s at %s", req.from_node, req.watermarks)
            self.apply()
        else:
            log.warning("refused handover from %s: %s", req.from_node, reason)
        return HandoverAnswer(accepted=ok, reason=reason)

    # ---- facts out ----

    def peer_state(self) -> PeerState:
        c = self.ctl
        return PeerState(
            node=self.cfg.node,
            vrrp=c.vrrp,
            publishing=self.hub.gate.publishing,
            term=c.term,
            priority=c.priority,
            base_priority=c.base_priority,
            standby=c.standby,
            watermarks=dict(c.watermarks),
            buffer_from=dict(c.buffer_from),
            healthy=c.healthy,
            started_at=c.started_at,
            config_version=self.configsync.version,
            config_sha=self.configsync.sha,
        )

    def watermark_lag(self) -> int | None:
        lags = [
            slot - self.ctl.watermarks[key]
            for key, slot in self._latest_slot.items()
            if key in self.ctl.watermarks
        ]
        return max(lags) if lags else None

    def ha_info(self) -> HaInfo:
        peer = self.ctl.peer
        fresh = self.ctl.peer_fresh(_now())
        return HaInfo(
            peer=peer.node if peer else self.ha.peer_url,
            peer_state=(peer.vrrp if fresh and peer else "unreachable"),
            watermark_lag=self.watermark_lag(),
            last_failover=self.last_failover,
            config_version=self.configsync.label,
            peer_config_version=(
                stamp_label(peer.config_version, peer.config_sha) if peer and fresh else None
            ),
        )

    def vrrp_info(self) -> dict[str, Any] | None:
        d = self.driver
        if d is None:
            return None
        return {
            "state": d.state.value,
            "priority": d.machine.effective_priority,
            "base_priority": self.ha.priority,
            "master": str(d.machine.master_address) if d.machine.master_address else None,
            "adverts_sent": d.stats.adverts_sent,
            "adverts_received": d.stats.adverts_received,
            "drops": dict(d.stats.drops),
            "mismatched_peers": dict(d.stats.mismatched_peers),
            "transitions": dict(Counter(t.reason.value for t in d.stats.transitions)),
            "checks": dict(self._checks),
            "fenced_by": self.ctl.highest_term_node
            if self.ctl.highest_term > self.ctl.term
            else None,
        }

    # ---- applying the plan ----

    def apply(self) -> Plan:
        c = self.ctl
        c.observer_ready = self.observer.ready
        c.config_ok = self.configsync.config_ok
        now = _now()
        plan = c.plan(now)
        for key, slot in plan.trims.items():
            device, _, group = key.partition("/")
            self.hub.outbox.trim_through(group, slot, node=device)
        if plan.acquire:
            if self._barrier_passed:
                self._acquire(now)
                plan = c.plan(now)
            elif self._barrier_task is None or self._barrier_task.done():
                self._barrier_task = asyncio.get_running_loop().create_task(self._barrier())
        self._gate_polling(plan.polling)
        self.hub.set_publishing(plan.publishing)
        if plan.label != self._label:
            self._label = plan.label
            self.hub.set_role(plan.label, c.term, self._vrrp_reason)
        if plan.handover is not None and not self._handover_lock.locked():
            asyncio.get_running_loop().create_task(self._handover(plan.handover, manual=False))
        return plan

    def _gate_polling(self, polling: bool) -> None:
        """Hot and cold start and stop the pollers; warm keeps them connected but paused."""
        if polling != self._polling:
            self._polling = polling
            if not polling:
                self.ctl.polling_stopped()
        if self.ha.standby == "warm":
            for poller in self.hub.pollers:
                poller.paused = not polling  # type: ignore[attr-defined]
            if not self.hub.gate.polling:
                self.hub.set_polling(True)
        elif polling != self.hub.gate.polling:
            self.hub.set_polling(polling)

    async def _barrier(self) -> None:
        """Drain what the broker already sent us, then decide again (see BrokerObserver.barrier)."""
        if await self.observer.barrier():
            self._barrier_passed = self.ctl.vrrp == "MASTER"
        self.apply()

    def _acquire(self, now: float) -> None:
        c = self.ctl
        quiet_ms = (now - c.last_foreign_activity) * 1000
        previous = c.highest_term_node if c.highest_term_node != self.cfg.node else None
        term = self.terms.acquire(c.highest_term)
        self._barrier_passed = False  # a later re-acquisition drains the broker again
        self._hold_since = None
        self._gap_from = self._last_delivery_at
        c.term_acquired(term)
        self.hub.gate.term = term
        self.last_failover = {
            "ts_ms": int(time.time() * 1000),
            "term": term,
            "reason": self._vrrp_reason,
            "previous": previous,
            "quiet_ms": None if quiet_ms == float("inf") else round(quiet_ms, 1),
            "resumed_after": dict(c.watermarks),
        }
        log.info("acquired term %s (%s); resuming after %s", term, self._vrrp_reason, c.watermarks)
        asyncio.get_running_loop().create_task(self._announce(term))

    async def _announce(self, term: int) -> None:
        payload = json.dumps(
            {"node": self.cfg.node, "term": term, "ts_ms": int(time.time() * 1000)}
        )
        publisher = self.hub.publisher
        assert isinstance(publisher, MqttPublisher)
        for _ in range(50):
            if await publisher.publish_status(state_topic(self.ha.cluster), payload, retain=True):
                return
            await asyncio.sleep(0.2)

    # ---- loops ----

    async def _control_loop(self) -> None:
        """Health into VRRP priority, then the plan: every health interval."""
        weights = self.ha.health
        failing_since: dict[str, float] = {}
        while True:
            now = _now()
            raw = self.hub.health_checks()
            for name, ok in raw.items():
                if ok:
                    failing_since.pop(name, None)
                else:
                    failing_since.setdefault(name, now)
            # A check counts as failed once it has failed for fail_after: connection set-up at
            # start and one-off blips must not move the role.
            self._checks = {
                name: ok or now - failing_since[name] < weights.fail_after
                for name, ok in raw.items()
            }
            self._checks["loops"] = raw["loops"]
            delta = 0
            if not self._checks["broker"]:
                delta -= weights.broker_weight
            if not self._checks["devices"]:
                delta -= weights.devices_weight
            fault = not self._checks["loops"]
            key = (fault, delta)
            if key != self._health_key and self.driver is not None:
                self._health_key = key
                self.driver.checks_changed(ChecksChanged(fault=fault, priority_delta=delta))
            self.ctl.healthy = all(self._checks.values()) and not self.holding_back
            if self.driver is not None:
                self.ctl.priority = self.driver.machine.effective_priority
            self.apply()
            await asyncio.sleep(weights.interval)

    async def _heartbeat_loop(self) -> None:
        """While publishing, tell the broker every advert interval: split brain needs this."""
        topic = heartbeat_topic(self.ha.cluster)
        interval = self.ha.vrrp.advert_interval
        while True:
            publisher = self.hub.publisher
            assert isinstance(publisher, MqttPublisher)
            if self.hub.gate.publishing:
                body = json.dumps({"node": self.cfg.node, "term": self.ctl.term})
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        publisher.publish_status(topic, body, retain=False), interval * 2
                    )
            await asyncio.sleep(interval)

    # ---- handover, sending side ----

    async def switchover(self) -> dict[str, Any]:
        """Planned switchover: on the master, hand over; on the backup, ask the master to.

        Raises TandemError with the reason when the role cannot move without loss.
        """
        if self.ctl.vrrp != "MASTER":
            try:
                result = await self.peer.post("/switchover", {}, timeout=10.0)
            except Exception as exc:
                raise TandemError(f"{self.cfg.node} is {self.ctl.vrrp}; peer: {exc}") from exc
        else:
            result = await self._handover("operator switchover", manual=True)
        if not result.get("ok"):
            raise TandemError(f"switchover refused: {result.get('reason')}")
        return result

    async def _handover(self, reason: str, *, manual: bool) -> dict[str, Any]:
        if self._handover_lock.locked():
            return {"ok": False, "reason": "a handover is already running"}
        async with self._handover_lock:
            c = self.ctl
            if not (c.vrrp == "MASTER" and c.holding):
                return {"ok": False, "reason": f"{self.cfg.node} is not the active master"}
            ready, why = c.peer_ready(_now())
            if not ready:
                return {"ok": False, "reason": why}
            peer = c.peer
            assert peer is not None
            log.info("handing over to %s: %s", peer.node, reason)
            c.handing_over = True
            self.apply()
            try:
                await self._drain_inflight()
                answer = await self.peer.handover(
                    HandoverRequest(
                        from_node=self.cfg.node,
                        term=c.term,
                        watermarks=dict(c.watermarks),
                        manual=manual,
                        reason=reason,
                    )
                )
                if not answer.accepted:
                    log.warning("handover to %s refused: %s", peer.node, answer.reason)
                    return {"ok": False, "reason": answer.reason}
                self._vrrp_reason = f"handed over to {peer.node}: {reason}"
                assert self.driver is not None
                self.driver.resign(f"handover to {peer.node}: {reason}")
                for _ in range(100):
                    if c.vrrp != "MASTER":
                        break
                    await asyncio.sleep(0.01)
                return {"ok": True, "to": peer.node, "watermarks": dict(c.watermarks)}
            finally:
                c.handing_over = False
                self.apply()

    async def _drain_inflight(self) -> None:
        deadline = _now() + HANDOVER_DRAIN_S
        while self.hub.publisher.status().inflight > 0 and _now() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # acks are flushed on the next loop step

    # ---- running ----

    async def run(self, stop: asyncio.Event) -> int:
        v = self.ha.vrrp
        icfg = instance_config(self.ha, self.local)
        hooks = self.ha.hooks
        async with contextlib.AsyncExitStack() as stack:
            self.driver = await open_instance(
                stack,
                icfg,
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
                on_transition=self._on_vrrp,
            )
            hub = await stack.enter_async_context(self.hub)
            log.info(
                "node %s: %s standby, priority %s, peer %s, API on %s",
                self.cfg.node,
                self.ha.standby,
                self.ha.priority,
                self.ha.peer_url,
                hub.api_port,
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.observer.run(), name="observer"),
                    tg.create_task(self.configsync.run(), name="config-sync"),
                    tg.create_task(self.peer.run(), name="peer-link"),
                    tg.create_task(self._control_loop(), name="ha-control"),
                    tg.create_task(self._heartbeat_loop(), name="heartbeat"),
                ]
                vrrp = tg.create_task(self.driver.run(), name="vrrp")
                stopped = tg.create_task(_shielded(hub.wait_stopped()), name="hub-stopped")
                asked = tg.create_task(stop.wait(), name="stop")
                await asyncio.wait({stopped, asked, vrrp}, return_when=asyncio.FIRST_COMPLETED)
                log.info("node %s stopping", self.cfg.node)
                if self.ctl.vrrp == "MASTER" and self.ctl.holding and not stopped.done():
                    # A planned stop is a handover: the peer resumes exactly after our last ack.
                    with contextlib.suppress(TimeoutError):
                        result = await asyncio.wait_for(
                            self._handover("shutdown", manual=False), timeout=3.0
                        )
                        log.info("shutdown handover: %s", result)
                # Order matters: stop publishing, resign VRRP (priority 0, VIPs, notify_stop),
                # then let the hub flush and close.
                self.hub.set_publishing(False)
                self.driver.stop()
                await asyncio.wait({vrrp}, timeout=5)
                for task in (*tasks, asked, stopped):
                    task.cancel()
        return 0


async def _shielded(aw: Any) -> None:
    """Wait for `aw` without cancelling it when this waiter is cancelled."""
    await asyncio.shield(aw)


def _now() -> float:
    return time.monotonic()


async def run_ha_node(cfg: TandemConfig, config_path: Path | None = None) -> int:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        node = HaNode(cfg, config_path)
        return await node.run(stop)


__all__ = ["HaNode", "instance_config", "run_ha_node"]
