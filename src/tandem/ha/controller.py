"""HA decisions, sans I/O: who publishes, from which slot, and when the role should move.

Inputs are facts (VRRP role, what the peer said, what the broker carried, what our publisher
got acknowledged); the output is a `Plan` the node applies. Three rules carry the guarantees:

- Exactly-once across failover: a slot is delivered once it is on the broker. Every node
  tracks, per device group, the highest slot delivered (its *watermark*) from the broker
  itself (it subscribes to the data topics), from its own PUBACKs and from the peer link; a
  new master trims its buffer to the watermark and publishes the rest, in slot order.
- Fencing: publishing needs a term acquired for this mastership that is the highest known.
  A master that learns of a higher term stops at once. A VRRP master only acquires a term
  when no other node has been active on the broker for `fence_window` (3 adverts), so a
  partition of the heartbeat link alone never makes two publishers.
- Handover: planned role moves (switchback, switchover, a healthier peer) stop publishing,
  report the watermarks to the peer, then resign VRRP; the peer resumes at watermark + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Key = str  # "device/group": a sample stream's identity together with its slot
StandbyMode = Literal["hot", "warm", "cold"]


def stream_key(device: str, group: str) -> Key:
    return f"{device}/{group}"


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the peer last told us over the peer link, and when (our monotonic clock)."""

    node: str
    vrrp: str
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
class Plan:
    """What the node must do now. `acquire` asks for a new persisted term first."""

    publishing: bool
    polling: bool
    acquire: bool
    trims: dict[Key, int]
    handover: str | None  # a reason, when the role should move to the peer now
    label: str  # a readable role for status: MASTER, BACKUP, MASTER (fenced), ...


@dataclass(slots=True)
class HaController:
    node: str
    base_priority: int
    standby: StandbyMode
    recovery: Literal["automatic", "manual"]
    fence_window: float
    peer_timeout: float
    term: int = 0
    started_at: float = 0.0

    vrrp: str = "INIT"
    priority: int = 0
    healthy: bool = True
    observer_ready: bool = False
    config_ok: bool = True  # require_same_config: False while the master's config differs
    holding: bool = False  # a term acquired for the current mastership
    handing_over: bool = False
    highest_term: int = 0
    highest_term_node: str = ""
    watermarks: dict[Key, int] = field(default_factory=dict)
    buffer_from: dict[Key, int] = field(default_factory=dict)
    peer: PeerView | None = None
    last_foreign_activity: float = float("-inf")
    expect_handover_until: float = float("-inf")
    recovered_for: float | None = None  # the peer start we already handed back to
    _trimmed: dict[Key, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.highest_term = self.term
        self.highest_term_node = self.node
        self.priority = self.base_priority

    # ---- facts ----

    def vrrp_changed(self, state: str) -> None:
        self.vrrp = state
        if state != "MASTER":
            self.holding = False

    def term_acquired(self, term: int) -> None:
        self.term = term
        self.holding = True
        self.expect_handover_until = float("-inf")
        if term >= self.highest_term:
            self.highest_term, self.highest_term_node = term, self.node

    def learn_term(self, term: int, node: str) -> None:
        """Any sight of a term: the peer link, a data message, the retained state topic."""
        if term > self.highest_term:
            self.highest_term, self.highest_term_node = term, node

    def observed(self, key: Key, slot: int, term: int, source_node: str, now: float) -> None:
        """A data message seen on the broker: that slot is delivered, whoever sent it."""
        self._advance(key, slot)
        self.learn_term(term, source_node)
        if source_node != self.node:
            self.last_foreign_activity = now

    def heartbeat(self, term: int, node: str, now: float) -> None:
        """A publishing master's heartbeat on the broker (sent every advert interval)."""
        self.learn_term(term, node)
        if node != self.node:
            self.last_foreign_activity = now

    def acked(self, key: Key, slot: int) -> None:
        self._advance(key, slot)

    def polled(self, key: Key, slot: int) -> None:
        self.buffer_from.setdefault(key, slot)

    def polling_stopped(self) -> None:
        """A gap in our own polling: our buffer no longer covers anything before now."""
        self.buffer_from.clear()

    def peer_update(self, view: PeerView) -> None:
        self.peer = view
        self.learn_term(view.term, view.node)
        if view.publishing:
            for key, slot in view.watermarks.items():
                self._advance(key, slot)

    def _advance(self, key: Key, slot: int) -> None:
        if slot > self.watermarks.get(key, -1):
            self.watermarks[key] = slot

    # ---- handover, receiving side ----

    def accept_handover(
        self, from_node: str, term: int, watermarks: dict[Key, int], manual: bool, now: float
    ) -> tuple[bool, str]:
        """The master stopped after `watermarks` and asks us to take over from there."""
        if self.vrrp != "BACKUP":
            return False, f"{self.node} is {self.vrrp}, not BACKUP"
        if not self.healthy:
            return False, f"{self.node} is not healthy"
        if not self.config_ok:
            return False, f"{self.node}: config differs from the master's (require_same_config)"
        missing = self.uncovered(watermarks)
        if missing and self.standby == "hot":
            return False, f"{self.node} has no buffer from the watermark for {missing}"
        for key, slot in watermarks.items():
            self._advance(key, slot)
        self.learn_term(term, from_node)
        self.expect_handover_until = now + 3.0
        if manual and self.peer is not None:
            # An operator chose this node: do not hand straight back to the preferred one.
            self.recovered_for = self.peer.started_at
        return True, "accepted"

    def uncovered(self, watermarks: dict[Key, int]) -> list[Key]:
        """Streams whose next slot after the watermark we did not buffer ourselves."""
        return sorted(
            key
            for key, slot in watermarks.items()
            if key not in self.buffer_from or self.buffer_from[key] > slot + 1
        )

    # ---- handover, sending side ----

    def peer_fresh(self, now: float) -> bool:
        return self.peer is not None and now - self.peer.received_at <= self.peer_timeout

    def peer_ready(self, now: float) -> tuple[bool, str]:
        """Whether the peer could take over now without a gap or a duplicate."""
        peer = self.peer
        if peer is None or not self.peer_fresh(now):
            return False, "peer link down"
        if peer.vrrp != "BACKUP":
            return False, f"peer is {peer.vrrp}"
        if not peer.healthy:
            return False, "peer is not healthy"
        if peer.standby == "hot":
            missing = sorted(
                key
                for key, slot in self.watermarks.items()
                if key not in peer.buffer_from or peer.buffer_from[key] > slot + 1
            )
            if missing:
                return False, f"peer buffer does not cover {missing}"
        return True, "ready"

    def switchback_reason(self, now: float) -> str | None:
        """Automatic recovery or a healthier peer: why the role should move now, if it should."""
        if not (self.vrrp == "MASTER" and self.holding) or self.handing_over:
            return None
        peer = self.peer
        ready, _ = self.peer_ready(now)
        if peer is None or not ready:
            return None
        if not self.healthy and peer.healthy and peer.standby in ("hot", "warm"):
            # The side that can still do the work wins, whatever the configured priorities.
            # Only a hot or warm peer has shown it reaches the devices (a cold one never
            # connects), and a hot one holds the same slots, so the move costs nothing.
            return f"peer {peer.node} is healthier (priority {peer.priority} vs {self.priority})"
        if (
            self.recovery == "automatic"
            and peer.base_priority > self.base_priority
            and self.recovered_for != peer.started_at
        ):
            return f"preferred master {peer.node} is back and ready"
        return None

    # ---- the decision ----

    def plan(self, now: float) -> Plan:
        master = self.vrrp == "MASTER"
        fenced = self.highest_term > self.term and self.highest_term_node != self.node
        if fenced:
            self.holding = False
        foreign_quiet = now - self.last_foreign_activity >= self.fence_window
        expecting = now < self.expect_handover_until
        acquire = (
            master
            and not self.holding
            and not self.handing_over
            and self.observer_ready
            and self.config_ok
            and (foreign_quiet or expecting)
        )
        publishing = master and self.holding and not self.handing_over and self.observer_ready
        polling = self.healthy_polling(master)
        trims = {k: s for k, s in self.watermarks.items() if self._trimmed.get(k) != s}
        self._trimmed.update(trims)
        handover = self.switchback_reason(now)
        if master and self.holding:
            label = "MASTER"
        elif master and fenced:
            label = f"MASTER (fenced by {self.highest_term_node}, term {self.highest_term})"
        elif master:
            label = "MASTER (waiting for the broker to go quiet)"
        else:
            label = self.vrrp
        return Plan(publishing, polling, acquire, trims, handover, label)

    def healthy_polling(self, master: bool) -> bool:
        """Hot standby polls all the time; warm and cold only poll while master."""
        return master or self.standby == "hot"
