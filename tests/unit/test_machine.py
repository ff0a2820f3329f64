"""State machine tests on a fake clock: keepalived 2.2.7's rules and the seed guide's scenarios."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from tandem.vrrp.machine import VrrpMachine, master_down_interval, skew_time
from tandem.vrrp.packet import advert_for, decode, encode
from tandem.vrrp.types import (
    VRRP_MULTICAST,
    Action,
    AddVips,
    Advert,
    AdvertIn,
    ChecksChanged,
    Dropped,
    DropReason,
    Event,
    GratuitousArp,
    InstanceConfig,
    Reason,
    RemoveVips,
    Resign,
    SendAdvert,
    SourceCheck,
    Start,
    State,
    Stop,
    Tick,
    Transition,
)

A_ADDR = IPv4Address("10.0.0.127")  # the seed guide's master host
B_ADDR = IPv4Address("10.0.0.223")  # the seed guide's backup host
VIP = IPv4Interface("192.160.127.254/17")
DOWN_100 = 3 + 156 / 256  # 3.609375 s: priority 100, 1 s adverts
DOWN_90 = 3 + 166 / 256  # 3.6484375 s: priority 90
SKEW_90 = 166 / 256  # 0.6484375 s


def seed_master(**overrides: object) -> InstanceConfig:
    """The seed guide's master: state MASTER, priority 100, PASS abcdefgh, unicast."""
    config = InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=100,
        advert_interval=1.0,
        local_address=A_ADDR,
        initial_state=State.MASTER,
        vips=(VIP,),
        auth_pass=b"abcdefgh",
        skip_check_adv_addr=True,
        unicast_peers=(B_ADDR,),
        source_check=SourceCheck.OFF,  # keepalived's default: the sender is not checked
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def seed_backup(**overrides: object) -> InstanceConfig:
    """The seed guide's backup: state BACKUP, nopreempt, priority 90."""
    config = InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=90,
        advert_interval=1.0,
        local_address=B_ADDR,
        initial_state=State.BACKUP,
        preempt=False,
        vips=(VIP,),
        auth_pass=b"abcdefgh",
        skip_check_adv_addr=True,
        unicast_peers=(A_ADDR,),
        source_check=SourceCheck.OFF,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def advert_in(config: InstanceConfig, priority: int, src: IPv4Address, **kw: object) -> AdvertIn:
    """An advert as `config`'s peer would send it, from `src`."""
    advert = advert_for(config, priority, config.advert_interval)
    return AdvertIn(advert=advert, src=src, **kw)  # type: ignore[arg-type]


def transitions(actions: list[Action]) -> list[Transition]:
    return [a for a in actions if isinstance(a, Transition)]


def started(config: InstanceConfig, now: float = 0.0) -> VrrpMachine:
    machine = VrrpMachine(config)
    machine.handle(Start(), now)
    return machine


def run_to_deadline(machine: VrrpMachine) -> tuple[float, list[Action]]:
    deadline = machine.deadline
    assert deadline is not None
    return deadline, machine.handle(Tick(), deadline)


# ---- a two-node network on a fake clock ----


@dataclass
class Node:
    config: InstanceConfig
    machine: VrrpMachine
    alive: bool = True


@dataclass
class Sent:
    time: float
    sender: str
    priority: int


@dataclass
class Net:
    """Two machines joined by a lossless wire; adverts go through the real codec."""

    nodes: dict[str, Node] = field(default_factory=dict)
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    transitions: list[tuple[float, str, Transition]] = field(default_factory=list)
    drops: list[tuple[str, Dropped]] = field(default_factory=list)
    linked: bool = True

    def add(self, name: str, config: InstanceConfig) -> None:
        self.nodes[name] = Node(config, VrrpMachine(config))

    def deliver(self, name: str, event: Event) -> None:
        queue: deque[tuple[str, Event]] = deque([(name, event)])
        while queue:
            target, current = queue.popleft()
            node = self.nodes[target]
            if not node.alive:
                continue
            for action in node.machine.handle(current, self.now):
                if isinstance(action, Transition):
                    self.transitions.append((self.now, target, action))
                elif isinstance(action, Dropped):
                    self.drops.append((target, action))
                elif isinstance(action, SendAdvert):
                    for _ in range(action.count):
                        self.sent.append(Sent(self.now, target, action.priority))
                        queue.extend(self._wire(target, action))

    def _wire(self, sender: str, action: SendAdvert) -> list[tuple[str, Event]]:
        config = self.nodes[sender].config
        advert = advert_for(config, action.priority, action.interval)
        out: list[tuple[str, Event]] = []
        if not self.linked:
            return out
        for name, node in self.nodes.items():
            if name == sender or node.config.local_address not in config.unicast_peers:
                continue
            dst = node.config.local_address
            decoded = decode(encode(advert, config.local_address, dst), config.local_address, dst)
            assert isinstance(decoded, Advert), decoded
            out.append((name, AdvertIn(advert=decoded, src=config.local_address, ttl=255)))
        return out

    def run_until(self, end: float) -> None:
        """Deliver every Tick due before `end`, in time order, then set the clock to `end`."""
        while True:
            due = [
                (node.machine.deadline, name)
                for name, node in self.nodes.items()
                if node.alive and node.machine.deadline is not None
            ]
            if not due:
                break
            deadline, name = min(due)
            assert deadline is not None
            if deadline > end:
                break
            self.now = max(self.now, deadline)
            self.deliver(name, Tick())
        self.now = end

    def state(self, name: str) -> State:
        return self.nodes[name].machine.state

    def became(self, name: str, state: State) -> list[tuple[float, Transition]]:
        return [(t, tr) for t, n, tr in self.transitions if n == name and tr.new is state]


def seed_net() -> Net:
    net = Net()
    net.add("a", seed_master())
    net.add("b", seed_backup())
    net.deliver("a", Start())
    net.deliver("b", Start())
    net.run_until(10.0)
    return net


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


def master_machine(**overrides: object) -> VrrpMachine:
    machine = started(seed_master(**overrides), now=0.0)
    run_to_deadline(machine)
    assert machine.state is State.MASTER
    return machine


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
