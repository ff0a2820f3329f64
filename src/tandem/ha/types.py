"""The vocabulary of the HA core: roles, phases, reasons, refusals, the facts it consumes and
the actions it emits.

Everything here is a frozen value with no behaviour beyond small derived properties: the core
(`ha/core.py`) turns facts into actions, the shells (the warden process and the hub process)
turn actions into I/O. The same types travel over the local channel between the two processes
(`ha/channel.py`), so each is plain data: str, int, float, bool, dicts and tuples of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Key = str  # "device/group": a sample stream; with a slot it names one sample
StandbyMode = Literal["hot", "warm", "cold"]
RecoveryMode = Literal["automatic", "manual"]


def stream_key(device: str, group: str) -> Key:
    return f"{device}/{group}"


def split_key(key: Key) -> tuple[str, str]:
    device, _, group = key.partition("/")
    return device, group


class HaRole(StrEnum):
    """What an operator (and the `tandem_role` metric) sees: a small, fixed set."""

    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOPPED = "STOPPED"


class Phase(StrEnum):
    """Where a node is on the way to (or from) publishing; the detail behind the role."""

    STANDBY = "standby"  # not the coordinator's leader
    BARRIER = "barrier"  # leader; draining what the broker already sent us
    QUIET = "quiet"  # leader; waiting until no other node is active on the broker
    ACQUIRING = "acquiring"  # leader; a fencing token was requested
    ACTIVE = "active"  # publishing under the highest term
    REVALIDATING = "revalidating"  # was active, but our lease lapsed (frozen): barrier again
    HANDING_OVER = "handing_over"  # publishing stopped; the peer is taking over


class HaReason(StrEnum):
    """Why the role or phase changed: exactly one per change, the log line and the timeline."""

    STARTUP = "startup"
    ELECTED = "elected"  # the coordinator made us leader (VRRP MASTER)
    LOST_ELECTION = "lost_election"  # the coordinator says someone else leads
    COORDINATOR_STATE = "coordinator_state"  # e.g. VRRP BACKUP -> FAULT, still not leading
    BARRIER_PASSED = "barrier_passed"
    BROKER_QUIET = "broker_quiet"
    HANDOVER_EXPECTED = "handover_expected"  # the old master handed over: no quiet wait
    TERM_ACQUIRED = "term_acquired"
    HIGHER_TERM_SEEN = "higher_term_seen"
    LEASE_LAPSED = "lease_lapsed"  # our own process did not run for longer than the lease
    REVALIDATED = "revalidated"
    HANDOVER_STARTED = "handover_started"
    HANDOVER_FAILED = "handover_failed"
    HANDED_OVER = "handed_over"
    HUB_LOST = "hub_lost"
    HUB_UNRESPONSIVE = "hub_unresponsive"
    HUB_BACK = "hub_back"
    SHUTDOWN = "shutdown"


class HandoverCause(StrEnum):
    """Why a master moves its role to the peer on purpose."""

    SWITCHOVER = "operator_switchover"
    SWITCHBACK = "preferred_master_back"
    PEER_HEALTHIER = "peer_healthier"
    SHUTDOWN = "shutdown"


class Refused(StrEnum):
    """Why a handover, a switchover or a takeover was refused."""

    NOT_BACKUP = "not_backup"
    NOT_HEALTHY = "not_healthy"
    CONFIG_DIFFERS = "config_differs"
    BUFFER_GAP = "buffer_gap"
    UNKNOWN_PEER = "unknown_peer"
    STALE_TERM = "stale_term"
    NOT_ACTIVE_MASTER = "not_active_master"
    HANDOVER_RUNNING = "handover_running"
    PEER_LINK_DOWN = "peer_link_down"
    PEER_NOT_BACKUP = "peer_not_backup"
    PEER_NOT_HEALTHY = "peer_not_healthy"
    PEER_BUFFER_GAP = "peer_buffer_gap"
    PEER_REFUSED = "peer_refused"
    PEER_UNREACHABLE = "peer_unreachable"
    TIMED_OUT = "timed_out"
    LEADERSHIP_LOST = "leadership_lost"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal: the typed reason for programs, the detail for people."""

    reason: Refused
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the peer last told us (over the peer link), and when, on our monotonic clock."""

    node: str
    role: str  # its HaRole value
    coordinator_state: str  # e.g. its VRRP state
    publishing: bool
    term: int
    priority: int
    base_priority: int
    standby: str
    watermarks: dict[Key, int]
    buffer_from: dict[Key, int]
    healthy: bool
    started_at: float
    config_version: int = 0
    config_sha: str = ""
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class HandoverOffer:
    """A master that stopped after `watermarks` asks its peer to continue from there."""

    from_node: str
    term: int
    watermarks: dict[Key, int]
    manual: bool = False
    reason: str = ""


# ---- facts: what the core is told --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: timers, the lease and periodic decisions."""


@dataclass(frozen=True, slots=True)
class Leadership:
    """The coordinator's verdict: may this node lead? `state` and `detail` are for people."""

    leading: bool
    state: str  # e.g. the VRRP state: BACKUP, MASTER, FAULT
    detail: str = ""
    resigned_peer: bool = False  # the previous leader resigned on purpose (VRRP priority 0)


@dataclass(frozen=True, slots=True)
class TokenGranted:
    """A fencing token (term) for the current leadership, persisted before it was granted."""

    term: int


@dataclass(frozen=True, slots=True)
class CoordinatorInfo:
    """Read-only coordinator facts for status: priority, adverts, drops (not decisions)."""

    priority: int
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubReport:
    """The hub's raw health, sent every health interval; silence past a deadline is a fault."""

    checks: dict[str, bool]
    reasons: dict[str, str] = field(default_factory=dict)
    holding_since: float | None = None  # monotonic: since when valueless rows are held back
    observer_ready: bool = False
    config_ok: bool = True


@dataclass(frozen=True, slots=True)
class HubLost:
    """The hub process ended (its channel closed)."""


@dataclass(frozen=True, slots=True)
class HubConnected:
    """A (new) hub process is listening: it knows nothing yet, tell it everything again."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """Data messages seen on the broker (signed, checked): those slots are delivered."""

    items: tuple[tuple[Key, int, int, str], ...]  # (key, slot, term, source node)


@dataclass(frozen=True, slots=True)
class TermSeen:
    """A term announced somewhere: retained state, a heartbeat (`active`), the peer link."""

    term: int
    node: str
    active: bool = False  # a publishing master's heartbeat: counts as activity on the broker


@dataclass(frozen=True, slots=True)
class Acked:
    """Our own publishes the broker acknowledged: the highest slot per stream."""

    slots: dict[Key, int]


@dataclass(frozen=True, slots=True)
class Polled:
    """Samples our pollers stored: (first, last) slot per stream since the previous report."""

    slots: dict[Key, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class TrimsApplied:
    """The hub deleted these delivered slots from its outbox (only now do they count)."""

    trims: dict[Key, int]


@dataclass(frozen=True, slots=True)
class BarrierDone:
    barrier: int
    ok: bool


@dataclass(frozen=True, slots=True)
class PeerSeen:
    view: PeerView


@dataclass(frozen=True, slots=True)
class HandoverOffered:
    """The peer asks us to take over (request id for the answer)."""

    request: int
    offer: HandoverOffer


@dataclass(frozen=True, slots=True)
class SwitchoverAsked:
    """An operator asks this node (the active master) to hand its role to the peer."""

    request: int


@dataclass(frozen=True, slots=True)
class Drained:
    """Publishing is off and every in-flight publish got its PUBACK (or the wait timed out)."""

    drain: int


@dataclass(frozen=True, slots=True)
class HandoverAnswered:
    """The peer's answer to our offer; `refusal` is None when it accepted."""

    offer: int
    refusal: Refusal | None


@dataclass(frozen=True, slots=True)
class ShutdownAsked:
    """A planned stop (SIGTERM): hand over if we are the active master, then stop."""


Fact = (
    Tick
    | Leadership
    | TokenGranted
    | CoordinatorInfo
    | HubReport
    | HubLost
    | HubConnected
    | Delivered
    | TermSeen
    | Acked
    | Polled
    | TrimsApplied
    | BarrierDone
    | PeerSeen
    | HandoverOffered
    | SwitchoverAsked
    | Drained
    | HandoverAnswered
    | ShutdownAsked
)


# ---- actions: what the core asks for -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetGate:
    """What the hub may do. Publishing also needs `now < lease_until` on the hub's clock."""

    publishing: bool
    polling: bool
    term: int
    lease_until: float
    hold_valueless: bool  # keep back rows without values: the hot peer has them


@dataclass(frozen=True, slots=True)
class Trim:
    """Delete delivered slots (through `slot`, per stream) from the outbox; drop later ones."""

    trims: dict[Key, int]


@dataclass(frozen=True, slots=True)
class RequestBarrier:
    barrier: int


@dataclass(frozen=True, slots=True)
class RequestToken:
    """Ask the coordinator for a fencing token above every term seen (`at_least`)."""

    at_least: int


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish the retained cluster state: `node` holds `term`."""

    term: int


@dataclass(frozen=True, slots=True)
class Drain:
    drain: int


@dataclass(frozen=True, slots=True)
class SendOffer:
    offer: int
    handover: HandoverOffer


@dataclass(frozen=True, slots=True)
class Release:
    """Give up leadership now, on purpose (VRRP: one priority-0 advert)."""

    detail: str


@dataclass(frozen=True, slots=True)
class SetPriority:
    """Health as the coordinator sees it: fault, and the change of priority from the base."""

    fault: bool
    delta: int


@dataclass(frozen=True, slots=True)
class AnswerOffer:
    request: int
    refusal: Refusal | None


@dataclass(frozen=True, slots=True)
class AnswerSwitchover:
    request: int
    refusal: Refusal | None
    to: str = ""
    watermarks: dict[Key, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """One decision, one reason: the log line, the timeline entry, the status push."""

    role: HaRole
    phase: Phase
    term: int
    reason: HaReason
    detail: str


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """Something only a forger or a bug can cause; logged once, counted."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The planned stop may proceed (after a handover, or at once)."""


Action = (
    SetGate
    | Trim
    | RequestBarrier
    | RequestToken
    | Announce
    | Drain
    | SendOffer
    | Release
    | SetPriority
    | AnswerOffer
    | AnswerSwitchover
    | RoleChanged
    | SecurityEvent
    | Stopped
)
