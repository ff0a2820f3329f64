"""The HA layer inside the hub process: carries out the warden's commands, reports facts.

The warden (VRRP and the HA core) decides; this side only does: it opens and closes the
publishing gate (with the lease the core renews), trims the outbox, runs broker barriers,
announces terms, drains PUBACKs and carries the peer link (state stream, handover offers,
config sync). What it sees (deliveries on the broker, acks, polls, the hub's health, the peer's
state, requests) goes back as facts, in order. Publishing additionally needs the lease to be
current on this process's own clock, so a warden that stopped running stops the publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header

from tandem.api.configedit import ConfigEditor, HubReader, Master
from tandem.api.configedit import install as install_config_editor
from tandem.api.view import HaInfo
from tandem.config.hub import TandemConfig
from tandem.errors import TandemError
from tandem.ha.configsync import ConfigSync, stamp_label
from tandem.ha.facts import FactQueue
from tandem.ha.observer import BrokerObserver, BrokerRules
from tandem.ha.peer import (
    HandoverAnswer,
    HandoverRequest,
    PeerClient,
    PeerState,
    StateBell,
    peer_router,
)
from tandem.ha.records import CoreSnapshot
from tandem.ha.types import (
    Acked,
    Announce,
    AnswerOffer,
    AnswerSwitchover,
    BarrierDone,
    Drain,
    Drained,
    Fact,
    HandoverAnswered,
    HandoverOffered,
    HaRole,
    HubReport,
    Key,
    PeerSeen,
    Phase,
    Polled,
    Refusal,
    Refused,
    RequestBarrier,
    RoleChanged,
    SecurityEvent,
    SendOffer,
    SetGate,
    SwitchoverAsked,
    Trim,
    TrimsApplied,
    split_key,
    stream_key,
)
from tandem.ha.wire import Signer, heartbeat_topic, state_topic
from tandem.ha.writes import PairAuthority, intent_routes
from tandem.hub.model import Sample
from tandem.hub.mqtt import MqttPublisher, MqttSettings
from tandem.hub.outbox import Outbox, OutboxError, OutboxRow
from tandem.hub.runtime import Hub, Publisher
from tandem.security.keys import broker_hmac_key
from tandem.security.tls import PeerTls

log = logging.getLogger(__name__)

DRAIN_S = 1.0  # how long a handing-over master waits for its in-flight PUBACKs
ANSWER_S = 2.0  # how long a peer-link request waits for the warden's answer
SWITCHOVER_S = 10.0
ANNOUNCE_ATTEMPTS = 50


@dataclass(slots=True)
class Gate:
    """The warden's latest word, and when it stops counting (monotonic, this host)."""

    publishing: bool = False
    lease_until: float = 0.0
    term: int = 0
    hold_valueless: bool = False

    def open(self) -> bool:
        return self.publishing and time.monotonic() < self.lease_until


def group_intervals(cfg: TandemConfig) -> dict[Key, float]:
    return {stream_key(d.name, g.name): g.interval for d in cfg.devices for g in d.groups}


class SyncTarget:
    """The config editor's way into an HA node: config sync applies, the master takes changes."""

    def __init__(self, side: HubSide, config_path: Path) -> None:
        self._side = side
        self.config_path = config_path

    def running(self) -> TandemConfig:
        return self._side.configsync.cfg

    def master(self) -> Master | None:
        if not self._side.configsync.following_master():
            return None
        snap = self._side.snapshot
        peer = snap.peer if snap is not None else None
        return Master(node=peer.node if peer is not None else None, url=self._side.ha.peer_url)

    def synced(self) -> TandemConfig | None:
        sync = self._side.configsync
        return sync.cfg if sync.runs_synced() else None

    def digest(self) -> str:
        return self._side.configsync.sha

    async def write(self, text: str) -> None:
        await self._side.configsync.put_config(text)


class HubSide:
    """One node's hub-process half of the HA layer; the Hub's `ha` hooks."""

    def __init__(
        self,
        cfg: TandemConfig,
        config_path: Path | None,
        send: Callable[[Fact], None],
        started_at: float,
    ) -> None:
        cfg = ConfigSync.effective_config(cfg)
        assert cfg.ha is not None
        self.cfg, self.ha = cfg, cfg.ha
        self.standby: str = self.ha.standby
        secret = self.ha.shared_secret()
        self.signer = Signer(broker_hmac_key(secret), self.ha.cluster)
        self.facts = FactQueue(send)
        self.gate = Gate()
        self.started_at = started_at
        self.snapshot: CoreSnapshot | None = None
        self.floor: dict[Key, int] = {}  # delivered through: later polls of these are dropped
        self.holding_since: float | None = None
        self.security_events = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._answers: dict[int, asyncio.Future[Refusal | None]] = {}
        self.settings = MqttSettings.from_config(cfg.mqtt)
        self.hub = Hub(cfg, ha=self)
        self.hub.writes.authority = PairAuthority(self)
        self.peer = PeerClient(
            self.ha.peer_url,
            secret,
            self._on_peer_state,
            tls=PeerTls.for_peer(self.ha.peer_url, self.ha.peer_tls, cfg.api.tls),
        )
        self.configsync = ConfigSync(
            cfg,
            config_path,
            self._apply_config,
            self.peer,
            lambda message, detail: self.hub.add_timeline("config", message, detail),
            peer_fresh_s=self.ha.peer_fresh_s,
        )
        # The peer's state stream goes out at once after a config change, not at the next
        # advert: the backup fetches the new config within a round trip.
        self.bell = StateBell()
        self._install_routes(config_path, secret)
        self.observer = BrokerObserver(
            self.settings,
            self.ha.cluster,
            cfg.node,
            self.signer,
            BrokerRules(group_intervals(cfg)),
            self.facts.add,
        )

    def _install_routes(self, config_path: Path | None, secret: str) -> None:
        """The HA node's routes on the hub's app: config sync, the config editor, the peer link.

        Apart from __init__ because they are one concern (what the peer and the dashboard may
        ask of this node), wired once the hub, the peer client and config sync exist.
        """
        self.configsync.main_routes(self.hub.app)
        self.configsync.on_applied = self.bell.ring
        if config_path is not None:
            editor = ConfigEditor(SyncTarget(self, config_path), HubReader(self.hub))
            install_config_editor(self.hub.app, editor)
            self.configsync.on_put = editor.record_put
        self.hub.app.include_router(
            peer_router(
                secret,
                self.peer_state,
                self.ha.vrrp.advert_interval,
                self._on_handover_request,
                extra=self._extra_routes,
                bell=self.bell,
            )
        )

    # ---- the Hub's hooks ----

    def make_publisher(self, outbox: Outbox, may_publish: Callable[[], bool]) -> Publisher:
        # self.cfg is the config being applied (set before Hub.reconfigure runs).
        return MqttPublisher(
            MqttSettings.from_config(self.cfg.mqtt),
            outbox,
            may_publish=self.gate.open,
            payload_for=self._wire,
            hold=self._hold,
            on_acked=self._on_acked,
        )

    def admit(self, sample: Sample) -> bool:
        """A late poll of a delivered slot never enters the outbox."""
        return sample.slot > self.floor.get(stream_key(sample.node, sample.group), -1)

    def stored(self, samples: list[Sample]) -> None:
        slots: dict[Key, tuple[int, int]] = {}
        for s in samples:
            key = stream_key(s.node, s.group)
            old = slots.get(key)
            slots[key] = (s.slot, s.slot) if old is None else (min(old[0], s.slot), s.slot)
        self.facts.add(Polled(slots))

    def ha_info(self) -> HaInfo | None:
        snap = self.snapshot
        if snap is None:
            return HaInfo(peer=self.ha.peer_url, peer_state="unknown")
        peer = snap.peer
        fresh = snap.peer_fresh and peer is not None
        return HaInfo(
            peer=peer.node if peer is not None else self.ha.peer_url,
            peer_state=peer.role if fresh and peer is not None else "unreachable",
            watermark_lag=snap.watermark_lag,
            last_failover=self._failover_info(snap),
            config_version=self.configsync.label,
            peer_config_version=(
                stamp_label(peer.config_version, peer.config_sha) if fresh and peer else None
            ),
            switchover=_switchover_label(snap),
        )

    def vrrp_info(self) -> dict[str, Any] | None:
        snap = self.snapshot
        if snap is None:
            return None
        info: dict[str, Any] = dict(snap.coordinator)
        info.update(
            {
                "state": snap.coordinator_state,
                "priority": snap.priority,
                "base_priority": snap.base_priority,
                "phase": snap.phase.value,
                "detail": snap.detail,
                "checks": dict(snap.checks),
                "health_reasons": dict(snap.reasons),
                "spurious_takeovers": snap.spurious_takeovers,
                "fenced_by": snap.highest_term_node if snap.highest_term > snap.term else None,
                "broker_drops": dict(self.observer.drops.counts),
                "security_events": self.security_events,
            }
        )
        return info

    async def switchover(self) -> dict[str, Any]:
        """On the active master, hand over; elsewhere, ask the peer (it may be the master).

        Raises TandemError with the reason when the role cannot move without loss.
        """
        snap = self.snapshot
        if snap is None or snap.phase is not Phase.ACTIVE:
            try:
                result = await self.peer.post("/switchover", {}, timeout=SWITCHOVER_S)
            except Exception as exc:
                role = snap.role.value if snap is not None else "starting"
                raise TandemError(f"{self.cfg.node} is {role}; peer: {exc}") from exc
            if not result.get("ok"):
                raise TandemError(f"switchover refused: {result.get('reason')}")
            return result
        return await self._local_switchover()

    async def _local_switchover(self) -> dict[str, Any]:
        ident = next(self._ids)
        done = self._expect(ident)
        self.facts.add(SwitchoverAsked(ident))
        try:
            refusal = await asyncio.wait_for(done, SWITCHOVER_S)
        except TimeoutError:
            raise TandemError("switchover refused: no answer from the HA core") from None
        if refusal is not None:
            raise TandemError(f"switchover refused: {refusal}")
        peer = self.snapshot.peer if self.snapshot is not None else None
        marks = self.snapshot.watermarks if self.snapshot is not None else {}
        return {"ok": True, "to": peer.node if peer else "", "watermarks": marks}

    # ---- publishing ----

    def _wire(self, row: OutboxRow) -> bytes:
        """The payload as it leaves: our term and a signature over the HA fields, at send."""
        term = self.gate.term
        sig = self.signer.data(row.node, row.group, row.slot, row.seq, term, row.source_node)
        return wire_payload(row, term, sig)

    def _hold(self, row: OutboxRow) -> bool:
        if row.value_count > 0 or not self.gate.hold_valueless:
            self.holding_since = None
            return False
        if self.holding_since is None:
            self.holding_since = time.monotonic()
            log.warning(
                "holding %s/%s slot %s: no values; the hot peer has them",
                row.node,
                row.group,
                row.slot,
            )
        return True

    def _on_acked(self, rows: list[OutboxRow]) -> None:
        slots: dict[Key, int] = {}
        for row in rows:
            key = stream_key(row.node, row.group)
            slots[key] = max(row.slot, slots.get(key, row.slot))
        self.facts.add(Acked(slots))

    # ---- commands from the warden ----

    def on_command(self, message: object) -> None:
        if isinstance(message, SetGate):
            self._set_gate(message)
        elif isinstance(message, CoreSnapshot):
            self.snapshot = message
        elif isinstance(message, Trim):
            self._trim(message)
        elif isinstance(message, RoleChanged):
            self._role_changed(message)
        elif isinstance(message, RequestBarrier):
            self._spawn(self._barrier(message.barrier))
        elif isinstance(message, Announce):
            self._spawn(self._announce(message.term))
        elif isinstance(message, Drain):
            self._spawn(self._drain(message.drain))
        elif isinstance(message, SendOffer):
            self._spawn(self._send_offer(message))
        elif isinstance(message, AnswerOffer | AnswerSwitchover):
            waiter = self._answers.pop(message.request, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.refusal)
        elif isinstance(message, SecurityEvent):
            self.security_events += 1
            log.error("security: %s: %s", message.kind, message.detail)
            self.hub.add_timeline(
                "info", f"security event: {message.detail}", {"kind": message.kind}
            )

    def _set_gate(self, g: SetGate) -> None:
        gate = self.gate
        gate.term, gate.lease_until, gate.hold_valueless = g.term, g.lease_until, g.hold_valueless
        if g.publishing != gate.publishing:
            self._spawn(self.observer.set_watch_data(not g.publishing))
        gate.publishing = g.publishing
        self.hub.gate.term = g.term
        self.hub.set_publishing(g.publishing)
        if g.polling != self.hub.gate.polling:
            self.hub.set_polling(g.polling)

    def _trim(self, t: Trim) -> None:
        applied: dict[Key, int] = {}
        for key, slot in t.trims.items():
            if slot > self.floor.get(key, -1):
                self.floor[key] = slot
            device, group = split_key(key)
            try:
                self.hub.outbox.trim_through(group, slot, node=device)
            except OutboxError as exc:
                log.warning(
                    "trim of %s through slot %s failed (asked again later): %s", key, slot, exc
                )
                continue
            applied[key] = slot
        if applied:
            self.facts.add(TrimsApplied(applied))

    def _role_changed(self, r: RoleChanged) -> None:
        """The timeline says what is happening, not just the role: "MASTER, acquiring ..."."""
        settled = r.phase in (Phase.ACTIVE, Phase.STANDBY)
        reason = f"{r.reason.value}: {r.detail}" if settled and r.detail else r.reason.value
        detail = "" if settled else r.detail
        self.hub.set_role(r.role.value, r.term, reason, phase=r.phase.value, detail=detail)

    async def _barrier(self, ident: int) -> None:
        ok = await self.observer.barrier()
        self.facts.add(BarrierDone(ident, ok))

    async def _announce(self, term: int) -> None:
        topic = state_topic(self.ha.cluster)
        for _ in range(ANNOUNCE_ATTEMPTS):
            if term != self.gate.term and self.gate.term > term:
                return  # a newer term is being announced already
            payload = self.signer.control_payload(
                "state", self.cfg.node, term, int(time.time() * 1000)
            )
            publisher = self.hub.publisher
            if isinstance(publisher, MqttPublisher) and await publisher.publish_status(
                topic, payload, retain=True
            ):
                return
            await asyncio.sleep(0.2)

    async def _drain(self, ident: int) -> None:
        await self.hub.drain_inflight(DRAIN_S)  # the acks go out as facts before Drained
        self.facts.add(Drained(ident))

    async def _send_offer(self, message: SendOffer) -> None:
        answer = await self.peer.handover(HandoverRequest.of(message.handover))
        refusal = None
        if not answer.accepted:
            reason = _refused(answer.refused, Refused.PEER_REFUSED)
            refusal = Refusal(reason, answer.reason)
        self.facts.add(HandoverAnswered(message.offer, refusal))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the peer link ----

    def _on_peer_state(self, state: PeerState) -> None:
        self.configsync.on_peer_state(state, state.publishing)
        self.facts.add(PeerSeen(state.view(time.monotonic())))

    def peer_state(self) -> PeerState:
        snap = self.snapshot
        return PeerState(
            node=self.cfg.node,
            role=snap.role.value if snap else HaRole.INIT.value,
            coordinator_state=snap.coordinator_state if snap else "INIT",
            publishing=self.gate.open(),
            term=snap.term if snap else 0,
            priority=snap.priority if snap else self.ha.priority,
            base_priority=self.ha.priority,
            standby=self.ha.standby,
            watermarks=dict(snap.watermarks) if snap else {},
            buffer_from=dict(snap.buffer_from) if snap else {},
            healthy=snap.healthy if snap else False,
            started_at=self.started_at,
            config_version=self.configsync.version,
            config_sha=self.configsync.sha,
        )

    async def _on_handover_request(self, req: HandoverRequest) -> HandoverAnswer:
        ident = next(self._ids)
        done = self._expect(ident)
        self.facts.add(HandoverOffered(ident, req.offer()))
        try:
            refusal = await asyncio.wait_for(done, ANSWER_S)
        except TimeoutError:
            return HandoverAnswer(
                accepted=False, reason="no answer from the HA core", refused=Refused.TIMED_OUT.value
            )
        if refusal is None:
            log.info("accepted handover from %s at %s", req.from_node, req.watermarks)
            return HandoverAnswer(accepted=True, reason="accepted")
        log.warning("refused handover from %s: %s", req.from_node, refusal)
        return HandoverAnswer(accepted=False, reason=refusal.detail, refused=refusal.reason.value)

    def _extra_routes(self, router: APIRouter, auth: Callable[[str | None], None]) -> None:
        self.configsync.routes(router, auth)
        intent_routes(self, router, auth)

        @router.post("/switchover")
        async def forwarded_switchover(authorization: str | None = Header(default=None)) -> Any:
            auth(authorization)
            try:
                return await self._local_switchover()
            except TandemError as exc:
                return {"ok": False, "reason": str(exc)}

    def _expect(self, ident: int) -> asyncio.Future[Refusal | None]:
        done: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        self._answers[ident] = done
        return done

    # ---- config ----

    async def _apply_config(self, cfg: TandemConfig) -> None:
        """A new shared config (file, PUT or the master's): applied live, outbox kept."""
        self.cfg = cfg
        await self.hub.reconfigure(cfg)
        self.observer.rules = BrokerRules(group_intervals(cfg), self.observer.rules.max_bytes)

    # ---- loops ----

    async def report_loop(self) -> None:
        """The hub's health every health interval: its silence is what the warden watches."""
        interval = self.ha.health.interval
        while True:
            checks = self.hub.health_checks()
            self.facts.add(
                HubReport(
                    checks=checks,
                    reasons={},
                    holding_since=self.holding_since,
                    observer_ready=self.observer.ready,
                    config_ok=self.configsync.config_ok,
                )
            )
            await asyncio.sleep(interval)

    async def heartbeat_loop(self) -> None:
        """While publishing, tell the broker every advert interval: split brain needs this."""
        topic = heartbeat_topic(self.ha.cluster)
        interval = self.ha.vrrp.advert_interval
        while True:
            publisher = self.hub.publisher
            if self.gate.open() and isinstance(publisher, MqttPublisher):
                body = self.signer.control_payload(
                    "heartbeat", self.cfg.node, self.gate.term, int(time.time() * 1000)
                )
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        publisher.publish_status(topic, body, retain=False), interval * 2
                    )
            await asyncio.sleep(interval)

    def _failover_info(self, snap: CoreSnapshot) -> dict[str, Any] | None:
        f = snap.last_failover
        if f is None:
            return None
        offset = time.time() - time.monotonic()
        return {
            "ts_ms": int((f.at + offset) * 1000),
            "term": f.term,
            "reason": f.reason,
            "previous": f.previous,
            "quiet_ms": None if f.quiet_s is None else round(f.quiet_s * 1000, 1),
            "resumed_after": dict(f.resumed_after),
            "gap_ms": None if f.gap_s is None else round(f.gap_s * 1000, 1),
        }


def _refused(value: str | None, default: Refused) -> Refused:
    try:
        return Refused(value) if value is not None else default
    except ValueError:
        return default


def wire_payload(row: OutboxRow, term: int, sig: str) -> bytes:
    """The stored body with our term and the signature in its tail."""
    return row.payload(term, sig)


def _switchover_label(snap: CoreSnapshot) -> str | None:
    """On the active master, whether the role could move now; elsewhere, not this node's call."""
    if snap.phase is not Phase.ACTIVE:
        return None
    refusal = snap.switchover_refusal
    return "ready" if refusal is None else str(refusal)
