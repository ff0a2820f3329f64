"""What the pair says on the broker, and how it is checked: data identities, signed control.

Everything read from the broker is hostile until checked here: a strict parse into typed
values or a `BrokerDrop` reason, never an exception. Cluster control messages (state,
heartbeat, barrier) and the HA fields of data payloads carry an HMAC-SHA256 (`sig`) keyed from
the cluster secret, so only a holder of the secret can move a watermark, a term or the
"another node is active" verdict. Consumers may ignore `sig`; docs/security.md shows how to
verify it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

import orjson

MAX_INT = 2**63 - 1
SIG_HEX = 64
NAME = rb"[A-Za-z0-9_.:-]{1,128}"
NAME_RE = re.compile(NAME.decode() + r"\Z")
# Sample payloads end with these keys in this order; anchoring at the end means a tag that
# happens to be called "slot" or "term" can never be mistaken for them.
TAIL = re.compile(
    rb',"slot":(\d{1,19}),"seq":(\d{1,19}),"term":(\d{1,19}),"source_node":"('
    + NAME
    + rb')"(?:,"sig":"([0-9a-f]{64})")?\}\Z'
)
HEAD = re.compile(
    rb'\A\{"timestamp":(\d{1,19}),"node":"(' + NAME + rb')","group":"(' + NAME + rb')"'
)
_TAIL_WINDOW = 400
_HEAD_WINDOW = 400


class BrokerDrop(StrEnum):
    """Why a broker message was not used. Counted (`tandem_broker_messages_dropped_total`)."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    OUT_OF_RANGE = "out_of_range"
    BAD_NAME = "bad_name"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    FUTURE_SLOT = "future_slot"
    UNKNOWN_STREAM = "unknown_stream"
    REPLAYED = "replayed"
    INTERNAL = "internal_error"


@dataclass(frozen=True, slots=True)
class DataIdentity:
    """The identity fields of one data message (its values are never decoded here)."""

    device: str
    group: str
    slot: int
    seq: int
    term: int
    source_node: str
    sig: str | None = None

    @property
    def key(self) -> str:
        return f"{self.device}/{self.group}"


@dataclass(frozen=True, slots=True)
class Control:
    """A state or heartbeat message: `node` holds (or announces) `term` at `ts_ms`."""

    node: str
    term: int
    ts_ms: int
    sig: str | None = None


def parse_data(payload: bytes) -> DataIdentity | BrokerDrop:
    """The identity of a sample payload, strictly; anything else is a drop reason."""
    head = HEAD.match(payload[:_HEAD_WINDOW])
    tail = TAIL.search(payload[-_TAIL_WINDOW:])
    if head is None or tail is None:
        return BrokerDrop.MALFORMED
    numbers = [int(tail.group(i)) for i in (1, 2, 3)]
    if any(n > MAX_INT for n in numbers) or int(head.group(1)) > MAX_INT:
        return BrokerDrop.OUT_OF_RANGE
    sig = tail.group(5)
    return DataIdentity(
        device=head.group(2).decode(),
        group=head.group(3).decode(),
        slot=numbers[0],
        seq=numbers[1],
        term=numbers[2],
        source_node=tail.group(4).decode(),
        sig=sig.decode() if sig is not None else None,
    )


def parse_control(payload: bytes) -> Control | BrokerDrop:
    """A state or heartbeat message, strictly typed: ints are ints in range, names are names."""
    try:
        doc = orjson.loads(payload)  # rejects NaN/Infinity and nesting deeper than 1024
    except orjson.JSONDecodeError:
        return BrokerDrop.MALFORMED
    if not isinstance(doc, dict):
        return BrokerDrop.MALFORMED
    node, term, ts_ms, sig = doc.get("node"), doc.get("term"), doc.get("ts_ms", 0), doc.get("sig")
    if not isinstance(node, str) or not _is_int(term) or not _is_int(ts_ms):
        return BrokerDrop.MALFORMED
    assert isinstance(term, int) and isinstance(ts_ms, int)
    if not (0 <= term <= MAX_INT and 0 <= ts_ms <= MAX_INT):
        return BrokerDrop.OUT_OF_RANGE
    if NAME_RE.match(node) is None:
        return BrokerDrop.BAD_NAME
    if sig is not None and not (isinstance(sig, str) and len(sig) == SIG_HEX):
        return BrokerDrop.MALFORMED
    return Control(node=node, term=term, ts_ms=ts_ms, sig=sig)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Signer:
    """HMAC-SHA256 over the fields that carry authority, with a label per message kind."""

    def __init__(self, key: bytes, cluster: str) -> None:
        self._key = key
        self.cluster = cluster

    def _mac(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def data(self, device: str, group: str, slot: int, seq: int, term: int, source: str) -> str:
        return self._mac(f"tandem data v1\n{device}\n{group}\n{slot}\n{seq}\n{term}\n{source}")

    def control(self, kind: str, node: str, term: int, ts_ms: int) -> str:
        return self._mac(f"tandem {kind} v1\n{self.cluster}\n{node}\n{term}\n{ts_ms}")

    def barrier(self, node: str, token: str) -> str:
        return self._mac(f"tandem barrier v1\n{self.cluster}\n{node}\n{token}")

    def control_payload(self, kind: str, node: str, term: int, ts_ms: int) -> bytes:
        sig = self.control(kind, node, term, ts_ms)
        return orjson.dumps({"node": node, "term": term, "ts_ms": ts_ms, "sig": sig})

    def data_valid(self, d: DataIdentity) -> bool:
        if d.sig is None:
            return False
        expected = self.data(d.device, d.group, d.slot, d.seq, d.term, d.source_node)
        return hmac.compare_digest(expected, d.sig)

    def control_valid(self, kind: str, c: Control) -> bool:
        if c.sig is None:
            return False
        return hmac.compare_digest(self.control(kind, c.node, c.term, c.ts_ms), c.sig)

    def barrier_valid(self, node: str, token: str, sig: str) -> bool:
        return hmac.compare_digest(self.barrier(node, token), sig)


def state_topic(cluster: str) -> str:
    return f"tandem/{cluster}/state"


def heartbeat_topic(cluster: str) -> str:
    return f"tandem/{cluster}/heartbeat"


def barrier_topic(cluster: str, node: str) -> str:
    return f"tandem/{cluster}/barrier/{node}"


def wildcard(template: str) -> str:
    """The data topic template with every variable replaced by a single-level wildcard."""
    return re.sub(r"\{[^}]*\}", "+", template)


__all__ = [
    "BrokerDrop",
    "Control",
    "DataIdentity",
    "Signer",
    "barrier_topic",
    "heartbeat_topic",
    "parse_control",
    "parse_data",
    "state_topic",
    "wildcard",
]
