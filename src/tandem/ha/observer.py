"""Watches the broker: what was delivered (data topics), who leads (state), who is active.

The broker is the one place both nodes can see what subscribers got, so a node's watermarks
come from here first. Everything on it is hostile until checked: each message is handled
inside a guard (size cap, strict parse, signature, slot window, replay check) and anything
else becomes a counted drop with a rate-limited log line. No message can end the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiomqtt
import orjson

from tandem.ha.types import Delivered, Fact, TermSeen
from tandem.ha.wire import (
    BrokerDrop,
    Control,
    Signer,
    barrier_topic,
    heartbeat_topic,
    parse_control,
    parse_data,
    state_topic,
    wildcard,
)
from tandem.hub.mqtt import MqttSettings, build_tls_context
from tandem.net.driver import RateLimitedLog

log = logging.getLogger(__name__)

# Retained messages arrive right after SUBACK; this margin lets them land before we trust
# that no higher term is announced.
SYNC_MARGIN_S = 0.15
DEFAULT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BrokerRules:
    """What an acceptable broker message looks like for this node."""

    intervals: Mapping[str, float]  # stream key -> group interval: known streams only
    max_bytes: int = DEFAULT_MAX_BYTES
    max_future_s: float = 5.0  # clock skew tolerated for slots ahead of our own clock


@dataclass(slots=True)
class DropCounts:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: BrokerDrop) -> None:
        self.counts[reason.value] = self.counts.get(reason.value, 0) + 1


class BrokerObserver:
    """A subscriber of its own (reconnecting) turning broker messages into checked facts."""

    def __init__(
        self,
        settings: MqttSettings,
        cluster: str,
        node: str,
        signer: Signer,
        rules: BrokerRules,
        emit: Callable[[Fact], None],
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.node = node
        self.signer = signer
        self.rules = rules
        self._emit = emit
        self._wall = wall
        self._synced_at: float | None = None
        self._client: aiomqtt.Client | None = None
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._heartbeats: dict[str, tuple[int, int]] = {}  # node -> newest (term, ts_ms)
        self._topics = (
            state_topic(cluster),
            heartbeat_topic(cluster),
            barrier_topic(cluster, node),
        )
        self.messages = 0
        self.watch_data = True
        self.drops = DropCounts()
        self.connected = False
        self._drop_log = RateLimitedLog(logger=log)

    @property
    def ready(self) -> bool:
        """Subscribed long enough for retained state to have arrived."""
        return self._synced_at is not None and time.monotonic() >= self._synced_at

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
                backoff = 0.1
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("broker observer lost the broker: %s", exc)
            finally:
                self.connected = False
                self._client = None
                self._synced_at = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    async def _session(self) -> None:
        s = self.settings
        tls = build_tls_context(s)
        async with aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=f"tandem-observer-{self.node}",
            keepalive=s.keepalive,
            tls_context=tls,
            tls_insecure=s.tls_insecure if tls is not None else None,
        ) as client:
            state, heartbeat, barrier = self._topics
            topics = [(state, 1), (heartbeat, 0), (barrier, 1)]
            if self.watch_data:
                topics.append((wildcard(s.topic), 1))
            await client.subscribe(topics)
            self._client = client
            self.connected = True
            self._synced_at = time.monotonic() + SYNC_MARGIN_S
            async for message in client.messages:
                self.handle(str(message.topic), message.payload)

    async def set_watch_data(self, on: bool) -> None:
        """Follow the data topics, or not: a publishing master learns its watermarks from its
        own PUBACKs and other nodes' terms from their state and heartbeats, so receiving every
        one of its own messages back would only cost it CPU."""
        if on == self.watch_data:
            return
        self.watch_data = on
        client = self._client
        if client is None:
            return  # the next session subscribes as asked
        topic = wildcard(self.settings.topic)
        try:
            if on:
                await client.subscribe(topic, qos=1)
            else:
                await client.unsubscribe(topic)
        except aiomqtt.MqttError as exc:
            log.warning(
                "broker observer could not %s the data topics: %s", "follow" if on else "leave", exc
            )

    async def barrier(self, timeout: float = 1.0) -> bool:
        """True once everything the broker sent us before now has been handled.

        We publish a signed token to a topic only we subscribe to; the broker delivers in
        order, so when the token comes back every data message it forwarded earlier (a dead
        master's last slots, say) has been turned into facts, ahead of the barrier's result.
        """
        client = self._client
        if client is None:
            return False
        token = uuid.uuid4().hex
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = done
        body = orjson.dumps({"token": token, "sig": self.signer.barrier(self.node, token)})
        try:
            await client.publish(self._topics[2], body, qos=1)
            await asyncio.wait_for(done, timeout)
            return True
        except (aiomqtt.MqttError, TimeoutError):
            return False
        finally:
            self._barriers.pop(token, None)

    # ---- the guard ----

    def handle(self, topic: str, payload: object) -> None:
        """One message, in a guard: whatever it contains, it ends as a fact or a counted drop."""
        self.messages += 1
        try:
            reason = self._dispatch(topic, payload)
        except Exception:  # the last line of defence: a bug here must not end the loop
            log.exception("broker observer: message on %s could not be handled", topic)
            reason = BrokerDrop.INTERNAL
        if reason is not None:
            self.drops.add(reason)
            self._drop_log.warning(
                f"{reason.value}:{topic}",
                "broker message on %s dropped: %s",
                topic[:200],
                reason.value,
            )

    def _dispatch(self, topic: str, payload: object) -> BrokerDrop | None:
        if not isinstance(payload, bytes | bytearray):
            return BrokerDrop.MALFORMED
        body = bytes(payload)
        if len(body) > self.rules.max_bytes:
            return BrokerDrop.OVERSIZED
        state, heartbeat, barrier = self._topics
        if topic == barrier:
            return self._on_barrier(body)
        if topic in (state, heartbeat):
            return self._on_control(body, active=topic == heartbeat)
        return self._on_data(body)

    def _on_barrier(self, body: bytes) -> BrokerDrop | None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return BrokerDrop.MALFORMED
        token, sig = (doc.get("token"), doc.get("sig")) if isinstance(doc, dict) else (None, None)
        if not isinstance(token, str) or not isinstance(sig, str):
            return BrokerDrop.MALFORMED
        if not self.signer.barrier_valid(self.node, token, sig):
            return BrokerDrop.BAD_SIGNATURE
        waiter = self._barriers.get(token)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return None

    def _on_control(self, body: bytes, *, active: bool) -> BrokerDrop | None:
        control = parse_control(body)
        if isinstance(control, BrokerDrop):
            return control
        kind = "heartbeat" if active else "state"
        if control.sig is None:
            return BrokerDrop.UNSIGNED
        if not self.signer.control_valid(kind, control):
            return BrokerDrop.BAD_SIGNATURE
        if active and not self._fresh_heartbeat(control):
            return BrokerDrop.REPLAYED
        self._emit(TermSeen(control.term, control.node, active=active))
        return None

    def _fresh_heartbeat(self, c: Control) -> bool:
        """Replays of a node's old heartbeats must not keep a new master waiting."""
        newest = self._heartbeats.get(c.node)
        if newest is not None and (c.term, c.ts_ms) <= newest:
            return False
        self._heartbeats[c.node] = (c.term, c.ts_ms)
        return True

    def _on_data(self, body: bytes) -> BrokerDrop | None:
        d = parse_data(body)
        if isinstance(d, BrokerDrop):
            return d
        interval = self.rules.intervals.get(d.key)
        if interval is None:
            return BrokerDrop.UNKNOWN_STREAM
        if d.sig is None:
            return BrokerDrop.UNSIGNED
        if not self.signer.data_valid(d):
            return BrokerDrop.BAD_SIGNATURE
        newest = math.floor((self._wall() + self.rules.max_future_s) / interval)
        if d.slot > newest:
            return BrokerDrop.FUTURE_SLOT
        self._emit(Delivered(((d.key, d.slot, d.term, d.source_node),)))
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._client is not None:
                await self._client.__aexit__(None, None, None)


__all__ = ["BrokerObserver", "BrokerRules", "DropCounts"]
