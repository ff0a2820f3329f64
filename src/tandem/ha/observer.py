"""Watches the broker: what was delivered (data topics), who leads (state), who is active.

The broker is the one place both nodes can see what subscribers got, so a node's watermarks
come from here first: a slot seen on the data topic is delivered, whoever sent it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from tandem.hub.mqtt import MqttSettings, build_tls_context

log = logging.getLogger(__name__)

# Retained messages arrive right after SUBACK; this margin lets them land before we trust
# that no higher term is announced.
SYNC_MARGIN_S = 0.15
_STR = rb'"((?:[^"\\]|\\.)*)"'
# Sample.payload() ends with these keys in this order; anchoring at the end means a tag that
# happens to be called "slot" or "term" can never be mistaken for them.
TAIL = re.compile(rb',"slot":(-?\d+),"seq":(-?\d+),"term":(-?\d+),"source_node":' + _STR + rb"\}$")
HEAD = re.compile(rb'^\{"timestamp":-?\d+,"node":' + _STR + rb',"group":' + _STR)


def state_topic(cluster: str) -> str:
    return f"tandem/{cluster}/state"


def heartbeat_topic(cluster: str) -> str:
    return f"tandem/{cluster}/heartbeat"


def barrier_topic(cluster: str, node: str) -> str:
    return f"tandem/{cluster}/barrier/{node}"


def wildcard(template: str) -> str:
    """The data topic template with every variable replaced by a single-level wildcard."""
    return re.sub(r"\{[^}]*\}", "+", template)


@dataclass(frozen=True, slots=True)
class Delivered:
    device: str
    group: str
    slot: int
    term: int
    source_node: str


def _unquote(raw: bytes) -> str:
    value = json.loads(b'"' + raw + b'"')
    assert isinstance(value, str)
    return value


def restamp(payload: bytes, term: int) -> bytes:
    """The payload with `term` replaced: buffered rows go out under the term that sends them."""
    match = TAIL.search(payload, max(0, len(payload) - 600))
    if match is None:
        return payload
    start, end = match.span(3)
    return payload[:start] + str(term).encode() + payload[end:]


def parse_delivered(payload: bytes) -> Delivered | None:
    """The identity fields of a data message, without decoding its (possibly large) values.

    The payload is our own compact JSON, so the identity fields are found by pattern; the
    values cannot contain them unescaped. Anything else on the topic is ignored.
    """
    try:
        head = HEAD.match(payload[:600])
        tail = TAIL.search(payload[-600:])
        if not (head and tail):
            return None
        return Delivered(
            device=_unquote(head.group(1)),
            group=_unquote(head.group(2)),
            slot=int(tail.group(1)),
            term=int(tail.group(3)),
            source_node=_unquote(tail.group(4)),
        )
    except (ValueError, UnicodeDecodeError):
        return None


class BrokerObserver:
    """A subscriber of its own (reconnecting) feeding the HA controller with broker facts."""

    def __init__(
        self,
        settings: MqttSettings,
        cluster: str,
        node: str,
        *,
        on_delivered: Callable[[Delivered], None],
        on_state: Callable[[int, str], None],
        on_heartbeat: Callable[[int, str], None],
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.node = node
        self._on_delivered = on_delivered
        self._on_state = on_state
        self._on_heartbeat = on_heartbeat
        self._synced_at: float | None = None
        self._client: aiomqtt.Client | None = None
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self.messages = 0
        self.connected = False

    @property
    def ready(self) -> bool:
        """Subscribed long enough for retained state to have arrived."""
        return self._synced_at is not None and time.monotonic() >= self._synced_at

    async def run(self) -> None:
        backoff = 0.1
        s = self.settings
        tls = build_tls_context(s)
        data_topic = wildcard(s.topic)
        while True:
            try:
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
                    await client.subscribe(
                        [
                            (data_topic, 1),
                            (state_topic(self.cluster), 1),
                            (heartbeat_topic(self.cluster), 0),
                            (barrier_topic(self.cluster, self.node), 1),
                        ]
                    )
                    self._client = client
                    self.connected = True
                    self._synced_at = time.monotonic() + SYNC_MARGIN_S
                    backoff = 0.1
                    async for message in client.messages:
                        self._handle(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("broker observer lost the broker: %s", exc)
            finally:
                self.connected = False
                self._client = None
                self._synced_at = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    async def barrier(self, timeout: float = 1.0) -> bool:
        """True once everything the broker sent us before now has been handled.

        We publish a token to a topic only we subscribe to; the broker delivers in order, so
        when the token comes back every data message it forwarded earlier (a dead master's
        last slots, say) has reached the controller. A new master runs this before it trims
        and publishes, so a busy event loop cannot make it miss a delivered slot.
        """
        client = self._client
        if client is None:
            return False
        token = uuid.uuid4().hex
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = done
        try:
            await client.publish(barrier_topic(self.cluster, self.node), token, qos=1)
            await asyncio.wait_for(done, timeout)
            return True
        except (aiomqtt.MqttError, TimeoutError):
            return False
        finally:
            self._barriers.pop(token, None)

    def _handle(self, topic: str, payload: object) -> None:
        if not isinstance(payload, bytes | bytearray):
            return
        self.messages += 1
        if topic == barrier_topic(self.cluster, self.node):
            waiter = self._barriers.get(bytes(payload).decode(errors="replace"))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if topic == state_topic(self.cluster) or topic == heartbeat_topic(self.cluster):
            try:
                doc = json.loads(payload)
                term, node = int(doc["term"]), str(doc["node"])
            except (ValueError, KeyError, TypeError):
                return
            if topic == state_topic(self.cluster):
                self._on_state(term, node)
            else:
                self._on_heartbeat(term, node)
            return
        delivered = parse_delivered(bytes(payload))
        if delivered is not None:
            self._on_delivered(delivered)
