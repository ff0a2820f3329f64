"""The HA controller's decisions on a fake clock: acquisition, fencing, trims and handovers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tandem.ha.controller import HaController, PeerView, stream_key
from tandem.ha.term import TermStore

KEY = stream_key("plc1", "fast")


def controller(**kw: object) -> HaController:
    defaults: dict[str, object] = {
        "node": "a",
        "base_priority": 100,
        "standby": "hot",
        "recovery": "automatic",
        "fence_window": 0.3,
        "peer_timeout": 0.5,
        "started_at": 1000.0,
    }
    defaults.update(kw)
    c = HaController(**defaults)  # type: ignore[arg-type]
    c.observer_ready = True
    return c


def peer_view(**kw: object) -> PeerView:
    defaults: dict[str, object] = {
        "node": "b",
        "vrrp": "BACKUP",
        "publishing": False,
        "term": 0,
        "priority": 90,
        "base_priority": 90,
        "standby": "hot",
        "watermarks": {},
        "buffer_from": {KEY: 10},
        "healthy": True,
        "started_at": 2000.0,
        "received_at": 0.0,
    }
    defaults.update(kw)
    return PeerView(**defaults)  # type: ignore[arg-type]


def master(c: HaController, now: float = 0.0) -> None:
    c.vrrp_changed("MASTER")
    plan = c.plan(now)
    assert plan.acquire
    c.term_acquired(c.highest_term + 1)


def test_controller_backup_never_publishes_and_hot_standby_polls() -> None:
    c = controller()
    c.vrrp_changed("BACKUP")
    plan = c.plan(0.0)
    assert (plan.publishing, plan.polling, plan.acquire) == (False, True, False)


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_controller_warm_and_cold_standby_poll_only_as_master(mode: str) -> None:
    c = controller(standby=mode)
    c.vrrp_changed("BACKUP")
    assert c.plan(0.0).polling is False
    c.vrrp_changed("MASTER")
    assert c.plan(0.0).polling is True


def test_controller_vrrp_master_acquires_then_publishes() -> None:
    c = controller()
    c.vrrp_changed("MASTER")
    assert c.plan(0.0).acquire
    c.term_acquired(1)
    plan = c.plan(0.0)
    assert plan.publishing and not plan.acquire and plan.label == "MASTER"


def test_controller_waits_while_another_node_is_active_on_the_broker() -> None:
    """Split brain of the heartbeat link: the other master still publishes, so we hold off."""
    c = controller()
    c.heartbeat(term=4, node="b", now=10.0)
    c.vrrp_changed("MASTER")
    plan = c.plan(10.1)
    assert not plan.acquire and not plan.publishing
    assert plan.label == "MASTER (fenced by b, term 4)"
    assert c.plan(10.31).acquire  # quiet for the fence window: the other one is gone


def test_controller_higher_term_fences_a_publishing_master_at_once() -> None:
    c = controller()
    master(c)
    assert c.plan(1.0).publishing
    c.observed(KEY, 50, term=9, source_node="b", now=1.1)
    plan = c.plan(1.1)
    assert not plan.publishing
    assert "fenced by b, term 9" in plan.label


def test_controller_fenced_master_reacquires_above_the_highest_term_once_quiet() -> None:
    c = controller()
    master(c)
    c.observed(KEY, 50, term=9, source_node="b", now=1.0)
    assert not c.plan(1.1).acquire
    assert c.plan(1.4).acquire
    c.term_acquired(10)
    assert c.plan(1.4).publishing


def test_controller_observer_not_ready_blocks_acquisition() -> None:
    c = controller()
    c.observer_ready = False
    c.vrrp_changed("MASTER")
    assert not c.plan(0.0).acquire


def test_controller_watermark_is_the_highest_slot_from_any_source() -> None:
    c = controller()
    c.vrrp_changed("BACKUP")
    c.observed(KEY, 20, term=1, source_node="b", now=0.0)
    c.peer_update(peer_view(publishing=True, watermarks={KEY: 25}, term=1))
    c.observed(KEY, 22, term=1, source_node="b", now=0.1)  # late arrival never moves it back
    assert c.watermarks[KEY] == 25
    assert c.plan(0.1).trims == {KEY: 25}
    assert c.plan(0.2).trims == {}  # unchanged watermarks are not trimmed again


def test_controller_peer_watermarks_ignored_while_peer_not_publishing() -> None:
    c = controller()
    c.peer_update(peer_view(publishing=False, watermarks={KEY: 99}))
    assert KEY not in c.watermarks


def test_controller_accept_handover_records_watermark_and_skips_fence_wait() -> None:
    c = controller(node="b", base_priority=90)
    c.vrrp_changed("BACKUP")
    c.polled(KEY, 10)
    c.heartbeat(term=3, node="a", now=5.0)
    ok, reason = c.accept_handover("a", 3, {KEY: 40}, manual=False, now=5.0)
    assert ok, reason
    assert c.watermarks[KEY] == 40
    c.vrrp_changed("MASTER")
    assert c.plan(5.05).acquire  # the old master said it stopped: no need to wait


def test_controller_refuses_handover_without_buffer_from_the_watermark() -> None:
    c = controller(node="b", base_priority=90)
    c.vrrp_changed("BACKUP")
    c.polled(KEY, 60)
    ok, reason = c.accept_handover("a", 3, {KEY: 40}, manual=False, now=0.0)
    assert not ok and "no buffer" in reason


def test_controller_refuses_handover_unless_backup() -> None:
    c = controller()
    master(c)
    ok, reason = c.accept_handover("b", 3, {}, manual=False, now=0.0)
    assert not ok and "not BACKUP" in reason


def test_controller_peer_ready_needs_fresh_link_backup_health_and_coverage() -> None:
    c = controller()
    master(c)
    c.acked(KEY, 30)
    assert c.peer_ready(0.0) == (False, "peer link down")
    c.peer_update(peer_view(received_at=0.0, buffer_from={KEY: 31}))
    assert c.peer_ready(0.1) == (True, "ready")
    assert c.peer_ready(0.6)[1] == "peer link down"  # stale after peer_timeout
    c.peer_update(peer_view(received_at=1.0, buffer_from={KEY: 35}))
    ready, why = c.peer_ready(1.0)
    assert not ready and "does not cover" in why
    c.peer_update(peer_view(received_at=1.0, healthy=False))
    assert c.peer_ready(1.0) == (False, "peer is not healthy")


def test_controller_automatic_recovery_hands_back_once_per_peer_start() -> None:
    c = controller(node="b", base_priority=90)
    master(c)
    c.peer_update(peer_view(node="a", base_priority=100, priority=100, received_at=0.0))
    assert c.plan(0.1).handover == "preferred master a is back and ready"
    c.recovered_for = 2000.0  # e.g. after a manual switchover to us
    assert c.plan(0.1).handover is None
    c.peer_update(peer_view(node="a", base_priority=100, started_at=3000.0, received_at=0.2))
    assert c.plan(0.2).handover is not None  # the preferred node restarted: recover again


def test_controller_manual_recovery_keeps_the_role() -> None:
    c = controller(node="b", base_priority=90, recovery="manual")
    master(c)
    c.peer_update(peer_view(node="a", base_priority=100, received_at=0.0))
    assert c.plan(0.1).handover is None


def test_controller_unhealthy_master_hands_over_to_healthier_peer() -> None:
    c = controller()
    master(c)
    c.healthy = False
    c.priority = 70
    c.peer_update(peer_view(priority=90, received_at=0.0))
    reason = c.plan(0.1).handover
    assert reason is not None and "healthier" in reason


def test_controller_manual_handover_suppresses_immediate_switchback() -> None:
    c = controller(node="b", base_priority=90)
    c.vrrp_changed("BACKUP")
    c.polled(KEY, 0)
    c.peer_update(peer_view(node="a", base_priority=100, started_at=1234.0, received_at=0.0))
    ok, _ = c.accept_handover("a", 1, {KEY: 5}, manual=True, now=0.0)
    assert ok
    master(c, 0.0)
    assert c.plan(0.1).handover is None


def test_controller_handing_over_stops_publishing() -> None:
    c = controller()
    master(c)
    c.handing_over = True
    plan = c.plan(0.0)
    assert not plan.publishing and not plan.acquire


def test_controller_leaving_master_drops_the_hold() -> None:
    c = controller()
    master(c)
    c.vrrp_changed("BACKUP")
    c.vrrp_changed("MASTER")
    assert c.plan(5.0).acquire  # a new mastership needs a new term


def test_term_store_persists_and_never_reuses(tmp_path: Path) -> None:
    store = TermStore(tmp_path / "term.json")
    assert store.term == 0
    assert store.acquire(at_least=0) == 1
    assert store.acquire(at_least=7) == 8
    assert TermStore(tmp_path / "term.json").term == 8


def test_term_store_corrupt_file_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "term.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt term file"):
        TermStore(path)


def test_peer_view_is_frozen() -> None:
    view = peer_view()
    with pytest.raises(AttributeError):
        view.term = 3  # type: ignore[misc]
    assert replace(view, term=3).term == 3


def test_controller_unhealthy_master_hands_over_even_to_lower_priority_hot_peer() -> None:
    c = controller()
    master(c)
    c.healthy = False  # e.g. holding back samples its device path could not read
    c.peer_update(peer_view(priority=90, received_at=0.0))
    assert c.priority == 100
    assert c.plan(0.1).handover is not None


def test_controller_unhealthy_master_keeps_role_when_peer_is_cold() -> None:
    """A cold standby never connects to the devices: nothing says it would do better."""
    c = controller()
    master(c)
    c.healthy = False
    c.peer_update(peer_view(standby="cold", priority=90, received_at=0.0))
    assert c.plan(0.1).handover is None
    c.peer_update(peer_view(standby="warm", priority=90, received_at=0.0))
    assert c.plan(0.1).handover is not None
