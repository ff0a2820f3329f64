"""The asyncio driver over an in-memory wire: adverts, drops by reason, resign, notify order."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

import pytest

from tandem.net.driver import (
    MAX_TRACKED_SOURCES,
    TRANSITION_HISTORY,
    DriverStats,
    RateLimitedLog,
    VrrpDriver,
)
from tandem.net.transport import Received
from tandem.vrrp import packet
from tandem.vrrp.types import (
    Drop,
    DropReason,
    InstanceConfig,
    IpHeader,
    Reason,
    State,
    Transition,
)

A = IPv4Address("192.0.2.1")
B = IPv4Address("192.0.2.2")


@dataclass
class Wire:
    """Delivers each sent payload to the transport bound to its destination address."""

    ends: dict[IPv4Address, MemoryTransport] = field(default_factory=dict)
    cut: bool = False


class MemoryTransport:
    def __init__(self, wire: Wire, address: IPv4Address) -> None:
        self.wire = wire
        self.local_address = address
        self.inbox: asyncio.Queue[Received | Drop] = asyncio.Queue()
        self.sent: list[tuple[bytes, IPv4Address]] = []
        wire.ends[address] = self

    def send(self, payload: bytes, dst: IPv4Address) -> None:
        self.sent.append((payload, dst))
        peer = self.wire.ends.get(dst)
        if peer is not None and not self.wire.cut:
            header = IpHeader(self.local_address, dst, 255, 0, 0xC0, 20 + len(payload), 20)
            peer.inbox.put_nowait(Received(payload, header))

    async def recv(self) -> Received | Drop:
        return await self.inbox.get()


@dataclass
class Notes:
    calls: list[tuple[str, int]] = field(default_factory=list)

    def submit(self, state: str, priority: int) -> None:
        self.calls.append((state, priority))

    async def drain(self) -> None:
        return None


def config(local: IPv4Address, peer: IPv4Address, priority: int, **kw: object) -> InstanceConfig:
    base = InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=priority,
        advert_interval=0.05,
        local_address=local,
        version=3,
        unicast_peers=(peer,),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


async def wait_for_state(driver: VrrpDriver, state: State, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while driver.state is not state:
            await asyncio.sleep(0.005)


async def test_driver_pair_elects_higher_priority_and_fails_over_on_stop() -> None:
    wire = Wire()
    notes_a, notes_b = Notes(), Notes()
    a = VrrpDriver(config(A, B, 100), MemoryTransport(wire, A), notifier=notes_a)
    b = VrrpDriver(config(B, A, 90), MemoryTransport(wire, B), notifier=notes_b)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_for_state(a, State.MASTER)
        await asyncio.sleep(0.3)
        assert b.state is State.BACKUP  # the master's adverts keep resetting its timer
        a.stop()
        await wait_for_state(b, State.MASTER)
        took = [t for t in b.stats.transitions if t.new is State.MASTER]
        assert took[-1].reason is Reason.MASTER_RESIGNED
    finally:
        b.stop()
        await asyncio.gather(*tasks)
    assert notes_a.calls[0] == ("BACKUP", 100)
    assert ("MASTER", 100) in notes_a.calls and notes_a.calls[-1] == ("STOP", 100)
    assert notes_b.calls[-2:] == [("MASTER", 90), ("STOP", 90)]
    # the resign advert is on the wire with priority 0
    last = packet.decode(a.transport.sent[-1][0], A, B)  # type: ignore[attr-defined]
    assert not isinstance(last, Drop) and last.priority == 0


async def test_driver_counts_mismatched_peer_by_name_and_stays_master() -> None:
    wire = Wire()
    a = VrrpDriver(
        config(A, B, 100, version=2, advert_interval=1.0, auth_pass=b"secret1"),
        MemoryTransport(wire, A),
    )
    b = VrrpDriver(
        config(B, A, 90, version=2, advert_interval=1.0, auth_pass=b"secret2"),
        MemoryTransport(wire, B),
    )
    # v2 adverts are whole seconds: both sides need a full down interval (~3.6 s) to act.
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_for_state(a, State.MASTER, timeout=6.0)
        await wait_for_state(b, State.MASTER, timeout=6.0)
        await asyncio.sleep(1.1)
        assert b.stats.drops.get(DropReason.AUTH_MISMATCH.value, 0) >= 1
        assert b.stats.mismatched_peers == {str(A): "auth_mismatch"}
        assert (a.state, b.state) == (State.MASTER, State.MASTER)
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)


async def test_driver_counts_codec_drops_and_keeps_running() -> None:
    wire = Wire()
    t = MemoryTransport(wire, A)
    d = VrrpDriver(config(A, B, 100), t)
    task = asyncio.create_task(d.run())
    try:
        header = IpHeader(B, A, 255, 0, 0xC0, 28, 20)
        t.inbox.put_nowait(Received(b"\x31\x33\x64\x00\x00\x00\x00\x00", header))  # bad checksum
        t.inbox.put_nowait(Drop(DropReason.BAD_LENGTH, "transport-level"))
        await asyncio.sleep(0.05)
        assert d.stats.drops[DropReason.BAD_CHECKSUM.value] == 1
        assert d.stats.drops[DropReason.BAD_LENGTH.value] == 1
        assert not task.done()
    finally:
        d.stop()
        await task


async def test_driver_resign_moves_role_to_nopreempt_peer() -> None:
    wire = Wire()
    a = VrrpDriver(config(A, B, 100, preempt=False), MemoryTransport(wire, A))
    b = VrrpDriver(config(B, A, 90, preempt=False), MemoryTransport(wire, B))
    seen: list[Transition] = []
    a.on_transition = seen.append
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_for_state(a, State.MASTER)
        a.resign("test")
        await wait_for_state(b, State.MASTER)
        await asyncio.sleep(0.4)  # longer than a's down interval: nopreempt keeps it BACKUP
        assert a.state is State.BACKUP
        assert seen[-1].reason is Reason.HANDOVER and seen[-1].detail == "test"
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)


async def test_driver_cancelled_still_resigns() -> None:
    wire = Wire()
    t = MemoryTransport(wire, A)
    d = VrrpDriver(config(A, B, 100), t)
    task = asyncio.create_task(d.run())
    await wait_for_state(d, State.MASTER)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    last = packet.decode(t.sent[-1][0], A, B)
    assert not isinstance(last, Drop) and last.priority == 0


def _advert_from(src: IPv4Address, dst: IPv4Address, cfg: InstanceConfig) -> Received:
    payload = packet.encode(packet.advert_for(cfg, 200, cfg.advert_interval), src, dst)
    return Received(payload, IpHeader(src, dst, 255, 0, 0xC0, 20 + len(payload), 20))


async def test_driver_unknown_source_counted_and_logged_once_naming_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = Wire()
    t = MemoryTransport(wire, A)
    d = VrrpDriver(config(A, B, 100), t)
    task = asyncio.create_task(d.run())
    stranger = IPv4Address("192.0.2.66")
    try:
        await asyncio.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger="tandem.net.driver"):
            for n in range(50):
                spoofed = IPv4Address(int(stranger) + n)
                t.inbox.put_nowait(_advert_from(spoofed, A, d.config))
            deadline = time.monotonic() + 5.0
            while d.stats.drops.get("unknown_source", 0) < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        assert d.stats.drops == {"unknown_source": 50}
        lines = [r.getMessage() for r in caplog.records if "unicast peer" in r.getMessage()]
        assert lines == [f"VI_1: dropped advert from {stranger}: not a configured unicast peer"]
        assert d.stats.mismatched_peers == {}
        assert d.state is not State.BACKUP or d.machine.master_address != stranger
    finally:
        d.stop()
        await task


def test_driver_stats_keep_bounded_history_and_counts_by_reason() -> None:
    stats = DriverStats()
    flip = [
        Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN, 100),
        Transition(State.MASTER, State.BACKUP, Reason.HIGHER_PRIORITY_ADVERT, 100),
    ]
    for n in range(TRANSITION_HISTORY * 3):
        stats.transition(flip[n % 2])
    assert len(stats.transitions) == TRANSITION_HISTORY
    assert stats.transition_counts == {
        "master_down_timer_expired": TRANSITION_HISTORY * 3 // 2,
        "higher_priority_advert": TRANSITION_HISTORY * 3 // 2,
    }
    assert stats.transitions[-1] == flip[1]


def test_driver_stats_mismatched_peers_bounded_newest_kept() -> None:
    stats = DriverStats()
    first = IPv4Address("198.51.100.1")
    for n in range(MAX_TRACKED_SOURCES + 10):
        stats.mismatch(IPv4Address(int(first) + n), DropReason.AUTH_MISMATCH)
    assert len(stats.mismatched_peers) == MAX_TRACKED_SOURCES
    newest = str(IPv4Address(int(first) + MAX_TRACKED_SOURCES + 9))
    assert newest in stats.mismatched_peers and str(first) not in stats.mismatched_peers


def test_rate_limited_log_forgets_oldest_keys_beyond_bound() -> None:
    now = [0.0]
    limiter = RateLimitedLog(period=10.0, clock=lambda: now[0], max_keys=4)
    for n in range(20):
        limiter.warning(f"k{n}", "message %s", n)
    assert len(limiter._last) == 4 and set(limiter._last) == {"k16", "k17", "k18", "k19"}
