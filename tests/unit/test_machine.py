"""State machine tests on a fake clock: timers, start, preemption, adverts in each state."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest

from tandem.vrrp.machine import VrrpMachine, master_down_interval, skew_time
from tandem.vrrp.types import (
    AddVips,
    Advert,
    AdvertIn,
    Dropped,
    DropReason,
    GratuitousArp,
    InstanceConfig,
    Reason,
    RemoveVips,
    SendAdvert,
    Start,
    State,
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
    advert_in,
    master_machine,
    run_to_deadline,
    seed_backup,
    seed_master,
    started,
    transitions,
)

# ---- timers ----


@pytest.mark.parametrize(
    ("version", "priority", "interval", "expected"),
    [
        (2, 100, 1.0, 3.609375),
        (2, 90, 1.0, 3.6484375),
        (2, 90, 3.0, 9.6484375),  # v2 skew ignores the interval
        (3, 90, 1.0, 3.6484375),
        (3, 200, 0.1, 0.3 + 56 * 0.1 / 256),
        (3, 100, 2.0, 6.0 + 156 * 2.0 / 256),
    ],
)
def test_master_down_interval_keepalived_formula(
    version: int, priority: int, interval: float, expected: float
) -> None:
    assert master_down_interval(version, priority, interval) == pytest.approx(expected)


def test_skew_time_higher_priority_waits_less() -> None:
    assert skew_time(2, 90, 1.0) == pytest.approx(SKEW_90)
    assert skew_time(2, 200, 1.0) < skew_time(2, 100, 1.0)
    assert skew_time(3, 90, 0.5) == pytest.approx(SKEW_90 * 0.5)


# ---- start ----


def test_machine_before_start_is_init_without_deadline() -> None:
    machine = VrrpMachine(seed_backup())
    assert machine.state is State.INIT
    assert machine.deadline is None
    assert machine.handle(Tick(), 100.0) == []


def test_machine_advert_before_start_dropped_not_listening() -> None:
    machine = VrrpMachine(seed_backup())
    actions = machine.handle(advert_in(seed_backup(), 100, A_ADDR), 0.0)
    assert actions == [Dropped(DropReason.NOT_LISTENING, A_ADDR, "instance is INIT")]
    assert machine.counters.by_reason == {"not_listening": 1}


@pytest.mark.parametrize("initial", [State.BACKUP, State.MASTER])
def test_machine_start_enters_backup_with_down_timer(initial: State) -> None:
    config = seed_master(initial_state=initial, preempt=True)
    machine = VrrpMachine(config)
    actions = machine.handle(Start(), 50.0)
    assert actions == [Transition(State.INIT, State.BACKUP, Reason.STARTUP, 100)]
    assert machine.state is State.BACKUP
    assert machine.deadline == pytest.approx(50.0 + DOWN_100)


def test_machine_state_master_alone_becomes_master_after_down_interval() -> None:
    machine = started(seed_master(), now=0.0)
    assert machine.handle(Tick(), DOWN_100 - 0.001) == []  # early Tick: nothing yet
    time, actions = run_to_deadline(machine)
    assert time == pytest.approx(DOWN_100)
    assert actions == [
        SendAdvert(100, 1.0),
        AddVips((VIP,)),
        GratuitousArp((VIP,), 5),
        Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN, 100, "no master seen"),
    ]
    assert machine.master_address == A_ADDR
    assert machine.deadline == pytest.approx(DOWN_100 + 1.0)


def test_machine_priority_255_start_becomes_master_at_once() -> None:
    machine = VrrpMachine(seed_master(priority=255, initial_state=State.BACKUP))
    actions = machine.handle(Start(), 5.0)
    assert [type(a) for a in actions] == [SendAdvert, AddVips, GratuitousArp, Transition]
    assert actions[0] == SendAdvert(255, 1.0)
    assert transitions(actions)[0].old is State.INIT
    assert transitions(actions)[0].reason is Reason.STARTUP
    assert machine.state is State.MASTER


def test_machine_second_start_ignored() -> None:
    machine = started(seed_backup())
    deadline = machine.deadline
    assert machine.handle(Start(), 1.0) == []
    assert machine.deadline == deadline


# ---- nopreempt ----


def test_machine_nopreempt_with_state_backup_honoured() -> None:
    assert VrrpMachine(seed_backup()).preempt is False


@pytest.mark.parametrize(
    "config",
    [seed_master(preempt=False), seed_backup(priority=255)],
    ids=["state-master", "priority-255"],
)
def test_machine_nopreempt_not_honoured_warns_and_preempts(
    config: InstanceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tandem.vrrp.machine"):
        machine = VrrpMachine(config)
    assert machine.preempt is True
    assert any("nopreempt" in r.getMessage() for r in caplog.records)


def test_machine_nopreempt_ignored_for_state_master_discards_lower_advert() -> None:
    machine = started(seed_master(preempt=False))
    first = machine.deadline
    machine.handle(advert_in(seed_backup(), 90, B_ADDR), 1.0)
    assert machine.deadline == first  # lower advert discarded: preempt stays on
    _, actions = run_to_deadline(machine)
    assert transitions(actions)[0].reason is Reason.PREEMPTED_LOWER_MASTER


def test_machine_nopreempt_backup_accepts_lower_priority_advert() -> None:
    machine = started(seed_backup(), now=0.0)
    machine.handle(advert_in(seed_master(), 50, A_ADDR), 2.0)
    assert machine.deadline == pytest.approx(2.0 + DOWN_90)
    assert machine.master_address == A_ADDR


# ---- backup receiving ----


def test_machine_backup_higher_advert_resets_timer_and_records_master() -> None:
    machine = started(seed_master(initial_state=State.BACKUP), now=0.0)
    machine.handle(advert_in(seed_backup(), 150, B_ADDR), 3.0)
    assert machine.deadline == pytest.approx(3.0 + DOWN_100)
    assert machine.master_address == B_ADDR
    assert machine.state is State.BACKUP


def test_machine_backup_equal_priority_advert_accepted() -> None:
    machine = started(seed_master(initial_state=State.BACKUP), now=0.0)
    machine.handle(advert_in(seed_backup(), 100, B_ADDR), 3.0)
    assert machine.deadline == pytest.approx(3.0 + DOWN_100)


def test_machine_backup_lower_advert_discarded_then_preempts() -> None:
    machine = started(seed_master(initial_state=State.BACKUP), now=0.0)
    for t in (1.0, 2.0, 3.0):
        assert machine.handle(advert_in(seed_backup(), 90, B_ADDR), t) == []
        assert machine.deadline == pytest.approx(DOWN_100)
    time, actions = run_to_deadline(machine)
    assert time == pytest.approx(DOWN_100)
    assert transitions(actions)[0].reason is Reason.PREEMPTED_LOWER_MASTER


def test_machine_backup_silence_after_reset_reports_master_down() -> None:
    machine = started(seed_master(initial_state=State.BACKUP), now=0.0)
    machine.handle(advert_in(seed_backup(), 90, B_ADDR), 1.0)  # lower, discarded
    machine.handle(advert_in(seed_backup(), 150, B_ADDR), 2.0)  # accepted: fresh timer
    time, actions = run_to_deadline(machine)
    assert time == pytest.approx(2.0 + DOWN_100)
    assert transitions(actions)[0].reason is Reason.MASTER_DOWN


def test_machine_backup_priority_zero_takes_over_after_skew() -> None:
    machine = started(seed_backup(), now=0.0)
    machine.handle(advert_in(seed_master(), 100, A_ADDR), 1.0)
    machine.handle(advert_in(seed_master(), 0, A_ADDR), 1.5)
    assert machine.deadline == pytest.approx(1.5 + SKEW_90)
    _, actions = run_to_deadline(machine)
    assert transitions(actions)[0].reason is Reason.MASTER_RESIGNED
    assert machine.state is State.MASTER


def test_machine_backup_v3_adopts_master_interval() -> None:
    config = seed_master(version=3, initial_state=State.BACKUP, priority=90, auth_pass=None)
    machine = started(config, now=0.0)
    fast = AdvertIn(
        advert=Advert(version=3, vrid=51, priority=100, interval=0.5, addresses=(VIP.ip,)),
        src=B_ADDR,
    )
    machine.handle(fast, 1.0)
    assert machine.master_adver_int == 0.5
    assert machine.deadline == pytest.approx(1.0 + 1.5 + 166 * 0.5 / 256)
    _, actions = run_to_deadline(machine)
    assert actions[0] == SendAdvert(90, 1.0)  # as master we advertise our own interval
    assert machine.master_adver_int == 1.0


def test_machine_backup_preempt_delay_accepts_lower_adverts_while_running() -> None:
    config = seed_master(initial_state=State.BACKUP, preempt_delay=10.0)
    machine = started(config, now=0.0)
    for t in range(1, 10):
        machine.handle(advert_in(seed_backup(), 50, B_ADDR), float(t))
        assert machine.deadline == pytest.approx(t + DOWN_100)
    machine.handle(advert_in(seed_backup(), 50, B_ADDR), 10.0)  # delay over: discarded
    time, actions = run_to_deadline(machine)
    assert time == pytest.approx(9.0 + DOWN_100)
    assert transitions(actions)[0].reason is Reason.PREEMPTED_LOWER_MASTER


# ---- master receiving ----


def test_machine_master_sends_advert_every_interval_and_second_garp() -> None:
    machine = master_machine()
    start = DOWN_100
    sends: list[float] = []
    garps: list[float] = []
    while (deadline := machine.deadline) is not None and deadline < start + 10.5:
        for action in machine.handle(Tick(), deadline):
            if isinstance(action, SendAdvert):
                sends.append(deadline - start)
                assert action == SendAdvert(100, 1.0)
            if isinstance(action, GratuitousArp):
                garps.append(deadline - start)
    assert sends == pytest.approx([float(n) for n in range(1, 11)])
    assert garps == pytest.approx([5.0])


def test_machine_master_priority_zero_advert_answered_at_once() -> None:
    machine = master_machine()
    actions = machine.handle(advert_in(seed_backup(), 0, B_ADDR), 4.0)
    assert actions == [SendAdvert(100, 1.0)]
    assert machine.state is State.MASTER


def test_machine_master_lower_advert_readvertises_with_garp() -> None:
    machine = master_machine()
    actions = machine.handle(advert_in(seed_backup(), 90, B_ADDR), 4.0)
    assert actions == [SendAdvert(100, 1.0), GratuitousArp((VIP,), 5)]
    assert machine.state is State.MASTER


def test_machine_master_higher_advert_goes_backup() -> None:
    machine = master_machine()
    actions = machine.handle(advert_in(seed_backup(), 150, B_ADDR), 4.0)
    assert actions[0] == RemoveVips((VIP,))
    assert transitions(actions) == [
        Transition(
            State.MASTER,
            State.BACKUP,
            Reason.HIGHER_PRIORITY_ADVERT,
            100,
            f"advert from {B_ADDR} priority 150",
        )
    ]
    assert machine.deadline == pytest.approx(4.0 + DOWN_100)
    assert machine.master_address == B_ADDR


def test_machine_master_equal_priority_from_lower_address_wins_tie() -> None:
    machine = master_machine()  # 10.0.0.127
    lower = IPv4Address("10.0.0.5")
    actions = machine.handle(advert_in(seed_backup(), 100, lower), 4.0)
    assert actions == [SendAdvert(100, 1.0), GratuitousArp((VIP,), 5)]


def test_machine_master_equal_priority_from_higher_address_loses_tie() -> None:
    machine = master_machine()
    actions = machine.handle(advert_in(seed_backup(), 100, B_ADDR), 4.0)  # 10.0.0.223 > .127
    assert [type(a) for a in actions] == [RemoveVips, Transition]
    assert transitions(actions)[0].reason is Reason.TIE_BREAK_LOST
    assert machine.state is State.BACKUP


def test_machine_equal_priority_backup_accepts_first_master() -> None:
    net = Net()
    net.add("a", seed_master())
    net.add("b", seed_backup(priority=100, initial_state=State.MASTER, preempt=True))
    net.deliver("b", Start())
    net.now = 0.5
    net.deliver("a", Start())
    net.run_until(20.0)
    # Equal priority is accepted by a BACKUP: the address tie-break is only between masters.
    assert net.state("b") is State.MASTER
    assert net.state("a") is State.BACKUP


def test_machine_two_masters_equal_priority_higher_address_keeps_role() -> None:
    net = Net(linked=False)
    net.add("a", seed_master())
    net.add("b", seed_backup(priority=100, initial_state=State.MASTER, preempt=True))
    net.deliver("a", Start())
    net.deliver("b", Start())
    net.run_until(10.0)
    assert (net.state("a"), net.state("b")) == (State.MASTER, State.MASTER)  # partitioned
    net.linked = True
    net.run_until(20.0)
    assert net.state("b") is State.MASTER  # 10.0.0.223 beats 10.0.0.127
    assert net.state("a") is State.BACKUP
    ((_, lost),) = net.became("a", State.BACKUP)[1:]
    assert lost.reason is Reason.TIE_BREAK_LOST
