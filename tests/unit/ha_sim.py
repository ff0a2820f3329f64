"""A simulated pair around two real HA cores: fake clock, fake hubs, a fake broker and VRRP.

Only the cores are real (`tandem.ha.core.HaCore`); everything around them is the smallest model
of the real parts that keeps their ordering rules: a broker that delivers in order to every
connected observer, an outbox per node, pollers on the slot grid, a VRRP election with the
master-down timer, priority-0 resign and FAULT, and a peer link. A subscriber audit on the
broker judges every scenario by the same rule as the netns tests: per stream, every slot once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tandem.ha.core import CoreConfig, HaCore
from tandem.ha.health import HealthPolicy
from tandem.ha.types import (
    Acked,
    Action,
    Announce,
    AnswerOffer,
    AnswerSwitchover,
    BarrierDone,
    Delivered,
    Drain,
    Drained,
    Fact,
    HandoverAnswered,
    HandoverOffered,
    HubLost,
    HubReport,
    Leadership,
    PeerSeen,
    PeerView,
    Polled,
    Refusal,
    Refused,
    Release,
    RequestBarrier,
    RequestToken,
    SendOffer,
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

KEY = "plc1/fast"
INTERVAL = 0.1  # group interval
ADVERT = 0.1
DOWN = 3 * ADVERT + 0.05  # master-down interval with skew
STEP = 0.01
TICK = 0.1


def core_config(node: str, priority: int, **kw: Any) -> CoreConfig:
    defaults: dict[str, Any] = {
        "node": node,
        "base_priority": priority,
        "standby": "hot",
        "recovery": "automatic",
        "health": HealthPolicy(priority, 30, 30, 0.3),
        "quiet_window": 3 * ADVERT,
        "peer_timeout": 0.5,
        "lease": 0.3,
        "hub_deadline": 1.0,
        "started_at": 1000.0 + priority,
    }
    defaults.update(kw)
    return CoreConfig(**defaults)


@dataclass
class SimNode:
    name: str
    priority: int
    core: HaCore
    term_store: int = 0
    alive: bool = True  # the whole node (kill -9 takes both processes)
    warden_frozen: bool = False  # SIGSTOP of the warden alone
    hub_frozen: bool = False  # SIGSTOP of the hub alone
    hub_up: bool = True
    devices_ok: bool = True
    vrrp: str = "BACKUP"
    fault: bool = False
    gate: SetGate | None = None
    outbox: dict[int, int] = field(default_factory=dict)  # slot -> term it was polled under
    floor: int = -1
    last_polled: int | None = None
    inbox: list[Fact] = field(default_factory=list)  # facts for the next step
    answers: list[Any] = field(default_factory=list)
    stopped: bool = False
    next_tick: float = 0.0

    @property
    def running(self) -> bool:
        return self.alive and not self.warden_frozen

    @property
    def hub_running(self) -> bool:
        return self.alive and self.hub_up and not self.hub_frozen


@dataclass
class SimPair:
    a: SimNode
    b: SimNode
    now: float = 100.0
    broker_up: bool = True
    link_up: bool = True  # the peer link and VRRP adverts between the nodes
    retained: tuple[int, str] | None = None
    audit: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    publishers: list[tuple[int, str, int]] = field(default_factory=list)  # (slot, node, term)
    silence: dict[str, float] = field(default_factory=dict)  # backup -> no master heard since
    log: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, **kw: Any) -> SimPair:
        a = SimNode("node-a", 100, HaCore(core_config("node-a", 100, **kw)))
        b = SimNode("node-b", 90, HaCore(core_config("node-b", 90, **kw)))
        return cls(a, b)

    @property
    def nodes(self) -> tuple[SimNode, SimNode]:
        return self.a, self.b

    def other(self, n: SimNode) -> SimNode:
        return self.b if n is self.a else self.a

    # ---- driving a core ----

    def feed(self, n: SimNode, fact: Fact) -> None:
        if not n.running:
            return
        for action in n.core.handle(fact, self.now):
            self.execute(n, action)

    def execute(self, n: SimNode, action: Action) -> None:
        other = self.other(n)
        if isinstance(action, SetGate):
            if n.hub_running:
                n.gate = action
        elif isinstance(action, Trim):
            if n.hub_running:
                slot = action.trims.get(KEY, -1)
                n.floor = max(n.floor, slot)
                n.outbox = {s: t for s, t in n.outbox.items() if s > slot}
                n.inbox.append(TrimsApplied(dict(action.trims)))
        elif isinstance(action, RequestBarrier):
            if n.hub_running:
                n.inbox.append(BarrierDone(action.barrier, self.broker_up))
        elif isinstance(action, RequestToken):
            n.term_store = max(n.term_store, action.at_least) + 1
            self.feed(n, TokenGranted(n.term_store))
        elif isinstance(action, Announce):
            if self.broker_up and n.hub_running:
                self.retained = (action.term, n.name)
                for peer in self.nodes:
                    peer.inbox.append(TermSeen(action.term, n.name))
        elif isinstance(action, Drain):
            n.inbox.append(Drained(action.drain))
        elif isinstance(action, SendOffer):
            self._offer(n, other, action)
        elif isinstance(action, Release):
            self.set_vrrp(n, "BACKUP", "resigned")
            if other.running and self.link_up and other.vrrp == "BACKUP":
                self.set_vrrp(other, "MASTER", "master sent priority 0", resigned=True)
        elif isinstance(action, SetPriority):
            self._set_priority(n, action)
        elif isinstance(action, AnswerOffer | AnswerSwitchover):
            n.answers.append(action)
        elif isinstance(action, Stopped):
            n.stopped = True

    def _offer(self, n: SimNode, other: SimNode, action: SendOffer) -> None:
        if not (self.link_up and other.running and other.hub_running):
            refusal = Refusal(Refused.PEER_UNREACHABLE, "peer unreachable")
            n.inbox.append(HandoverAnswered(action.offer, refusal))
            return
        before = len(other.answers)
        self.feed(other, HandoverOffered(900 + action.offer, action.handover))
        answers = [a for a in other.answers[before:] if isinstance(a, AnswerOffer)]
        refusal = answers[-1].refusal if answers else Refusal(Refused.TIMED_OUT, "no answer")
        n.inbox.append(HandoverAnswered(action.offer, refusal))

    def _set_priority(self, n: SimNode, action: SetPriority) -> None:
        n.fault = action.fault
        if action.fault and n.vrrp != "FAULT":
            was_master = n.vrrp == "MASTER"
            self.set_vrrp(n, "FAULT", "tracked check failed")
            other = self.other(n)
            if was_master and self.link_up and other.running and other.vrrp == "BACKUP":
                self.set_vrrp(other, "MASTER", "master sent priority 0", resigned=True)
        elif not action.fault and n.vrrp == "FAULT":
            self.set_vrrp(n, "BACKUP", "checks recovered")

    def set_vrrp(self, n: SimNode, state: str, why: str, resigned: bool = False) -> None:
        if n.vrrp == state:
            return
        old, n.vrrp = n.vrrp, state
        self.log.append(f"{self.now:.2f} {n.name} VRRP {old} -> {state} ({why})")
        self.feed(
            n,
            Leadership(state == "MASTER", state, f"VRRP {old} -> {state} ({why})", resigned),
        )

    # ---- the world ----

    def start(self) -> None:
        for n in self.nodes:
            self.feed(n, Leadership(False, "BACKUP", "VRRP INIT -> BACKUP (startup)"))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + STEP, 6)
            self._step()

    def _step(self) -> None:
        for n in self.nodes:
            self._poll(n)
        self._vrrp()
        for n in self.nodes:
            if n.running:
                inbox, n.inbox = n.inbox, []
                for fact in inbox:
                    self.feed(n, fact)
            self._publish(n)
            if self.now >= n.next_tick:
                n.next_tick = self.now + TICK
                self._tick(n)

    def _tick(self, n: SimNode) -> None:
        other = self.other(n)
        if n.hub_running and n.running:
            checks = {"loops": True, "devices": n.devices_ok, "broker": self.broker_up}
            n.inbox.append(HubReport(checks, {}, None, self.broker_up, True))
            publishing = self.gate_open(n)
            if publishing and self.broker_up:
                for peer in self.nodes:
                    if peer is not n:
                        peer.inbox.append(TermSeen(n.gate.term if n.gate else 0, n.name, True))
            if self.link_up and other.running:
                other.inbox.append(PeerSeen(self.view(n, publishing)))
        self.feed(n, Tick())

    def view(self, n: SimNode, publishing: bool) -> PeerView:
        snap = n.core.snapshot(self.now)
        return PeerView(
            node=n.name,
            role=snap.role.value,
            coordinator_state=n.vrrp,
            publishing=publishing,
            term=snap.term,
            priority=n.priority,
            base_priority=n.priority,
            standby="hot",
            watermarks=snap.watermarks,
            buffer_from=snap.buffer_from,
            healthy=snap.healthy,
            started_at=n.core.cfg.started_at,
            received_at=self.now,
        )

    def _poll(self, n: SimNode) -> None:
        if not n.hub_running:
            return
        polling = n.gate.polling if n.gate is not None else True
        slot = math.floor(self.now / INTERVAL + 1e-6)
        if not polling or slot == n.last_polled:
            return
        n.last_polled = slot
        if slot > n.floor:
            n.outbox[slot] = 0
            if n.running:
                n.inbox.append(Polled({KEY: (slot, slot)}))

    def gate_open(self, n: SimNode) -> bool:
        g = n.gate
        return bool(g and g.publishing and self.now < g.lease_until and n.hub_running)

    def _publish(self, n: SimNode) -> None:
        if not (self.gate_open(n) and self.broker_up):
            return
        assert n.gate is not None
        for slot in sorted(n.outbox):
            if not n.devices_ok and n.gate.hold_valueless:
                break
            self.audit[KEY].append(slot)
            self.publishers.append((slot, n.name, n.gate.term))
            del n.outbox[slot]
            n.inbox.append(Acked({KEY: slot}))
            for peer in self.nodes:
                if peer.hub_running:
                    peer.inbox.append(Delivered(((KEY, slot, n.gate.term, n.name),)))

    def _vrrp(self) -> None:
        """A backup that hears no master for the down interval takes over."""
        for n in self.nodes:
            other = self.other(n)
            if not n.running or n.vrrp != "BACKUP":
                self.silence.pop(n.name, None)
                continue
            if self.link_up and other.running and other.vrrp == "MASTER":
                self.silence.pop(n.name, None)
                continue
            since = self.silence.setdefault(n.name, self.now)
            if self.now - since >= DOWN:
                del self.silence[n.name]
                self.set_vrrp(n, "MASTER", "master down timer expired")
        self._resolve_two_masters()

    def _resolve_two_masters(self) -> None:
        """Two masters that hear each other: the lower priority yields (nopreempt or not)."""
        a, b = self.a, self.b
        if self.link_up and a.running and b.running and a.vrrp == b.vrrp == "MASTER":
            low = b if b.priority < a.priority else a
            self.set_vrrp(low, "BACKUP", "higher priority advert")

    # ---- faults ----

    def kill(self, n: SimNode) -> None:
        n.alive = False
        n.vrrp = "DOWN"

    def restart(self, n: SimNode) -> None:
        n.core = HaCore(core_config(n.name, n.priority, term=n.term_store))
        n.alive, n.hub_up, n.warden_frozen, n.hub_frozen = True, True, False, False
        n.vrrp, n.gate, n.fault, n.inbox, n.next_tick = "INIT", None, False, [], 0.0
        n.last_polled = None
        self.set_vrrp(n, "BACKUP", "startup")
        if self.retained is not None:
            n.inbox.append(TermSeen(*self.retained))

    def hub_crash(self, n: SimNode) -> None:
        n.hub_up, n.gate = False, None
        self.feed(n, HubLost())

    def switchover(self, n: SimNode, request: int = 1) -> None:
        self.feed(n, SwitchoverAsked(request))

    def shutdown(self, n: SimNode) -> None:
        self.feed(n, ShutdownAsked())

    # ---- verdicts ----

    def lost_and_duplicates(self, since_slot: int | None = None) -> tuple[list[int], list[int]]:
        slots = [s for s in self.audit[KEY] if since_slot is None or s >= since_slot]
        seen: set[int] = set()
        dups = []
        for s in slots:
            if s in seen:
                dups.append(s)
            seen.add(s)
        lost = [s for s in range(min(seen), max(seen) + 1) if s not in seen] if seen else []
        return lost, dups

    def publisher_of_newest(self) -> str:
        return self.publishers[-1][1]

    def masters_publishing(self) -> list[str]:
        return [n.name for n in self.nodes if self.gate_open(n)]
