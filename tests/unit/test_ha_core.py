"""The HA core on a fake clock: every scenario of the netns HA suite, plus its single rules."""

from __future__ import annotations

import pytest

from tandem.ha.core import HaCore
from tandem.ha.types import (
    Acked,
    AnswerOffer,
    AnswerSwitchover,
    BarrierDone,
    Delivered,
    HandoverOffer,
    HandoverOffered,
    HaReason,
    HaRole,
    HubReport,
    Leadership,
    Phase,
    RequestBarrier,
    RequestToken,
    RoleChanged,
    SecurityEvent,
    SetGate,
    TermSeen,
    Tick,
    TokenGranted,
    Trim,
    TrimsApplied,
)
from tests.unit.ha_sim import DOWN, KEY, SimPair, core_config

STEADY = 2.0


def steady_pair(**kw: object) -> SimPair:
    pair = SimPair.build(**kw)
    pair.start()
    pair.run(STEADY)
    assert pair.masters_publishing() == ["node-a"], pair.log
    return pair


def exactly_once(pair: SimPair) -> None:
    lost, dups = pair.lost_and_duplicates()
    assert (lost, dups) == ([], []), pair.log
    assert len(pair.masters_publishing()) <= 1


def takeover_by_b(pair: SimPair, within: float = 2.0) -> None:
    pair.run(within)
    assert pair.masters_publishing() == ["node-b"], pair.log
    assert pair.publisher_of_newest() == "node-b"


# ---- the netns scenarios, on the pure core ------------------------------------------------------


def test_core_steady_pair_master_publishes_standby_buffers() -> None:
    pair = steady_pair()
    snap_b = pair.b.core.snapshot(pair.now)
    assert snap_b.role is HaRole.BACKUP and snap_b.buffer_from[KEY] <= snap_b.watermarks[KEY] + 1
    exactly_once(pair)


def test_core_master_killed_backup_resumes_exactly_once() -> None:
    pair = steady_pair()
    pair.kill(pair.a)
    takeover_by_b(pair)
    exactly_once(pair)
    assert pair.b.core.term > 1


def test_core_host_lost_backup_resumes_exactly_once() -> None:
    pair = steady_pair()
    pair.kill(pair.a)
    pair.link_up = False
    takeover_by_b(pair)
    exactly_once(pair)


def test_core_hub_process_crash_moves_the_role_exactly_once() -> None:
    pair = steady_pair()
    pair.hub_crash(pair.a)
    takeover_by_b(pair)
    exactly_once(pair)
    assert pair.a.vrrp == "FAULT"


def test_core_hub_frozen_past_its_deadline_moves_the_role_exactly_once() -> None:
    pair = steady_pair()
    pair.a.hub_frozen = True
    takeover_by_b(pair, within=3.0)
    exactly_once(pair)
    pair.a.hub_frozen = False
    pair.run(2.0)
    exactly_once(pair)


def test_core_devices_lost_on_master_hands_over_to_the_healthy_peer() -> None:
    pair = steady_pair()
    pair.a.devices_ok = False
    takeover_by_b(pair, within=3.0)
    exactly_once(pair)


def test_core_preferred_master_restarted_switches_back_exactly_once() -> None:
    pair = steady_pair()
    pair.kill(pair.a)
    takeover_by_b(pair)
    pair.restart(pair.a)
    pair.run(4.0)
    assert pair.masters_publishing() == ["node-a"], pair.log
    exactly_once(pair)


def test_core_manual_recovery_keeps_the_role_on_the_backup() -> None:
    pair = steady_pair(recovery="manual")
    pair.kill(pair.a)
    takeover_by_b(pair)
    pair.restart(pair.a)
    pair.run(3.0)
    assert pair.masters_publishing() == ["node-b"], pair.log
    exactly_once(pair)


def test_core_switchover_hands_the_role_over_and_answers() -> None:
    pair = steady_pair(recovery="manual")
    pair.switchover(pair.a, request=7)
    takeover_by_b(pair, within=1.0)
    answers = [x for x in pair.a.answers if isinstance(x, AnswerSwitchover)]
    assert answers and answers[-1].request == 7 and answers[-1].refusal is None
    assert answers[-1].to == "node-b"
    exactly_once(pair)


def test_core_switchover_on_the_backup_is_refused_with_a_typed_reason() -> None:
    pair = steady_pair()
    pair.switchover(pair.b, request=3)
    answer = pair.b.answers[-1]
    assert isinstance(answer, AnswerSwitchover) and answer.refusal is not None
    assert answer.refusal.reason.value == "not_active_master"


def test_core_snapshot_says_whether_a_switchover_would_go_ahead_and_why_not() -> None:
    pair = steady_pair()
    assert pair.a.core.snapshot(pair.now).switchover_refusal is None
    refusal = pair.b.core.snapshot(pair.now).switchover_refusal
    assert refusal is not None and refusal.reason.value == "not_active_master"
    pair.link_up = False
    pair.run(0.6)  # past peer_timeout (0.5 s): the peer's state is stale
    refusal = pair.a.core.snapshot(pair.now).switchover_refusal
    assert refusal is not None and refusal.reason.value == "peer_link_down", pair.log


def test_core_broker_restart_during_failover_loses_nothing() -> None:
    pair = steady_pair()
    pair.broker_up = False
    pair.kill(pair.a)
    pair.run(1.0)
    assert pair.masters_publishing() == []
    pair.broker_up = True
    takeover_by_b(pair, within=2.0)
    exactly_once(pair)


def test_core_split_brain_only_the_term_holder_publishes() -> None:
    pair = steady_pair()
    pair.link_up = False
    pair.run(2.0)
    assert pair.b.vrrp == "MASTER"
    assert pair.b.core.phase is Phase.QUIET  # A is still active on the broker
    assert pair.masters_publishing() == ["node-a"]
    pair.link_up = True
    pair.run(2.0)
    assert [n.vrrp for n in pair.nodes] == ["MASTER", "BACKUP"]
    exactly_once(pair)


def test_core_whole_node_frozen_longer_than_down_interval_never_duplicates() -> None:
    pair = steady_pair()
    pair.a.warden_frozen = pair.a.hub_frozen = True
    takeover_by_b(pair, within=DOWN + 1.5)
    pair.a.warden_frozen = pair.a.hub_frozen = False
    pair.run(3.0)
    exactly_once(pair)
    assert len(pair.masters_publishing()) == 1


def test_core_warden_frozen_hub_stops_at_the_lease() -> None:
    pair = steady_pair()
    pair.a.warden_frozen = True
    pair.run(0.5)
    assert "node-a" not in pair.masters_publishing()  # the lease lapsed on the hub's clock
    takeover_by_b(pair, within=2.0)
    pair.a.warden_frozen = False
    pair.run(2.0)
    exactly_once(pair)


def test_core_shutdown_hands_over_then_stops() -> None:
    pair = steady_pair()
    pair.shutdown(pair.a)
    pair.run(1.0)
    assert pair.a.stopped
    assert pair.masters_publishing() == ["node-b"], pair.log
    exactly_once(pair)


def test_core_shutdown_of_the_backup_stops_at_once() -> None:
    pair = steady_pair()
    pair.shutdown(pair.b)
    assert pair.b.stopped


# ---- single rules -------------------------------------------------------------------------------


def leader(**kw: object) -> tuple[HaCore, list[object]]:
    """A core that has just been elected, with a healthy hub and a ready observer."""
    core = HaCore(core_config("node-a", 100, **kw))
    out: list[object] = []
    out += core.handle(HubReport({"loops": True}, {}, None, True, True), 0.0)
    out += core.handle(Leadership(True, "MASTER", "elected"), 0.0)
    return core, out


def barrier_of(actions: list[object]) -> int:
    return next(a.barrier for a in actions if isinstance(a, RequestBarrier))


def test_core_no_token_before_the_barrier_and_the_quiet_window() -> None:
    core, out = leader()
    assert not any(isinstance(a, RequestToken) for a in out)
    out = core.handle(BarrierDone(barrier_of(out), True), 0.01)
    assert not any(isinstance(a, RequestToken) for a in out)  # quiet for 0.3 s since start
    core.handle(TermSeen(3, "node-b", active=True), 0.1)  # the other master is alive
    assert not any(isinstance(a, RequestToken) for a in core.handle(Tick(), 0.35))
    out = core.handle(Tick(), 0.41)
    assert RequestToken(3) in out


def test_core_late_advert_during_acquisition_aborts_and_counts_spurious() -> None:
    core, out = leader()
    core.handle(TermSeen(3, "node-b", active=True), 0.0)
    core.handle(Leadership(False, "BACKUP", "higher priority advert"), 0.04)
    assert core.spurious_takeovers == 1
    assert core.term == 0 and core.phase is Phase.STANDBY


def test_core_publishing_opens_only_after_the_outbox_confirms_the_trims() -> None:
    core, out = leader()
    core.handle(Delivered(((KEY, 41, 2, "node-b"),)), 0.0)
    out = core.handle(BarrierDone(barrier_of(out), True), 0.0)
    out = core.handle(Tick(), 1.0)
    assert RequestToken(2) in out
    out = core.handle(TokenGranted(3), 1.0)
    assert Trim({KEY: 41}) in out
    gates = [a for a in out if isinstance(a, SetGate)]
    assert not gates or not gates[-1].publishing
    out = core.handle(Tick(), 2.1)  # no answer: the trim is asked for again
    assert Trim({KEY: 41}) in out
    out = core.handle(TrimsApplied({KEY: 41}), 2.2)
    assert any(isinstance(a, SetGate) and a.publishing for a in out)


def test_core_higher_term_fences_an_active_master() -> None:
    core = active_core()
    out = core.handle(Delivered(((KEY, 60, 9, "node-b"),)), 1.1)
    assert any(isinstance(a, SetGate) and not a.publishing for a in out)
    assert core.phase is Phase.BARRIER
    role = [a for a in out if isinstance(a, RoleChanged)][-1]
    assert role.reason is HaReason.HIGHER_TERM_SEEN and "node-b" in role.detail


def test_core_forged_term_naming_this_node_is_a_security_event_not_a_fence() -> None:
    core = active_core()
    out = core.handle(TermSeen(99, "node-a"), 1.1)
    assert [a.kind for a in out if isinstance(a, SecurityEvent)] == ["forged_term"]
    assert core.publishing and core.highest_term == core.term
    again = core.handle(TermSeen(99, "node-a"), 1.15)
    assert not any(isinstance(a, SecurityEvent) for a in again)  # logged once


def test_core_replayed_old_term_changes_nothing() -> None:
    core = active_core()
    before = (core.term, core.highest_term, dict(core.marks.delivered))
    core.handle(Delivered(((KEY, 3, 0, "node-b"),)), 1.1)
    core.handle(TermSeen(0, "node-b"), 1.1)
    assert (core.term, core.highest_term, dict(core.marks.delivered)) == before
    assert core.publishing


def test_core_lease_lapse_revalidates_before_publishing_again() -> None:
    core = active_core()
    out = core.handle(Tick(), 10.0)  # nothing ran for far longer than the lease
    assert core.phase is Phase.REVALIDATING
    assert any(isinstance(a, SetGate) and not a.publishing for a in out)
    out = core.handle(BarrierDone(barrier_of(out), True), 10.01)
    assert core.phase is Phase.ACTIVE and core.publishing


def test_core_offer_refused_while_config_differs_and_no_token() -> None:
    core = HaCore(core_config("node-b", 90))
    core.handle(HubReport({"loops": True}, {}, None, True, False), 0.0)
    core.handle(Leadership(False, "BACKUP", "startup"), 0.0)
    out = core.handle(HandoverOffered(1, HandoverOffer("node-a", 0, {})), 0.1)
    answer = next(a for a in out if isinstance(a, AnswerOffer))
    assert answer.refusal is not None and answer.refusal.reason.value == "config_differs"
    out = core.handle(Leadership(True, "MASTER", "elected"), 1.0)
    out += core.handle(BarrierDone(barrier_of(out), True), 1.0)
    out += core.handle(Tick(), 5.0)
    assert not any(isinstance(a, RequestToken) for a in out)


@pytest.mark.parametrize("term", [0, 5])
def test_core_offer_accepted_merges_watermarks_and_skips_the_quiet_wait(term: int) -> None:
    core = HaCore(core_config("node-b", 90))
    core.handle(HubReport({"loops": True}, {}, None, True, True), 0.0)
    core.handle(Leadership(False, "BACKUP", "startup"), 0.0)
    core.handle(TermSeen(term, "node-a"), 0.0)
    from tandem.ha.types import Polled

    core.handle(Polled({KEY: (10, 20)}), 0.0)
    out = core.handle(HandoverOffered(4, HandoverOffer("node-a", term, {KEY: 19})), 0.1)
    assert AnswerOffer(4, None) in out
    assert core.marks.delivered[KEY] == 19
    out = core.handle(Leadership(True, "MASTER", "resigned", resigned_peer=True), 0.11)
    out += core.handle(BarrierDone(barrier_of(out), True), 0.12)
    assert any(isinstance(a, RequestToken) for a in out)  # no 0.3 s wait after a handover


def test_core_role_changes_carry_an_enum_role_and_one_reason() -> None:
    pair = steady_pair()
    pair.kill(pair.a)
    roles: list[RoleChanged] = []
    original = pair.execute

    def spy(n: object, action: object) -> None:
        if isinstance(action, RoleChanged):
            roles.append(action)
        original(n, action)  # type: ignore[arg-type]

    pair.execute = spy  # type: ignore[method-assign]
    pair.run(2.0)
    assert roles and all(isinstance(r.role, HaRole) for r in roles)
    assert [r.phase for r in roles][-1] is Phase.ACTIVE
    assert any("acquiring term" in r.detail for r in roles)


def test_core_snapshot_is_a_copy() -> None:
    core = active_core()
    snap = core.snapshot(5.0)
    snap.watermarks[KEY] = -5
    assert core.marks.delivered[KEY] != -5


def active_core() -> HaCore:
    core, out = leader()
    out = core.handle(BarrierDone(barrier_of(out), True), 0.0)
    out = core.handle(Tick(), 1.0)
    core.handle(TokenGranted(1), 1.0)
    core.handle(Acked({KEY: 50}), 1.0)
    core.handle(Tick(), 1.05)
    assert core.publishing and core.phase is Phase.ACTIVE
    return core
