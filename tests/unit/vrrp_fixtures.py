"""Shared pieces of the state machine tests: the seed guide's configs and a fake network."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface

from tandem.vrrp.machine import VrrpMachine
from tandem.vrrp.packet import advert_for, decode, encode
from tandem.vrrp.types import (
    Action,
    Advert,
    AdvertIn,
    Dropped,
    Event,
    InstanceConfig,
    SendAdvert,
    SourceCheck,
    Start,
    State,
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


def master_machine(**overrides: object) -> VrrpMachine:
    machine = started(seed_master(**overrides), now=0.0)
    run_to_deadline(machine)
    assert machine.state is State.MASTER
    return machine
