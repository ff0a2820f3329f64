"""The asyncio driver: feeds a VRRP machine packets, check results and time; runs its actions.

The machine decides, the driver only does. Every event goes through one queue so the machine
sees a single ordered stream, and actions run in the order the machine emitted them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Protocol

from tandem.net.transport import VrrpTransport
from tandem.vrrp import packet
from tandem.vrrp.machine import VrrpMachine
from tandem.vrrp.types import (
    VRRP_MULTICAST,
    Action,
    AddVips,
    AdvertIn,
    ChecksChanged,
    Drop,
    Dropped,
    DropReason,
    Event,
    GratuitousArp,
    InstanceConfig,
    RemoveVips,
    Resign,
    SendAdvert,
    Start,
    State,
    Stop,
    Tick,
    Transition,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class VipControl(Protocol):
    def add(self, vips: Sequence[IPv4Interface]) -> None: ...

    def remove(self, vips: Sequence[IPv4Interface]) -> None: ...

    def gratuitous_arp(self, vips: Sequence[IPv4Interface], count: int = 1) -> None: ...


class Notifier(Protocol):
    def submit(self, state: str, priority: int) -> None: ...

    async def drain(self) -> None: ...


# Receive-check failures that mean "the peer is configured differently", with what to fix.
MISMATCH_HINTS: dict[DropReason, str] = {
    DropReason.AUTH_MISMATCH: "make auth_pass the same on both nodes",
    DropReason.AUTH_TYPE_MISMATCH: "make auth_type the same on both nodes",
    DropReason.VERSION_MISMATCH: "make vrrp_version the same on both nodes",
    DropReason.INTERVAL_MISMATCH: "make advert_int the same on both nodes",
    DropReason.NADDR_MISMATCH: "make virtual_ipaddress the same on both nodes",
    DropReason.VIP_MISMATCH: "make virtual_ipaddress the same on both nodes",
}


# Keys that senders choose (their address) are kept in bounded tables: a flood of spoofed
# sources must not grow memory, only evict the oldest entries.
MAX_TRACKED_SOURCES = 64
TRANSITION_HISTORY = 100  # recent transitions kept for status; counters keep the totals


@dataclass(slots=True)
class RateLimitedLog:
    """Logs a repeated peer problem once per key per period, counting what it held back."""

    period: float = 10.0
    clock: Clock = time.monotonic
    logger: logging.Logger = log
    max_keys: int = MAX_TRACKED_SOURCES
    _last: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _held: dict[str, int] = field(default_factory=dict)

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            oldest, _ = self._last.popitem(last=False)
            self._held.pop(oldest, None)
        suffix = f" (+{held} similar suppressed)" if held else ""
        self.logger.warning(msg + suffix, *args)


@dataclass(slots=True)
class DriverStats:
    """What the driver has seen and done, for status, metrics and tests.

    Everything here is bounded, however long the node runs and whatever peers send:
    `transitions` keeps the recent history, `transition_counts` the totals by reason.
    """

    adverts_sent: int = 0
    adverts_received: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    transitions: deque[Transition] = field(default_factory=lambda: deque(maxlen=TRANSITION_HISTORY))
    transition_counts: dict[str, int] = field(default_factory=dict)
    # Peers whose adverts we reject, by address: the classic cause of two MASTERs, by name.
    mismatched_peers: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def drop(self, reason: DropReason) -> None:
        self.drops[reason.value] = self.drops.get(reason.value, 0) + 1

    def transition(self, t: Transition) -> None:
        self.transitions.append(t)
        self.transition_counts[t.reason.value] = self.transition_counts.get(t.reason.value, 0) + 1

    def mismatch(self, src: IPv4Address, reason: DropReason) -> None:
        key = str(src)
        self.mismatched_peers[key] = reason.value
        self.mismatched_peers.move_to_end(key)
        while len(self.mismatched_peers) > MAX_TRACKED_SOURCES:
            self.mismatched_peers.popitem(last=False)


class VrrpDriver:
    """Runs one VRRP instance: one machine, one transport, its VIPs, hooks and checks."""

    def __init__(
        self,
        config: InstanceConfig,
        transport: VrrpTransport,
        *,
        vips: VipControl | None = None,
        notifier: Notifier | None = None,
        clock: Clock = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.config = config
        self.machine = VrrpMachine(config)
        self.transport = transport
        self.vips = vips
        self.notifier = notifier
        self.clock = clock
        self.on_transition = on_transition
        self.stats = DriverStats()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._drop_log = RateLimitedLog(clock=clock)

    @property
    def state(self) -> State:
        return self.machine.state

    # ---- inputs ----

    def checks_changed(self, change: ChecksChanged) -> None:
        """Called by the health layer whenever the fault flag or the weight sum changes."""
        self._events.put_nowait(change)

    def resign(self, detail: str = "") -> None:
        """Planned handover: if MASTER, send priority 0 and become BACKUP (the peer takes over)."""
        self._events.put_nowait(Resign(detail))

    def stop(self) -> None:
        """Ask for an orderly shutdown: priority-0 resign, VIPs removed, notify_stop."""
        self._events.put_nowait(Stop())

    # ---- the loop ----

    async def run(self) -> None:
        """Run until stop() is called or the task is cancelled (both resign cleanly)."""
        receiver = asyncio.create_task(self._receive(), name=f"vrrp-rx-{self.config.name}")
        try:
            self._dispatch(Start())
            while True:
                event = await self._next_event()
                self._dispatch(event)
                if isinstance(event, Stop):
                    break
        except asyncio.CancelledError:
            self._dispatch(Stop())
            raise
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            if self.notifier is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.notifier.drain())

    async def _next_event(self) -> Event:
        deadline = self.machine.deadline
        if deadline is None:
            return await self._events.get()
        timeout = deadline - self.clock()
        if timeout <= 0:
            return Tick()
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return Tick()

    async def _receive(self) -> None:
        while True:
            got = await self.transport.recv()
            if isinstance(got, Drop):
                self._count_drop(got.reason, None, got.detail)
                continue
            header, payload = got.header, got.payload
            decoded = packet.decode(payload, header.src, header.dst)
            if isinstance(decoded, Drop):
                self._count_drop(decoded.reason, header.src, decoded.detail)
                continue
            self.stats.adverts_received += 1
            self._events.put_nowait(
                AdvertIn(
                    advert=decoded,
                    src=header.src,
                    ttl=header.ttl,
                    multicast=header.dst == VRRP_MULTICAST,
                )
            )

    def _dispatch(self, event: Event) -> None:
        for action in self.machine.handle(event, self.clock()):
            self._execute(action)

    # ---- outputs ----

    def _execute(self, action: Action) -> None:
        if isinstance(action, SendAdvert):
            self._send_advert(action)
        elif isinstance(action, AddVips):
            if self.vips is not None and action.vips:
                self.vips.add(action.vips)
        elif isinstance(action, RemoveVips):
            if self.vips is not None and action.vips:
                self.vips.remove(action.vips)
        elif isinstance(action, GratuitousArp):
            if self.vips is not None and action.vips:
                self.vips.gratuitous_arp(action.vips, action.count)
        elif isinstance(action, Transition):
            self._transition(action)
        elif isinstance(action, Dropped):
            self._count_drop(action.reason, action.src, action.detail)

    def _send_advert(self, action: SendAdvert) -> None:
        advert = packet.advert_for(self.config, action.priority, action.interval)
        src = self.transport.local_address
        destinations = self.config.unicast_peers or (VRRP_MULTICAST,)
        for _ in range(action.count):
            for dst in destinations:
                try:
                    self.transport.send(packet.encode(advert, src, dst), dst)
                    self.stats.adverts_sent += 1
                except OSError as exc:
                    self._drop_log.warning(
                        f"send:{dst}", "%s: advert to %s failed: %s", self.config.name, dst, exc
                    )

    def _transition(self, t: Transition) -> None:
        self.stats.transition(t)
        detail = f": {t.detail}" if t.detail else ""
        log.info(
            "%s: %s -> %s (%s%s) priority %d",
            self.config.name,
            t.old.value,
            t.new.value,
            t.reason.value,
            detail,
            t.priority,
        )
        if self.notifier is not None:
            hook_state = "STOP" if t.new is State.INIT else t.new.value
            self.notifier.submit(hook_state, t.priority)
        if self.on_transition is not None:
            self.on_transition(t)

    def _count_drop(self, reason: DropReason, src: IPv4Address | None, detail: str) -> None:
        self.stats.drop(reason)
        if reason in (DropReason.UNKNOWN_VRID, DropReason.OWN_ADVERT):
            return  # keepalived ignores these silently too
        if reason is DropReason.UNKNOWN_SOURCE:
            # One key for all strangers: spoofing many sources cannot multiply the log lines.
            self._drop_log.warning(
                "unknown_source",
                "%s: dropped advert from %s: not a configured unicast peer",
                self.config.name,
                src,
            )
            return
        hint = MISMATCH_HINTS.get(reason)
        if hint is not None and src is not None:
            self.stats.mismatch(src, reason)
            self._drop_log.warning(
                f"mismatch:{reason.value}:{src}",
                "%s: rejecting adverts from %s (%s %s): both nodes will act as MASTER; %s",
                self.config.name,
                src,
                reason.value,
                detail,
                hint,
            )
            return
        self._drop_log.warning(
            f"drop:{reason.value}:{src}",
            "%s: dropped advert from %s: %s %s",
            self.config.name,
            src,
            reason.value,
            detail,
        )
