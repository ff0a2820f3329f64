"""The coordinator contract, and its first implementation: a VRRP pair with a persisted term.

A coordinator answers the questions the HA core asks of the world outside the data path, the
way Patroni's HA loop talks to its `AbstractDCS`:

- **who may lead**: it reports `Leadership(leading, state, detail)` whenever that changes;
- **the fencing token**: `request_token(at_least)` grants a term above every term seen, durable
  before it is granted (`TokenGranted`); `exclusive` says whether the coordinator itself
  guarantees that no one else holds a valid token at the same time (a consensus lease does;
  a VRRP pair does not, so the core adds the broker-quiet rule);
- **what the peers said**: peer views arrive as `PeerSeen` facts (the pair's peer link; a
  consensus store's member keys);
- **handover**: `send_offer` gives the chosen peer our watermarks, `release` gives up
  leadership on purpose; `set_priority` tells it our health.

The core never learns which coordinator it has. Facts go through `emit`, in order, on the
warden's event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from tandem.ha.term import TermStore
from tandem.ha.types import (
    CoordinatorInfo,
    Fact,
    HandoverOffer,
    Leadership,
    TokenGranted,
)
from tandem.net.driver import VrrpDriver
from tandem.vrrp.types import ChecksChanged, Reason, State, Transition

log = logging.getLogger(__name__)

Emit = Callable[[Fact], None]


class PeerLink(Protocol):
    """Where a pair's handover offers travel (the hub process carries the HTTP peer link)."""

    def send_offer(self, offer_id: int, offer: HandoverOffer) -> None: ...


class Coordinator(Protocol):
    """What the HA core's shell needs of a coordination mechanism; see the module docstring."""

    exclusive: bool

    def attach(self, emit: Emit) -> None:
        """Where facts go; called once, before the coordinator runs."""

    async def run(self) -> None:
        """Take part in the election until `stop()` (or cancellation, which also resigns)."""

    def request_token(self, at_least: int) -> None: ...

    def send_offer(self, offer_id: int, offer: HandoverOffer) -> None: ...

    def release(self, detail: str) -> None: ...

    def set_priority(self, fault: bool, delta: int) -> None: ...

    def info(self) -> CoordinatorInfo: ...

    def stop(self) -> None: ...


class VrrpPair:
    """Two nodes: VRRP elects, a term persisted on this node fences, the peer link hands over."""

    exclusive = False

    def __init__(self, driver: VrrpDriver, terms: TermStore, peer_link: PeerLink) -> None:
        self.driver = driver
        self.terms = terms
        self.peer_link = peer_link
        self._emit: Emit | None = None
        driver.on_transition = self._on_transition

    def attach(self, emit: Emit) -> None:
        self._emit = emit

    async def run(self) -> None:
        await self.driver.run()

    def _on_transition(self, t: Transition) -> None:
        detail = f": {t.detail}" if t.detail else ""
        assert self._emit is not None
        self._emit(
            Leadership(
                leading=t.new is State.MASTER,
                state=t.new.value,
                detail=f"VRRP {t.old.value} -> {t.new.value} ({t.reason.value}{detail})",
                resigned_peer=t.reason is Reason.MASTER_RESIGNED,
            )
        )

    def request_token(self, at_least: int) -> None:
        # Persisted (fsync) before it is granted: a restart can never reuse a term.
        term = self.terms.acquire(at_least)
        assert self._emit is not None
        self._emit(TokenGranted(term))

    def send_offer(self, offer_id: int, offer: HandoverOffer) -> None:
        self.peer_link.send_offer(offer_id, offer)

    def release(self, detail: str) -> None:
        self.driver.resign(detail)

    def set_priority(self, fault: bool, delta: int) -> None:
        self.driver.checks_changed(ChecksChanged(fault=fault, priority_delta=delta))

    def info(self) -> CoordinatorInfo:
        d = self.driver
        stats = d.stats
        counts = getattr(stats, "transition_counts", None)
        if counts is None:
            counts = {}
            for t in stats.transitions:
                counts[t.reason.value] = counts.get(t.reason.value, 0) + 1
        return CoordinatorInfo(
            priority=d.machine.effective_priority,
            detail={
                "kind": "vrrp",
                "state": d.state.value,
                "master": str(d.machine.master_address) if d.machine.master_address else None,
                "adverts_sent": stats.adverts_sent,
                "adverts_received": stats.adverts_received,
                "drops": dict(stats.drops),
                "mismatched_peers": dict(stats.mismatched_peers),
                "transitions": dict(counts),
            },
        )

    def stop(self) -> None:
        self.driver.stop()


__all__ = ["Coordinator", "Emit", "PeerLink", "VrrpPair"]
