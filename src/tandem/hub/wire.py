"""The data message on the wire: a stored body plus the identity tail stamped at send time.

A published sample is the compact JSON object

    {"timestamp":T,"node":"D","group":"G","values":{...},"errors":{...},
     "slot":S,"seq":Q,"term":N,"source_node":"X"}

optionally with ,"sig":"<64 lowercase hex>" before the closing brace. The outbox stores only
the body (everything up to and excluding ,"slot"), so the fencing term (and a signature over the
whole message) are those of the node that sends, not of the node that polled, and re-encoding
the values, by far the largest part, is never needed at send time.
"""

from __future__ import annotations

import re
from functools import lru_cache

import orjson

from tandem.hub.model import Sample

# The HA layer signs the assembled message with HMAC-SHA256: a hex digest, nothing else, so it
# can never break out of its JSON string.
_SIG = re.compile(r"[0-9a-f]{64}")


def encode_body(sample: Sample) -> bytes:
    """The stored part of a sample's message: compact JSON without the identity tail or '}'.

    orjson writes the same bytes as json.dumps(separators=(",", ":"), ensure_ascii=False)
    about ten times faster, which is most of a sample's cost at hundreds of thousands of
    values per second. (Non-finite floats never reach here: the codec turns them into errors.)
    """
    return orjson.dumps(
        {
            "timestamp": sample.timestamp_ms,
            "node": sample.node,
            "group": sample.group,
            "values": sample.values,
            "errors": sample.errors,
        }
    )[:-1]


@lru_cache(maxsize=64)
def _json_string(text: str) -> bytes:
    # The same escaping as orjson gives the body; cached: a node sends under one or two names.
    return orjson.dumps(text)


def data_tail(slot: int, seq: int, term: int, source_node: str, sig: str | None) -> bytes:
    """The identity fields that close a message body, in their fixed order, and the final '}'.

    Raises ValueError for a signature that is not 64 lowercase hex digits.
    """
    tail = b',"slot":%d,"seq":%d,"term":%d,"source_node":%b' % (
        slot,
        seq,
        term,
        _json_string(source_node),
    )
    if sig is None:
        return tail + b"}"
    if not _SIG.fullmatch(sig):
        raise ValueError("sig must be 64 lowercase hex digits")
    return tail + b',"sig":"' + sig.encode("ascii") + b'"}'


def encode_payload(sample: Sample, sig: str | None = None) -> bytes:
    """The whole message of a sample under the sample's own seq and term, as a node sends it."""
    return encode_body(sample) + data_tail(
        sample.slot, sample.seq, sample.term, sample.source_node, sig
    )


# The identity tail of a whole message, anchored at the end, so a tag called "slot" inside the
# values is never mistaken for it.
_TAIL = re.compile(
    rb',"slot":-?\d+,"seq":-?\d+,"term":-?\d+,"source_node":"(?:[^"\\]|\\.)*"'
    rb'(?:,"sig":"[0-9a-f]{64}")?\}\Z'
)


def body_of_message(payload: bytes) -> bytes | None:
    """The body of a whole message (as sent, or as an older outbox stored it), None if it is
    not one of ours: what migrating an unversioned outbox keeps of each row."""
    match = _TAIL.search(payload, max(0, len(payload) - 1024))
    if match is None or not payload.startswith(b'{"timestamp":'):
        return None
    return payload[: match.start()]


__all__ = ["body_of_message", "data_tail", "encode_body", "encode_payload"]
