"""The subscriber's view of delivery: lost, duplicated and out-of-order slots per stream.

Used by the demo's live summary, the HA tests and the failover benchmark, so all three judge
"zero lost, zero duplicated" by the same rule: within a stream (device/group) the slots seen
must form one consecutive run, each slot once, in increasing order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiomqtt

from tandem.ha.wire import DataIdentity, parse_data, wildcard

Delivered = DataIdentity  # what one data message says it is, as the audit reads it


def parse_delivered(payload: bytes) -> DataIdentity | None:
    """The identity of a data message, or None for anything else (the audit does not verify)."""
    d = parse_data(payload)
    return d if isinstance(d, DataIdentity) else None


@dataclass(slots=True)
class StreamAudit:
    first: int | None = None
    last: int | None = None
    seen: set[int] = field(default_factory=set)
    duplicate_slots: list[int] = field(default_factory=list)
    out_of_order: int = 0

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_slots)

    def add(self, slot: int) -> None:
        if slot in self.seen:
            self.duplicate_slots.append(slot)
            return
        if self.last is not None and slot < self.last:
            self.out_of_order += 1
        self.seen.add(slot)
        self.first = slot if self.first is None else min(self.first, slot)
        self.last = slot if self.last is None else max(self.last, slot)

    @property
    def lost(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return (self.last - self.first + 1) - len(self.seen)

    def missing(self) -> list[int]:
        if self.first is None or self.last is None:
            return []
        return [s for s in range(self.first, self.last + 1) if s not in self.seen]


@dataclass(slots=True)
class Arrival:
    at: float  # time.time() at the subscriber
    delivered: Delivered


@dataclass(slots=True)
class DeliveryAudit:
    """Every data message a subscriber saw, judged per stream."""

    streams: dict[str, StreamAudit] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    keep_arrivals: bool = True

    def add(self, d: Delivered, at: float | None = None) -> None:
        key = f"{d.device}/{d.group}"
        self.streams.setdefault(key, StreamAudit()).add(d.slot)
        if self.keep_arrivals:
            self.arrivals.append(Arrival(time.time() if at is None else at, d))

    @property
    def messages(self) -> int:
        return sum(len(s.seen) + s.duplicates for s in self.streams.values())

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.streams.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.streams.values())

    @property
    def out_of_order(self) -> int:
        return sum(s.out_of_order for s in self.streams.values())

    def first_after(self, t: float, source_node: str | None = None) -> Arrival | None:
        """The first message at or after `t`, from a given publisher if asked."""
        for a in self.arrivals:
            if a.at >= t and (source_node is None or a.delivered.source_node == source_node):
                return a
        return None

    def publishers(self) -> list[str]:
        """Publishers in the order they took over (consecutive runs collapsed)."""
        out: list[str] = []
        for a in self.arrivals:
            if not out or out[-1] != a.delivered.source_node:
                out.append(a.delivered.source_node)
        return out


class AuditSubscriber:
    """A persistent-session MQTT subscriber feeding a DeliveryAudit; reconnects by itself.

    clean_session=False with a fixed client id lets the broker queue for us across our own
    reconnects; a broker restart keeps that session only when the broker persists sessions.
    """

    def __init__(
        self, host: str, port: int, topic_template: str, client_id: str = "tandem-audit"
    ) -> None:
        self.host, self.port = host, port
        self.topic = wildcard(topic_template)
        self.client_id = client_id
        self.audit = DeliveryAudit()
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, clean_session=False
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            d = parse_delivered(bytes(payload))
                            if d is not None:
                                self.audit.add(d)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> AuditSubscriber:
        self._task = asyncio.create_task(self.run(), name="audit-subscriber")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
