"""The broker observer's guard: every hostile message is a counted drop, never a crash."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from tandem.ha.hubside import wire_payload
from tandem.ha.observer import BrokerObserver, BrokerRules
from tandem.ha.types import Delivered, Fact, TermSeen
from tandem.ha.wire import DataIdentity, Signer, parse_data
from tandem.hub.model import Sample
from tandem.hub.mqtt import MqttSettings
from tandem.hub.outbox import OutboxRow, encode_payload
from tandem.hub.wire import body_of_message

KEY = "plc1/fast"
INTERVAL = 0.1
SIGNER = Signer(b"s" * 32, "line1")
OTHER = Signer(b"t" * 32, "line1")
STATE, HEARTBEAT = "tandem/line1/state", "tandem/line1/heartbeat"
DATA = "/neuron/plc1"


def now_slot() -> int:
    return math.floor(time.time() / INTERVAL)


def data(
    slot: int | None = None, term: int = 2, signer: Signer | None = SIGNER, **kw: object
) -> bytes:
    fields: dict[str, object] = {
        "node": "plc1",
        "group": "fast",
        "slot": now_slot() if slot is None else slot,
        "timestamp_ms": 1,
        "values": {"x": 1},
        "errors": {},
        "seq": 1,
        "source_node": "node-b",
        "term": 0,
    }
    fields.update(kw)
    raw = encode_payload(Sample(**fields))  # type: ignore[arg-type]
    if signer is None:
        return raw
    d = parse_data(raw)
    assert isinstance(d, DataIdentity)
    body = body_of_message(raw)
    assert body is not None
    row = OutboxRow(1, d.device, d.group, d.slot, d.seq, d.source_node, 1, body)
    return wire_payload(
        row, term, signer.data(d.device, d.group, d.slot, d.seq, term, d.source_node)
    )


def control(
    kind: str, term: int, node: str = "node-b", ts: int | None = None, signer: Signer = SIGNER
) -> bytes:
    return signer.control_payload(kind, node, term, int(time.time() * 1000) if ts is None else ts)


class Harness:
    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self.observer = BrokerObserver(
            MqttSettings(),
            "line1",
            "node-a",
            SIGNER,
            BrokerRules({KEY: INTERVAL}),
            self.facts.append,
        )

    def feed(self, topic: str, payload: object) -> list[Fact]:
        before = len(self.facts)
        self.observer.handle(topic, payload)
        return self.facts[before:]


HOSTILE: list[tuple[str, str, object, str]] = [
    ("infinity term", STATE, b'{"term": Infinity, "node": "x"}', "malformed"),
    ("nan term", STATE, b'{"term": NaN, "node": "x"}', "malformed"),
    ("deep nesting", STATE, b"[" * 5000, "malformed"),
    ("huge term", STATE, b'{"term": 1' + b"0" * 40 + b', "node": "x"}', "malformed"),
    ("term past 2^63", STATE, b'{"term": 9223372036854775808, "node": "x"}', "out_of_range"),
    ("float term", HEARTBEAT, b'{"term": 1.5, "node": "x"}', "malformed"),
    ("bool term", HEARTBEAT, b'{"term": true, "node": "x"}', "malformed"),
    ("unsigned state", STATE, b'{"term": 9, "node": "node-b", "ts_ms": 1}', "unsigned"),
    ("forged state", STATE, control("state", 9, signer=OTHER), "bad_signature"),
    ("heartbeat signed as state", HEARTBEAT, control("state", 9), "bad_signature"),
    ("unsigned heartbeat", HEARTBEAT, b'{"term": 9, "node": "node-b", "ts_ms": 5}', "unsigned"),
    ("oversized", DATA, b"x" * (300 * 1024), "oversized"),
    ("not bytes", DATA, 12345, "malformed"),
    ("not json", DATA, b"\x00\x01garbage", "malformed"),
    ("unsigned data", DATA, data(signer=None), "unsigned"),
    ("forged data", DATA, data(signer=OTHER), "bad_signature"),
    ("far-future slot", DATA, data(slot=now_slot() + 10_000_000), "future_slot"),
    (
        "40-digit slot",
        DATA,
        data().replace(b'"slot":', b'"slot":1' + b"0" * 39 + b"#", 1),
        "malformed",
    ),
    ("unknown stream", DATA, data(group="other"), "unknown_stream"),
    ("bad barrier", "tandem/line1/barrier/node-a", b'{"token": "t", "sig": "00"}', "bad_signature"),
    ("barrier junk", "tandem/line1/barrier/node-a", b"[1,2]", "malformed"),
]


@pytest.mark.parametrize(
    ("case", "topic", "payload", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_observer_hostile_message_is_a_counted_drop(
    case: str, topic: str, payload: object, reason: str
) -> None:
    h = Harness()
    assert h.feed(topic, payload) == []
    assert h.observer.drops.counts == {reason: 1}


def test_observer_signed_messages_become_facts() -> None:
    h = Harness()
    slot = now_slot()
    assert h.feed(DATA, data(slot=slot, term=3)) == [Delivered(((KEY, slot, 3, "node-b"),))]
    assert h.feed(STATE, control("state", 4)) == [TermSeen(4, "node-b", active=False)]
    assert h.feed(HEARTBEAT, control("heartbeat", 4, ts=10)) == [TermSeen(4, "node-b", active=True)]
    assert h.observer.drops.counts == {}


def test_observer_replayed_heartbeat_is_dropped() -> None:
    h = Harness()
    beat = control("heartbeat", 4, ts=10)
    assert h.feed(HEARTBEAT, beat)
    assert h.feed(HEARTBEAT, beat) == []
    assert h.feed(HEARTBEAT, control("heartbeat", 4, ts=9)) == []
    assert h.observer.drops.counts == {"replayed": 2}
    assert h.feed(HEARTBEAT, control("heartbeat", 5, ts=1))  # a new term starts afresh


def test_observer_bug_in_a_handler_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()

    def broken(body: bytes) -> None:
        raise RecursionError("deep")

    monkeypatch.setattr(h.observer, "_on_data", broken)
    assert h.feed(DATA, data()) == []
    assert h.observer.drops.counts == {"internal_error": 1}


def test_observer_garbage_storm_never_raises() -> None:
    h = Harness()
    import random

    rng = random.Random(7)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        for topic in (STATE, HEARTBEAT, DATA, "tandem/line1/barrier/node-a"):
            h.observer.handle(topic, blob)
    assert h.facts == []
    assert sum(h.observer.drops.counts.values()) == 8000
    assert orjson.dumps(h.observer.drops.counts)
