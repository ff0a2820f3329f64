"""Planned role moves, both sides, as steps of the HA core (functions over its state).

Sending: a master that should move (operator switchover, the preferred master back, a
healthier peer, shutdown) stops publishing, drains its PUBACKs, offers the peer its
watermarks and releases leadership once the peer accepted; each step has a deadline.
Receiving: a backup accepts an offer only if it can continue exactly from the watermarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.ha import policy
from tandem.ha.records import HandoverRun
from tandem.ha.types import (
    Action,
    AnswerOffer,
    AnswerSwitchover,
    Drain,
    Drained,
    HandoverAnswered,
    HandoverCause,
    HandoverOffer,
    HandoverOffered,
    HaReason,
    Phase,
    Refusal,
    Refused,
    Release,
    SendOffer,
    ShutdownAsked,
    SwitchoverAsked,
)

if TYPE_CHECKING:
    from tandem.ha.core import HaCore


def on_offer(core: HaCore, fact: HandoverOffered, now: float, out: list[Action]) -> None:
    offer = fact.offer
    refusal = refuse_offer(core, offer)
    if refusal is None:
        core.marks.merge(offer.watermarks)
        core._learn_term(offer.term, offer.from_node, out)
        core.expect_handover_until = now + core.cfg.expect_handover_s
        if offer.manual and core.peer is not None:
            # An operator chose this node: do not hand straight back to the preferred one.
            core.recovered_for = core.peer.started_at
    out.append(AnswerOffer(fact.request, refusal))


def on_switchover(core: HaCore, fact: SwitchoverAsked, now: float, out: list[Action]) -> None:
    refusal = may_hand_over(core, now)
    if refusal is not None:
        out.append(AnswerSwitchover(fact.request, refusal))
        return
    start_run(core, HandoverCause.SWITCHOVER, True, fact.request, now, out)


def on_drained(core: HaCore, fact: Drained, now: float, out: list[Action]) -> None:
    run = core.run
    if run is None or run.step != "drain" or run.ident != fact.drain:
        return
    run.step, run.ident = "offer", core._next_id()
    run.deadline = now + core.cfg.offer_timeout
    offer = HandoverOffer(
        from_node=core.cfg.node,
        term=core.term,
        watermarks=dict(core.marks.delivered),
        manual=run.manual,
        reason=run.cause.value,
    )
    out.append(SendOffer(run.ident, offer))


def on_answered(core: HaCore, fact: HandoverAnswered, now: float, out: list[Action]) -> None:
    run = core.run
    if run is None or run.step != "offer" or run.ident != fact.offer:
        return
    if fact.refusal is not None:
        finish_run(core, fact.refusal, out)
        core._enter(Phase.ACTIVE, HaReason.HANDOVER_FAILED, str(fact.refusal), out)
        return
    run.step, run.deadline = "release", now + core.cfg.offer_timeout
    peer = core.peer.node if core.peer is not None else "peer"
    out.append(Release(f"handover to {peer}: {run.cause.value}"))


def on_shutdown(core: HaCore, fact: ShutdownAsked, now: float, out: list[Action]) -> None:
    if core.stopping:
        return
    core.stopping = True
    if core.run is None and may_hand_over(core, now) is None:
        start_run(core, HandoverCause.SHUTDOWN, False, None, now, out)
    elif core.run is None:
        core._stop(out)


def refuse_offer(core: HaCore, offer: HandoverOffer) -> Refusal | None:
    assert core.health is not None
    if core.stopping:
        return Refusal(Refused.STOPPING, f"{core.cfg.node} is stopping")
    return policy.offer_refusal(
        offer,
        node=core.cfg.node,
        role=core.role,
        healthy=core.health.healthy,
        config_ok=core.config_ok,
        peer=core.peer,
        highest_term=core.highest_term,
        buffer_from=core.marks.buffer_from,
        hot=core.cfg.standby == "hot",
    )


def may_hand_over(core: HaCore, now: float) -> Refusal | None:
    if core.run is not None:
        return Refusal(Refused.HANDOVER_RUNNING, "a handover is already running")
    if core.phase is not Phase.ACTIVE:
        return Refusal(Refused.NOT_ACTIVE_MASTER, f"{core.cfg.node} is {core.role} ({core.phase})")
    return core._peer_refusal(now)


def start_run(
    core: HaCore,
    cause: HandoverCause,
    manual: bool,
    reply: int | None,
    now: float,
    out: list[Action],
) -> None:
    ident = core._next_id()
    core.run = HandoverRun(cause, manual, reply, "drain", ident, now + core.cfg.drain_timeout)
    peer = core.peer.node if core.peer is not None else "peer"
    core._enter(Phase.HANDING_OVER, HaReason.HANDOVER_STARTED, f"to {peer}: {cause}", out)
    core._gate_step(now, out, renew=False)  # publishing off before the drain starts
    out.append(Drain(ident))


def finish_run(core: HaCore, refusal: Refusal | None, out: list[Action]) -> None:
    run, core.run = core.run, None
    if run is None:
        return
    if run.reply is not None:
        to = core.peer.node if core.peer is not None and refusal is None else ""
        out.append(AnswerSwitchover(run.reply, refusal, to, dict(core.marks.delivered)))
    if core.stopping:
        core._stop(out)


def run_step(core: HaCore, now: float, out: list[Action]) -> None:
    run = core.run
    if run is not None and now > run.deadline:
        finish_run(core, Refusal(Refused.TIMED_OUT, f"no answer in step {run.step}"), out)
        if core.leading and core.phase is Phase.HANDING_OVER:
            core._enter(Phase.ACTIVE, HaReason.HANDOVER_FAILED, f"{run.step} timed out", out)
    if core.run is not None or core.phase is not Phase.ACTIVE or core.stopping:
        return
    if core._peer_refusal(now) is not None:
        return
    assert core.health is not None and core.peer is not None
    cause = policy.switchback_cause(
        healthy=core.health.healthy,
        base_priority=core.cfg.base_priority,
        automatic=core.cfg.recovery == "automatic",
        peer=core.peer,
        recovered_for=core.recovered_for,
    )
    if cause is not None:
        start_run(core, cause, False, None, now, out)
