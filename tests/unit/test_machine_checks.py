"""State machine tests: receive checks, FAULT, the seed guide's scenarios, handover."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from tandem.vrrp.machine import VrrpMachine, master_down_interval, skew_time
from tandem.vrrp.packet import advert_for, decode, encode
from tandem.vrrp.types import (
    VRRP_MULTICAST,
    Advert,
    AdvertIn,
    ChecksChanged,
    Dropped,
    DropReason,
    Reason,
    RemoveVips,
    Resign,
    SendAdvert,
    Start,
    State,
    Stop,
    Tick,
    Transition,
)
from tests.unit.vrrp_fixtures import (
    A_ADDR,
    B_ADDR,
    DOWN_90,
    DOWN_100,
    SKEW_90,
    VIP,
    Net,
    Node,
    advert_in,
    master_machine,
    run_to_deadline,
    seed_backup,
    seed_master,
    seed_net,
    started,
    transitions,
)

# ---- receive checks ----

RECEIVE_CHECKS = [
    ("ttl", {"ttl": 254, "multicast": True}, {}, DropReason.BAD_TTL),
    ("version", {}, {"version": 3, "auth_type": 0, "auth_data": b""}, DropReason.VERSION_MISMATCH),
    ("auth-type", {}, {"auth_type": 0}, DropReason.AUTH_TYPE_MISMATCH),
    ("password", {}, {"auth_data": b"abcdefgX"}, DropReason.AUTH_MISMATCH),
    ("interval", {}, {"interval": 2.0}, DropReason.INTERVAL_MISMATCH),
    ("vrid", {}, {"vrid": 52}, DropReason.UNKNOWN_VRID),
    ("naddr", {}, {"addresses": ()}, DropReason.NADDR_MISMATCH),
    ("vip", {}, {"addresses": (IPv4Address("10.9.9.9"),)}, DropReason.VIP_MISMATCH),
    ("order", {}, {"vrid": 52, "interval": 2.0, "auth_data": bytes(8)}, DropReason.AUTH_MISMATCH),
]


@pytest.mark.parametrize(
    ("event_changes", "advert_changes", "reason"),
    [c[1:] for c in RECEIVE_CHECKS],
    ids=[c[0] for c in RECEIVE_CHECKS],
)
@pytest.mark.parametrize("as_master", [False, True], ids=["backup", "master"])
def test_machine_receive_check_failure_drops_without_touching_timer(
    event_changes: dict[str, Any],
    advert_changes: dict[str, Any],
    reason: DropReason,
    as_master: bool,
) -> None:
    config = seed_master(skip_check_adv_addr=False)
    machine = master_machine(skip_check_adv_addr=False) if as_master else started(config)
    state, deadline = machine.state, machine.deadline
    good = advert_in(config, 200, B_ADDR)
    bad = replace(good, advert=replace(good.advert, **advert_changes), **event_changes)
    actions = machine.handle(bad, 3.0)
    assert len(actions) == 1
    dropped = actions[0]
    assert isinstance(dropped, Dropped)
    assert (dropped.reason, dropped.src) == (reason, B_ADDR)
    assert machine.counters.by_reason == {reason.value: 1}
    assert (machine.state, machine.deadline) == (state, deadline)


def test_machine_unicast_advert_with_any_ttl_accepted() -> None:
    machine = started(seed_master(initial_state=State.BACKUP))
    assert machine.handle(advert_in(seed_master(), 200, B_ADDR, ttl=64), 2.0) == []
    assert machine.deadline == pytest.approx(2.0 + DOWN_100)


def test_machine_multicast_advert_with_ttl_255_accepted() -> None:
    config = seed_master(initial_state=State.BACKUP, unicast_peers=())
    machine = started(config)
    assert machine.handle(advert_in(config, 200, B_ADDR, multicast=True), 2.0) == []
    assert machine.master_address == B_ADDR


def test_machine_own_looped_back_advert_dropped() -> None:
    machine = master_machine()
    actions = machine.handle(advert_in(seed_master(), 100, A_ADDR, multicast=True), 4.0)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == [DropReason.OWN_ADVERT]
    assert machine.state is State.MASTER


def test_machine_v3_interval_not_checked() -> None:
    config = seed_master(version=3, auth_pass=None, initial_state=State.BACKUP)
    machine = started(config)
    slow = advert_in(config, 200, B_ADDR)
    slow = replace(slow, advert=replace(slow.advert, interval=4.0))
    assert machine.handle(slow, 1.0) == []
    assert machine.master_adver_int == 4.0


def test_machine_v2_without_password_requires_auth_type_zero() -> None:
    config = seed_master(auth_pass=None, initial_state=State.BACKUP)
    machine = started(config)
    assert machine.handle(advert_in(config, 200, B_ADDR), 1.0) == []
    with_pass = advert_in(seed_master(), 200, B_ADDR)
    dropped = machine.handle(with_pass, 1.5)
    assert [a.reason for a in dropped if isinstance(a, Dropped)] == [DropReason.AUTH_TYPE_MISMATCH]


def test_machine_skip_check_adv_addr_only_for_accepted_master() -> None:
    config = seed_master(initial_state=State.BACKUP, skip_check_adv_addr=True)
    machine = started(config)
    machine.handle(advert_in(config, 200, B_ADDR), 1.0)
    odd = advert_in(config, 200, B_ADDR)
    odd = replace(odd, advert=replace(odd.advert, addresses=(IPv4Address("10.9.9.9"),) * 2))
    assert machine.handle(odd, 2.0) == []
    assert machine.deadline == pytest.approx(2.0 + DOWN_100)
    stranger = replace(odd, src=IPv4Address("10.0.0.200"))
    dropped = machine.handle(stranger, 2.5)
    assert [a.reason for a in dropped if isinstance(a, Dropped)] == [DropReason.NADDR_MISMATCH]


def test_machine_vip_order_does_not_matter() -> None:
    vips = (IPv4Interface("10.1.0.1/24"), IPv4Interface("10.1.0.2/24"))
    config = seed_master(initial_state=State.BACKUP, vips=vips, skip_check_adv_addr=False)
    machine = started(config)
    event = advert_in(config, 200, B_ADDR)
    event = replace(event, advert=replace(event.advert, addresses=(vips[1].ip, vips[0].ip)))
    assert machine.handle(event, 1.0) == []


@pytest.mark.parametrize(
    "mismatch",
    [
        {"auth_pass": b"wrongpwd"},
        {"version": 3},
        {"advert_interval": 2.0},
        {"vips": (IPv4Interface("192.160.127.253/17"),), "skip_check_adv_addr": False},
    ],
    ids=["password", "version", "interval", "vip"],
)
def test_machine_config_mismatch_leaves_both_master(mismatch: dict[str, object]) -> None:
    net = Net()
    net.add("a", seed_master(**mismatch))
    net.add("b", seed_backup())
    net.deliver("a", Start())
    net.deliver("b", Start())
    net.run_until(30.0)
    assert net.state("a") is State.MASTER
    assert net.state("b") is State.MASTER
    assert net.drops, "each side must have counted the other's adverts as drops"
    for name in ("a", "b"):
        assert sum(net.nodes[name].machine.counters.by_reason.values()) >= 10


# ---- checks, fault and stop ----


def test_machine_fault_before_start_holds_fault_until_checks_pass() -> None:
    machine = VrrpMachine(seed_master())
    assert machine.handle(ChecksChanged(fault=True), 0.0) == []
    actions = machine.handle(Start(), 0.0)
    assert actions == [
        Transition(State.INIT, State.FAULT, Reason.CHECK_FAILED, 100, "a tracked check holds")
    ]
    assert machine.deadline is None
    dropped = machine.handle(advert_in(seed_master(), 200, B_ADDR), 1.0)
    assert [a.reason for a in dropped if isinstance(a, Dropped)] == [DropReason.NOT_LISTENING]
    actions = machine.handle(ChecksChanged(fault=False), 2.0)
    assert actions == [Transition(State.FAULT, State.BACKUP, Reason.CHECKS_RECOVERED, 100)]
    assert machine.deadline == pytest.approx(2.0 + DOWN_100)


def test_machine_master_fault_resigns_with_two_priority_zero_adverts() -> None:
    machine = master_machine()
    actions = machine.handle(ChecksChanged(fault=True), 8.0)
    assert actions == [
        SendAdvert(0, 1.0, count=2),
        RemoveVips((VIP,)),
        Transition(State.MASTER, State.FAULT, Reason.CHECK_FAILED, 100),
    ]
    assert machine.deadline is None
    assert machine.handle(Tick(), 100.0) == []


def test_machine_backup_fault_is_transition_only() -> None:
    machine = started(seed_backup())
    actions = machine.handle(ChecksChanged(fault=True), 1.0)
    assert actions == [Transition(State.BACKUP, State.FAULT, Reason.CHECK_FAILED, 90)]
    assert machine.deadline is None


def test_machine_owner_recovering_from_fault_becomes_master_at_once() -> None:
    machine = VrrpMachine(seed_master(priority=255))
    machine.handle(ChecksChanged(fault=True), 0.0)
    machine.handle(Start(), 0.0)
    actions = machine.handle(ChecksChanged(fault=False), 1.0)
    assert transitions(actions)[0].reason is Reason.CHECKS_RECOVERED
    assert machine.state is State.MASTER


def test_machine_master_later_adverts_carry_new_effective_priority() -> None:
    machine = master_machine()
    assert machine.handle(ChecksChanged(fault=False, priority_delta=-20), 4.0) == []
    assert machine.effective_priority == 80
    _, actions = run_to_deadline(machine)
    assert SendAdvert(80, 1.0) in actions


@pytest.mark.parametrize(
    ("base", "delta", "expected"), [(100, -200, 1), (100, 300, 254), (255, -100, 255)]
)
def test_machine_effective_priority_clamped(base: int, delta: int, expected: int) -> None:
    machine = VrrpMachine(seed_master(priority=base))
    machine.handle(ChecksChanged(fault=False, priority_delta=delta), 0.0)
    assert machine.effective_priority == expected


def test_machine_stop_master_sends_priority_zero_exactly_once() -> None:
    machine = master_machine()
    actions = machine.handle(Stop(), 9.0)
    assert actions == [
        SendAdvert(0, 1.0),
        RemoveVips((VIP,)),
        Transition(State.MASTER, State.INIT, Reason.SHUTDOWN, 100),
    ]
    assert machine.state is State.INIT
    assert machine.deadline is None
    for event in (Stop(), Tick(), Start(), ChecksChanged(fault=True)):
        assert machine.handle(event, 10.0) == []
    assert machine.handle(advert_in(seed_master(), 200, B_ADDR), 10.0) == []


@pytest.mark.parametrize("fault", [False, True], ids=["backup", "fault"])
def test_machine_stop_non_master_only_transitions(fault: bool) -> None:
    machine = started(seed_backup())
    if fault:
        machine.handle(ChecksChanged(fault=True), 1.0)
    old = machine.state
    actions = machine.handle(Stop(), 2.0)
    assert actions == [Transition(old, State.INIT, Reason.SHUTDOWN, 90)]
    assert machine.deadline is None


def test_machine_stop_before_start_does_nothing() -> None:
    machine = VrrpMachine(seed_backup())
    assert machine.handle(Stop(), 0.0) == []
    assert machine.handle(Start(), 1.0) == []
    assert machine.state is State.INIT


def test_machine_unknown_event_raises_type_error() -> None:
    machine = VrrpMachine(seed_backup())
    with pytest.raises(TypeError):
        machine.handle("start", 0.0)  # type: ignore[arg-type]


# ---- the seed guide's scenarios, with keepalived's timings ----


def test_seed_steady_state_master_a_backup_b() -> None:
    net = seed_net()
    assert net.state("a") is State.MASTER
    assert net.state("b") is State.BACKUP
    ((when, transition),) = net.became("a", State.MASTER)
    assert when == pytest.approx(DOWN_100)
    assert transition.reason is Reason.MASTER_DOWN
    # B ran notify_backup at start and never left BACKUP.
    assert [tr.old for _, tr in net.became("b", State.BACKUP)] == [State.INIT]
    assert not net.drops


def test_seed_scenario_a_service_failure_backup_takes_over_after_skew() -> None:
    net = seed_net()
    # Third failed check (interval 5, fall 3) lands at ~+11.4 s in keepalived's measurement.
    fault_at = 10.0 + 11.4
    net.run_until(fault_at)
    net.deliver("a", ChecksChanged(fault=True))
    resigns = [s for s in net.sent if s.priority == 0]
    assert [(s.sender, s.time) for s in resigns] == [("a", fault_at), ("a", fault_at)]
    assert net.state("a") is State.FAULT
    net.run_until(fault_at + 5.0)
    ((when, transition),) = net.became("b", State.MASTER)
    assert when - fault_at == pytest.approx(SKEW_90)
    assert transition.reason is Reason.MASTER_RESIGNED
    assert net.state("a") is State.FAULT  # fault.sh keeps the service down
    net.run_until(fault_at + 60.0)
    assert net.state("a") is State.FAULT
    assert net.state("b") is State.MASTER


def test_seed_scenario_b_host_failure_backup_takes_over_after_down_interval() -> None:
    net = seed_net()
    net.run_until(20.3)
    net.nodes["a"].alive = False  # crash: no Stop, no priority-0 advert
    last_advert = max(s.time for s in net.sent if s.sender == "a")
    net.run_until(40.0)
    ((when, transition),) = net.became("b", State.MASTER)
    assert when - last_advert == pytest.approx(DOWN_90)
    assert transition.reason is Reason.MASTER_DOWN
    assert not [s for s in net.sent if s.priority == 0]


def test_seed_scenario_c_master_returns_after_crash_and_preempts() -> None:
    net = seed_net()
    net.run_until(20.3)
    net.nodes["a"].alive = False
    net.run_until(40.0)
    assert net.state("b") is State.MASTER
    net.nodes["a"] = Node(seed_master(), VrrpMachine(seed_master()))  # reboot
    restart = 40.0
    net.deliver("a", Start())
    net.run_until(60.0)
    a_master = [(t, tr) for t, tr in net.became("a", State.MASTER) if t > restart]
    assert len(a_master) == 1
    when, transition = a_master[0]
    assert when - restart == pytest.approx(DOWN_100)  # B's adverts (90 < 100) were discarded
    assert transition.reason is Reason.PREEMPTED_LOWER_MASTER
    b_backup = [(t, tr) for t, tr in net.became("b", State.BACKUP) if t > restart]
    assert [(t, tr.reason) for t, tr in b_backup] == [(when, Reason.HIGHER_PRIORITY_ADVERT)]
    assert net.state("a") is State.MASTER
    assert net.state("b") is State.BACKUP


def test_seed_scenario_c_master_returns_from_fault_and_preempts() -> None:
    net = seed_net()
    net.run_until(21.4)
    net.deliver("a", ChecksChanged(fault=True))
    net.run_until(40.0)
    assert net.state("b") is State.MASTER
    recovered = 40.0
    net.deliver("a", ChecksChanged(fault=False))
    assert net.state("a") is State.BACKUP
    net.run_until(60.0)
    a_master = [(t, tr) for t, tr in net.became("a", State.MASTER) if t > recovered]
    assert [(t - recovered, tr.reason) for t, tr in a_master] == [
        (pytest.approx(DOWN_100), Reason.PREEMPTED_LOWER_MASTER)
    ]
    assert net.state("b") is State.BACKUP


def test_seed_backup_shutdown_of_master_hands_over_after_skew() -> None:
    net = seed_net()
    net.run_until(12.2)
    net.deliver("a", Stop())
    assert [s.time for s in net.sent if s.priority == 0] == [12.2]
    net.run_until(20.0)
    ((when, transition),) = net.became("b", State.MASTER)
    assert when - 12.2 == pytest.approx(SKEW_90)
    assert transition.reason is Reason.MASTER_RESIGNED


def test_machine_multicast_destination_constant_is_rfc_address() -> None:
    # The Net helper is unicast only; multicast adverts reach the machine with multicast=True.
    config = seed_master(initial_state=State.BACKUP, unicast_peers=())
    advert = advert_for(config, 200, 1.0)
    wire = encode(advert, B_ADDR, VRRP_MULTICAST)
    decoded = decode(wire, B_ADDR, VRRP_MULTICAST)
    assert isinstance(decoded, Advert)
    machine = started(config)
    event = AdvertIn(advert=decoded, src=B_ADDR, ttl=255, multicast=True)
    assert machine.handle(event, 1.0) == []
    assert machine.master_address == B_ADDR


# ---- planned handover (Tandem's Resign event) ----


def native_net() -> Net:
    """Tandem's native pair: v3 at 0.1 s, both nopreempt, so only a handover moves the role."""
    net = Net()
    common = {
        "version": 3,
        "advert_interval": 0.1,
        "auth_pass": None,
        "initial_state": State.BACKUP,
    }
    net.add("a", seed_master(preempt=False, **common))
    net.add("b", seed_backup(**common))
    net.deliver("a", Start())
    net.deliver("b", Start())
    net.run_until(2.0)
    return net


def test_resign_master_hands_role_to_peer_after_skew_and_stays_backup() -> None:
    net = native_net()
    assert (net.state("a"), net.state("b")) == (State.MASTER, State.BACKUP)
    resigned_at = net.now
    net.deliver("a", Resign("switchover requested"))
    assert net.state("a") is State.BACKUP
    (left,) = [tr for t, tr in net.became("a", State.BACKUP) if t == resigned_at]
    assert left.reason is Reason.HANDOVER and left.detail == "switchover requested"
    assert [s.priority for s in net.sent if s.time == resigned_at] == [0]
    net.run_until(resigned_at + 5.0)
    (took,) = net.became("b", State.MASTER)
    assert took[0] - resigned_at == pytest.approx(skew_time(3, 90, 0.1))
    assert took[1].reason is Reason.MASTER_RESIGNED
    # nopreempt: the priority-100 node accepts the lower master and does not take it back.
    assert (net.state("a"), net.state("b")) == (State.BACKUP, State.MASTER)


def test_resign_without_taker_returns_to_master_after_down_interval() -> None:
    net = native_net()
    net.nodes["b"].alive = False
    resigned_at = net.now
    net.deliver("a", Resign())
    net.run_until(resigned_at + 1.0)
    back = [t for t, tr in net.became("a", State.MASTER) if t > resigned_at]
    assert back and back[0] - resigned_at == pytest.approx(master_down_interval(3, 100, 0.1))


def test_resign_in_backup_does_nothing() -> None:
    net = native_net()
    before = len(net.transitions)
    net.deliver("b", Resign())
    assert len(net.transitions) == before and net.state("b") is State.BACKUP


def test_master_advert_schedule_does_not_drift_with_late_wakeups() -> None:
    config = seed_master(version=3, advert_interval=0.1, auth_pass=None, priority=255)
    m = VrrpMachine(config)
    now = 0.0
    m.handle(Start(), now)
    assert m.state is State.MASTER
    sent = 0
    while sent < 100:
        deadline = m.deadline
        assert deadline is not None
        now = deadline + 0.01  # every wakeup 10 ms late
        sent += sum(1 for a in m.handle(Tick(), now) if isinstance(a, SendAdvert))
    # 100 periods of 0.1 s, plus one late wakeup: no accumulated 10 ms per advert
    assert now == pytest.approx(10.0 + 0.01, abs=0.02)
