"""The pure rules behind planned role moves: is the peer ready, may we accept, should we move.

Each rule takes values and returns a typed answer (a `Refusal`, a `HandoverCause`, or None), so
the core stays a sequence of steps and every rule is testable on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from tandem.ha.types import HandoverCause, HandoverOffer, HaRole, Key, PeerView, Refusal, Refused
from tandem.ha.watermarks import uncovered


def peer_fresh(peer: PeerView | None, now: float, timeout: float) -> bool:
    return peer is not None and now - peer.received_at <= timeout


def peer_ready(
    peer: PeerView | None, now: float, timeout: float, delivered: Mapping[Key, int]
) -> Refusal | None:
    """Why the peer could not take over now without a gap or a duplicate; None if it can."""
    if peer is None or not peer_fresh(peer, now, timeout):
        return Refusal(Refused.PEER_LINK_DOWN, "no current state from the peer")
    if peer.role != HaRole.BACKUP:
        return Refusal(Refused.PEER_NOT_BACKUP, f"peer {peer.node} is {peer.role}")
    if not peer.healthy:
        return Refusal(Refused.PEER_NOT_HEALTHY, f"peer {peer.node} is not healthy")
    if peer.standby == "hot":
        missing = uncovered(peer.buffer_from, delivered)
        if missing:
            return Refusal(
                Refused.PEER_BUFFER_GAP, f"peer {peer.node} buffer does not cover {missing}"
            )
    return None


def offer_refusal(
    offer: HandoverOffer,
    *,
    node: str,
    role: HaRole,
    healthy: bool,
    config_ok: bool,
    peer: PeerView | None,
    highest_term: int,
    buffer_from: Mapping[Key, int],
    hot: bool,
) -> Refusal | None:
    """Why this node must not take over from `offer`; None when it can continue exactly."""
    if role != HaRole.BACKUP:
        return Refusal(Refused.NOT_BACKUP, f"{node} is {role}, not BACKUP")
    if peer is not None and offer.from_node != peer.node:
        return Refusal(
            Refused.UNKNOWN_PEER, f"offer from {offer.from_node!r}, our peer is {peer.node!r}"
        )
    if offer.term < highest_term:
        return Refusal(
            Refused.STALE_TERM, f"offer under term {offer.term}, term {highest_term} is known"
        )
    if not healthy:
        return Refusal(Refused.NOT_HEALTHY, f"{node} is not healthy")
    if not config_ok:
        differs = f"{node}: config differs from the master's (require_same_config)"
        return Refusal(Refused.CONFIG_DIFFERS, differs)
    missing = uncovered(buffer_from, offer.watermarks)
    if hot and missing:
        return Refusal(Refused.BUFFER_GAP, f"{node} has no buffer from the watermark for {missing}")
    return None


def switchback_cause(
    *,
    healthy: bool,
    base_priority: int,
    automatic: bool,
    peer: PeerView,
    recovered_for: float | None,
) -> HandoverCause | None:
    """Whether an active master whose peer is ready should move its role now, and why."""
    if not healthy and peer.healthy and peer.standby in ("hot", "warm"):
        # The side that can still do the work wins, whatever the configured priorities. Only
        # a hot or warm peer has shown it reaches the devices (a cold one never connects).
        return HandoverCause.PEER_HEALTHIER
    if automatic and peer.base_priority > base_priority and recovered_for != peer.started_at:
        return HandoverCause.SWITCHBACK
    return None
