"""The HA core, sans I/O: `handle(fact, now) -> actions`, like the VRRP machine.

Three rules carry the guarantees:

- Exactly once across failover: a slot is delivered once it is on the broker. The core keeps
  per stream the highest delivered slot (broker, own PUBACKs, peer link); a new master trims
  its buffer to it, and only once the outbox confirms the trim does publishing open.
- Fencing: publishing needs a token (term) granted for this leadership that is the highest
  known, and a lease the core renews while it runs: a frozen core's hub stops by itself. A
  leader asks for a token only after a broker barrier (every message the broker sent before it
  is counted) and, unless the coordinator is exclusive by itself, once no other node has been
  active on the broker for `quiet_window`, so cutting only the peer link never makes two
  publishers.
- Handover: planned moves stop publishing, drain PUBACKs, give the peer our watermarks, then
  release leadership; the peer resumes at watermark + 1.

The coordinator (VRRP pair, or a consensus store) appears only as facts (`Leadership`,
`TokenGranted`) and actions (`RequestToken`, `Release`, `SetPriority`): see ha/coordinator.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tandem.ha import handover, policy
from tandem.ha.health import HealthState
from tandem.ha.records import CoreConfig, CoreSnapshot, Failover, HandoverRun, snapshot_of
from tandem.ha.types import (
    Acked,
    Action,
    Announce,
    BarrierDone,
    CoordinatorInfo,
    Delivered,
    Drained,
    Fact,
    HandoverAnswered,
    HandoverOffered,
    HaReason,
    HaRole,
    HubConnected,
    HubLost,
    HubReport,
    Key,
    Leadership,
    PeerSeen,
    PeerView,
    Phase,
    Polled,
    Refusal,
    Refused,
    RequestBarrier,
    RequestToken,
    RoleChanged,
    SecurityEvent,
    SetGate,
    SetPriority,
    ShutdownAsked,
    Stopped,
    SwitchoverAsked,
    TermSeen,
    Tick,
    TokenGranted,
    Trim,
    TrimsApplied,
)
from tandem.ha.watermarks import Watermarks

LEADER_PHASES = (Phase.BARRIER, Phase.QUIET, Phase.ACQUIRING)
BARRIER_RETRY_S = 0.2
TRIM_RESEND_S = 1.0
MAX_SECURITY_EVENTS = 32


@dataclass(slots=True)
class HaCore:
    cfg: CoreConfig
    leading: bool = False
    coordinator_state: str = "INIT"
    phase: Phase = Phase.STANDBY
    role: HaRole = HaRole.INIT
    detail: str = "starting"
    term: int = 0
    max_acquired: int = 0
    highest_term: int = 0
    highest_term_node: str = ""
    marks: Watermarks = field(default_factory=Watermarks)
    health: HealthState | None = None
    peer: PeerView | None = None
    hub_seen_at: float | None = None
    hub_up: bool = False
    observer_ready: bool = False
    config_ok: bool = True
    holding_since: float | None = None
    last_foreign_activity: float = float("-inf")
    observer_since: float = float("inf")  # since when the broker observer could see others
    last_delivery_at: float | None = None
    expect_handover_until: float = float("-inf")
    recovered_for: float | None = None
    lease_until: float = float("-inf")
    barrier: tuple[int, float] | None = None  # (id, sent at)
    barrier_failed_at: float = float("-inf")
    awaiting_trims: dict[Key, int] = field(default_factory=dict)
    trims_sent_at: float = float("-inf")
    run: HandoverRun | None = None
    stopping: bool = False
    stopped: bool = False
    was_active: bool = False
    fenced: bool = False  # this leadership lost its term to a higher one
    spurious_takeovers: int = 0
    priority: int = 0
    coordinator: dict[str, object] = field(default_factory=dict)
    failover: Failover | None = None
    _ids: int = 0
    _gate: SetGate | None = None
    _priority_sent: tuple[bool, int] | None = None
    _reported_forgeries: set[int] = field(default_factory=set)
    _announced: tuple[HaRole, Phase, int] | None = None

    def __post_init__(self) -> None:
        self.term = self.max_acquired = self.highest_term = self.cfg.term
        self.highest_term_node = self.cfg.node
        self.priority = self.cfg.base_priority
        self.health = HealthState(self.cfg.health)

    # ---- the one entry point ----

    def handle(self, fact: Fact, now: float) -> list[Action]:
        """Apply one fact, then decide; the actions come back in the order to execute them."""
        out: list[Action] = []
        handler = _HANDLERS.get(type(fact))
        if handler is not None:
            handler(self, fact, now, out)
        self._step(now, out, renew=isinstance(fact, Tick))
        return out

    # ---- facts ----

    def _on_leadership(self, fact: Leadership, now: float, out: list[Action]) -> None:
        self.coordinator_state = fact.state
        if fact.resigned_peer:
            # The old master stopped publishing before it resigned: no need to wait for quiet.
            self.expect_handover_until = max(
                self.expect_handover_until, now + self.cfg.expect_handover_s
            )
        if fact.leading and not self.leading:
            self.leading, self.was_active = True, False
            self._enter(Phase.BARRIER, HaReason.ELECTED, fact.detail, out)
        elif not fact.leading and self.leading:
            self.leading = False
            if not self.was_active and self.phase in LEADER_PHASES:
                self.spurious_takeovers += 1
            reason = HaReason.LOST_ELECTION
            if self.run is not None:
                reason = HaReason.HANDED_OVER if self.run.step == "release" else reason
                lost = Refusal(Refused.LEADERSHIP_LOST, "leadership ended during the handover")
                handover.finish_run(self, None if self.run.step == "release" else lost, out)
            self._enter(Phase.STANDBY, reason, fact.detail, out)
        else:
            self._announce_role(fact.detail or self.detail, HaReason.COORDINATOR_STATE, out)

    def _on_token(self, fact: TokenGranted, now: float, out: list[Action]) -> None:
        self.max_acquired = max(self.max_acquired, fact.term)
        if not (self.leading and self.phase is Phase.ACQUIRING):
            return  # leadership ended while the token was being persisted: never used
        previous = self.highest_term_node if self.highest_term_node != self.cfg.node else None
        self.term = fact.term
        if fact.term >= self.highest_term:
            self.highest_term, self.highest_term_node = fact.term, self.cfg.node
        quiet = now - self.last_foreign_activity
        self.failover = Failover(
            at=now,
            term=fact.term,
            reason=self.detail,
            previous=previous,
            quiet_s=None if quiet == float("inf") else quiet,
            resumed_after=dict(self.marks.delivered),
            gap_from=self.last_delivery_at,
        )
        self.was_active = True
        # Publishing opens only once the outbox confirms these trims: an outbox error must not
        # turn into duplicates.
        self.awaiting_trims = self.marks.untrimmed()
        if self.awaiting_trims:
            self._send_trims(dict(self.awaiting_trims), now, out)
        out.append(Announce(fact.term))
        resumed = f"resuming after {self.marks.delivered}"
        self._enter(Phase.ACTIVE, HaReason.TERM_ACQUIRED, resumed, out)

    def _on_info(self, fact: CoordinatorInfo, now: float, out: list[Action]) -> None:
        self.priority = fact.priority
        self.coordinator = dict(fact.detail)

    def _on_report(self, fact: HubReport, now: float, out: list[Action]) -> None:
        assert self.health is not None
        seen = self.hub_seen_at
        back = seen is not None and (not self.hub_up or now - seen > self.cfg.hub_deadline)
        self.hub_up, self.hub_seen_at = True, now
        raw = dict(fact.checks)
        held = fact.holding_since
        if held is not None and self.cfg.health.fail_after <= now - held < self.cfg.hold_max:
            # Held back longer than a blip: our path to a device is failing.
            raw["device_path"] = False
        self.health.update(raw, fact.reasons, now)
        self.holding_since = held
        if fact.observer_ready and not self.observer_ready:
            # Quiet counts only from here: before, we could not have seen anyone.
            self.observer_since = now
        self.observer_ready, self.config_ok = fact.observer_ready, fact.config_ok
        if back:
            self._announce_role("hub reporting", HaReason.HUB_BACK, out)

    def _on_hub_lost(self, fact: HubLost, now: float, out: list[Action]) -> None:
        self._hub_down("the hub process ended", HaReason.HUB_LOST, out)
        self.hub_up = self.observer_ready = False
        self.marks.trims_lost()
        self.marks.polling_stopped()
        self._gate = None

    def _on_hub_connected(self, fact: HubConnected, now: float, out: list[Action]) -> None:
        self._gate = None  # sent again by this step
        self._announced = None
        self.marks.trims_lost()
        self._announce_role(self.detail, HaReason.HUB_BACK, out)

    def _on_delivered(self, fact: Delivered, now: float, out: list[Action]) -> None:
        for key, slot, term, node in fact.items:
            self.marks.advance(key, slot)
            self._learn_term(term, node, out)
            if node != self.cfg.node:
                self.last_foreign_activity = now
        if fact.items:
            self.last_delivery_at = now

    def _on_term(self, fact: TermSeen, now: float, out: list[Action]) -> None:
        self._learn_term(fact.term, fact.node, out)
        if fact.active and fact.node != self.cfg.node:
            self.last_foreign_activity = now

    def _on_acked(self, fact: Acked, now: float, out: list[Action]) -> None:
        for key, slot in fact.slots.items():
            self.marks.advance(key, slot)
        # Our own acks deleted those rows: never trim them (in-flight rows below stay).
        self.marks.trims_applied(fact.slots)
        f = self.failover
        if f is not None and f.gap_from is not None and f.gap_s is None and fact.slots:
            f.gap_s = now - f.gap_from

    def _on_polled(self, fact: Polled, now: float, out: list[Action]) -> None:
        for key, (first, last) in fact.slots.items():
            self.marks.polled(key, first, last)

    def _on_trimmed(self, fact: TrimsApplied, now: float, out: list[Action]) -> None:
        self.marks.trims_applied(fact.trims)
        for key, slot in fact.trims.items():
            if self.awaiting_trims.get(key, slot + 1) <= slot:
                del self.awaiting_trims[key]

    def _on_barrier(self, fact: BarrierDone, now: float, out: list[Action]) -> None:
        if self.barrier is None or self.barrier[0] != fact.barrier:
            return
        self.barrier = None
        if not fact.ok:
            self.barrier_failed_at = now
        elif self.phase is Phase.BARRIER:
            self._enter(Phase.QUIET, HaReason.BARRIER_PASSED, self._quiet_detail(), out)
        elif self.phase is Phase.REVALIDATING:
            self._enter(Phase.ACTIVE, HaReason.REVALIDATED, "no higher term on the broker", out)

    def _on_peer(self, fact: PeerSeen, now: float, out: list[Action]) -> None:
        view = _received(fact.view, now)
        self.peer = view
        self._learn_term(view.term, view.node, out)
        if view.publishing:
            self.marks.merge(view.watermarks)

    # ---- helpers for facts ----

    def _learn_term(self, term: int, node: str, out: list[Action]) -> None:
        if node == self.cfg.node and term > self.max_acquired:
            if (
                term not in self._reported_forgeries
                and len(self._reported_forgeries) < MAX_SECURITY_EVENTS
            ):
                self._reported_forgeries.add(term)
                out.append(
                    SecurityEvent(
                        "forged_term",
                        f"a message names this node with term {term}, never acquired here "
                        f"(highest acquired: {self.max_acquired})",
                    )
                )
            return  # never fenced by a term we did not take
        if term > self.highest_term:
            self.highest_term, self.highest_term_node = term, node

    def _peer_refusal(self, now: float) -> Refusal | None:
        return policy.peer_ready(self.peer, now, self.cfg.peer_timeout, self.marks.delivered)

    def _stop(self, out: list[Action]) -> None:
        if not self.stopped:
            self.stopped = True
            out.append(Stopped())

    def _hub_down(self, why: str, reason: HaReason, out: list[Action]) -> None:
        assert self.health is not None
        self.health.force_fault(why)
        self._announce_role(why, reason, out)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # ---- the decision step, after every fact ----

    def _step(self, now: float, out: list[Action], *, renew: bool) -> None:
        self._check_hub(now, out)
        self._check_fencing(now, out)
        self._check_lease(now, out)
        self._leader_step(now, out)
        handover.run_step(self, now, out)
        self._trim_step(now, out)
        self._gate_step(now, out, renew=renew)
        self._priority_step(out)

    def _check_hub(self, now: float, out: list[Action]) -> None:
        seen = self.hub_seen_at
        late = self.hub_up and seen is not None and now - seen > self.cfg.hub_deadline
        if late and self.health is not None and self.health.checks.get("loops", True):
            assert seen is not None
            silent = f"the hub has not reported for {now - seen:.1f} s"
            self._hub_down(silent, HaReason.HUB_UNRESPONSIVE, out)

    def _check_fencing(self, now: float, out: list[Action]) -> None:
        if self.highest_term <= self.term or self.highest_term_node == self.cfg.node:
            return
        if self.phase in (Phase.ACTIVE, Phase.REVALIDATING, Phase.HANDING_OVER):
            if self.run is not None:
                handover.finish_run(
                    self, Refusal(Refused.STALE_TERM, "a higher term appeared"), out
                )
            detail = f"fenced by {self.highest_term_node} (term {self.highest_term})"
            self.fenced = True
            self._enter(Phase.BARRIER, HaReason.HIGHER_TERM_SEEN, detail, out)

    def _check_lease(self, now: float, out: list[Action]) -> None:
        gate = self._gate
        if (
            self.phase is Phase.ACTIVE
            and gate is not None
            and gate.publishing
            and (now > self.lease_until)
        ):
            lapsed = now - self.lease_until
            detail = f"not scheduled for {lapsed:.2f} s past the lease: barrier before publishing"
            self._enter(Phase.REVALIDATING, HaReason.LEASE_LAPSED, detail, out)

    def _leader_step(self, now: float, out: list[Action]) -> None:
        if not self.leading or self.phase not in (*LEADER_PHASES, Phase.REVALIDATING):
            return
        if self.phase in (Phase.BARRIER, Phase.REVALIDATING):
            self._barrier_step(now, out)
        elif self.phase is Phase.QUIET and self.config_ok and self.observer_ready:
            heard = max(self.last_foreign_activity, self.observer_since)
            quiet = now - heard >= self.cfg.quiet_window
            expected = now < self.expect_handover_until
            if quiet or expected:
                reason = HaReason.BROKER_QUIET if quiet else HaReason.HANDOVER_EXPECTED
                detail = f"acquiring term {self.highest_term + 1}: persisting it"
                self._enter(Phase.ACQUIRING, reason, detail, out)
                out.append(RequestToken(self.highest_term))

    def _barrier_step(self, now: float, out: list[Action]) -> None:
        pending = self.barrier
        if pending is not None and now - pending[1] < self.cfg.barrier_timeout:
            return
        if not self.observer_ready or now - self.barrier_failed_at < BARRIER_RETRY_S:
            return
        ident = self._next_id()
        self.barrier = (ident, now)
        out.append(RequestBarrier(ident))

    def _trim_step(self, now: float, out: list[Action]) -> None:
        if not self.hub_up:
            return
        resend = now - self.trims_sent_at > TRIM_RESEND_S
        if self.phase in (Phase.ACTIVE, Phase.HANDING_OVER):
            # Our own acks delete what we published; only the trims before activation count.
            if self.awaiting_trims and resend:
                self._send_trims(dict(self.awaiting_trims), now, out)
            return
        if resend:
            self.marks.trim_sent.clear()  # a lost or failed trim is asked for again
        trims = self.marks.pending_trims()
        if trims:
            self._send_trims(trims, now, out)

    def _send_trims(self, trims: dict[Key, int], now: float, out: list[Action]) -> None:
        self.trims_sent_at = now
        self.marks.trims_requested(trims)
        out.append(Trim(trims))

    def _gate_step(self, now: float, out: list[Action], *, renew: bool) -> None:
        publishing = (
            self.phase is Phase.ACTIVE
            and not self.awaiting_trims
            and self.observer_ready
            and not self.stopped
        )
        polling = self.leading or self.cfg.standby == "hot"
        previous = self._gate
        if not polling and (previous is None or previous.polling):
            self.marks.polling_stopped()
        if publishing and (renew or previous is None or not previous.publishing):
            self.lease_until = now + self.cfg.lease
        gate = SetGate(
            publishing=publishing,
            polling=polling,
            term=self.term,
            lease_until=self.lease_until if publishing else 0.0,
            hold_valueless=self._hold_valueless(now),
        )
        if gate != self._gate and (renew or _differs(gate, self._gate)):
            self._gate = gate
            out.append(gate)

    def _hold_valueless(self, now: float) -> bool:
        """Keep back rows without values while a ready hot peer has them, up to hold_max.

        Such rows mean our path to the device is failing. If they are still all we have after
        `fail_after`, our health drops and the handover goes out at the last delivered slot;
        a blip shorter than that costs a short delay, not a role change.
        """
        if self.peer is None or self.peer.standby != "hot":
            return False
        if self._peer_refusal(now) is not None:
            return False
        held = self.holding_since
        return held is None or now - held < self.cfg.hold_max

    def _priority_step(self, out: list[Action]) -> None:
        assert self.health is not None
        change = self.health.priority() if self.health.checks else (False, 0)
        if change != self._priority_sent:
            self._priority_sent = change
            out.append(SetPriority(*change))

    # ---- role bookkeeping ----

    def _enter(self, phase: Phase, reason: HaReason, detail: str, out: list[Action]) -> None:
        if phase is not Phase.BARRIER and phase is not Phase.REVALIDATING:
            self.barrier = None
        if phase in (Phase.ACTIVE, Phase.STANDBY):
            self.fenced = False
        self.phase = phase
        self._announce_role(detail, reason, out)

    def _announce_role(self, detail: str, reason: HaReason, out: list[Action]) -> None:
        self.detail = detail
        self.role = self._role()
        key = (self.role, self.phase, self.term)
        if key != self._announced or reason in (HaReason.HUB_LOST, HaReason.HUB_UNRESPONSIVE):
            self._announced = key
            out.append(RoleChanged(self.role, self.phase, self.term, reason, detail))

    def _role(self) -> HaRole:
        if self.stopped:
            return HaRole.STOPPED
        if self.leading:
            return HaRole.MASTER
        if self.coordinator_state in (HaRole.FAULT, HaRole.INIT):
            return HaRole(self.coordinator_state)
        return HaRole.BACKUP

    def _quiet_detail(self) -> str:
        if self.fenced:
            return (
                f"fenced by {self.highest_term_node} (term {self.highest_term}): "
                "waiting for the broker to go quiet"
            )
        return f"acquiring term {self.highest_term + 1}: waiting for the broker to go quiet"

    # ---- reading ----

    @property
    def publishing(self) -> bool:
        return self._gate is not None and self._gate.publishing

    def snapshot(self, now: float) -> CoreSnapshot:
        return snapshot_of(self, now)

    def switchover_refusal(self, now: float) -> Refusal | None:
        """Why a switchover asked now would be refused; None when it would go ahead."""
        return handover.may_hand_over(self, now)


def _differs(gate: SetGate, previous: SetGate | None) -> bool:
    """A change worth sending outside the periodic renewal: anything but the lease itself."""
    if previous is None:
        return True
    return (gate.publishing, gate.polling, gate.term, gate.hold_valueless) != (
        previous.publishing,
        previous.polling,
        previous.term,
        previous.hold_valueless,
    )


def _received(view: PeerView, now: float) -> PeerView:
    return replace(view, received_at=now)


_Handler = Callable[[HaCore, Any, float, list[Action]], None]
_HANDLERS: dict[type, _Handler] = {
    Leadership: HaCore._on_leadership,
    TokenGranted: HaCore._on_token,
    CoordinatorInfo: HaCore._on_info,
    HubReport: HaCore._on_report,
    HubLost: HaCore._on_hub_lost,
    HubConnected: HaCore._on_hub_connected,
    Delivered: HaCore._on_delivered,
    TermSeen: HaCore._on_term,
    Acked: HaCore._on_acked,
    Polled: HaCore._on_polled,
    TrimsApplied: HaCore._on_trimmed,
    BarrierDone: HaCore._on_barrier,
    PeerSeen: HaCore._on_peer,
    HandoverOffered: handover.on_offer,
    SwitchoverAsked: handover.on_switchover,
    Drained: handover.on_drained,
    HandoverAnswered: handover.on_answered,
    ShutdownAsked: handover.on_shutdown,
}
