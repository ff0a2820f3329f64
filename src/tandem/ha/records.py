"""The HA core's records: its configuration, a handover in progress, the last failover, and
the snapshot status pages and the peer link read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tandem.ha import policy
from tandem.ha.health import HealthPolicy
from tandem.ha.types import (
    HandoverCause,
    HaRole,
    Key,
    PeerView,
    Phase,
    RecoveryMode,
    Refusal,
    StandbyMode,
)

if TYPE_CHECKING:
    from tandem.ha.core import HaCore


@dataclass(frozen=True, slots=True)
class CoreConfig:
    node: str
    base_priority: int
    standby: StandbyMode
    recovery: RecoveryMode
    health: HealthPolicy
    quiet_window: float  # broker quiet needed before a token; 0 if the coordinator is exclusive
    peer_timeout: float  # a peer state older than this is not current
    lease: float  # how long a gate stays open without the core running
    hub_deadline: float  # a hub silent for this long is a fault
    started_at: float  # wall-clock start, so the peer can tell our restarts apart
    term: int = 0  # the highest term this node ever acquired (persisted)
    hold_max: float = 2.0  # the longest a master keeps back valueless rows for a hot peer
    drain_timeout: float = 1.5
    offer_timeout: float = 5.0
    expect_handover_s: float = 3.0
    barrier_timeout: float = 1.5


@dataclass(slots=True)
class HandoverRun:
    """One planned move in progress: drain, offer, release, each step with a deadline."""

    cause: HandoverCause
    manual: bool
    reply: int | None  # the switchover request to answer when it ends
    step: str  # "drain" | "offer" | "release"
    ident: int
    deadline: float


@dataclass(slots=True)
class Failover:
    """The last time this node took over, for status (monotonic times; the shell converts)."""

    at: float
    term: int
    reason: str
    previous: str | None
    quiet_s: float | None
    resumed_after: dict[Key, int]
    gap_from: float | None = None
    gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class CoreSnapshot:
    """What status pages and the peer link show of this node; a copy, never live state."""

    node: str
    role: HaRole
    phase: Phase
    detail: str
    term: int
    highest_term: int
    highest_term_node: str
    coordinator_state: str
    publishing: bool
    healthy: bool
    checks: dict[str, bool]
    reasons: dict[str, str]
    priority: int
    base_priority: int
    standby: str
    started_at: float
    watermarks: dict[Key, int]
    buffer_from: dict[Key, int]
    watermark_lag: int | None
    peer: PeerView | None
    peer_fresh: bool
    last_failover: Failover | None
    spurious_takeovers: int
    coordinator: dict[str, object]
    # On the active master: why a switchover would be refused now (None: it would go ahead).
    switchover_refusal: Refusal | None = None


def snapshot_of(core: HaCore, now: float) -> CoreSnapshot:
    assert core.health is not None
    return CoreSnapshot(
        node=core.cfg.node,
        role=core.role,
        phase=core.phase,
        detail=core.detail,
        term=core.term,
        highest_term=core.highest_term,
        highest_term_node=core.highest_term_node,
        coordinator_state=core.coordinator_state,
        publishing=core.publishing,
        healthy=core.health.healthy,
        checks=dict(core.health.checks),
        reasons=dict(core.health.reasons),
        priority=core.priority,
        base_priority=core.cfg.base_priority,
        standby=core.cfg.standby,
        started_at=core.cfg.started_at,
        watermarks=dict(core.marks.delivered),
        buffer_from=dict(core.marks.buffer_from),
        watermark_lag=core.marks.lag(),
        peer=core.peer,
        peer_fresh=policy.peer_fresh(core.peer, now, core.cfg.peer_timeout),
        last_failover=core.failover,
        spurious_takeovers=core.spurious_takeovers,
        coordinator=dict(core.coordinator),
        switchover_refusal=core.switchover_refusal(now),
    )
