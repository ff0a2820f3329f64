"""The verification snippet in docs/security.md works on what the pair really sends."""

from __future__ import annotations

import re
from pathlib import Path

from tandem.ha.wire import Signer
from tandem.hub.model import Sample
from tandem.hub.wire import encode_body
from tandem.security.keys import broker_hmac_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECRET = "a cluster secret for the docs"


def snippet() -> dict[str, object]:
    text = DOC.read_text()
    section = text[text.index("## Signed messages on the broker") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)  # the documented code, as a reader would paste it
    return namespace


def signed_payload(term: int) -> bytes:
    sample = Sample("plc1", "fast", 42, 1, {"x": 1.5}, {}, 7, "node-a", 0)
    from tandem.hub.outbox import OutboxRow

    row = OutboxRow(1, "plc1", "fast", 42, 7, "node-a", 1, encode_body(sample))
    sig = Signer(broker_hmac_key(SECRET), "line1").data("plc1", "fast", 42, 7, term, "node-a")
    return row.payload(term, sig)


def test_docs_signature_snippet_accepts_the_pairs_messages_and_refuses_changes() -> None:
    ns = snippet()
    assert ns["broker_key"](SECRET) == broker_hmac_key(SECRET)  # type: ignore[operator]
    check = ns["from_the_pair"]
    payload = signed_payload(term=3)
    assert check(payload, SECRET)  # type: ignore[operator]
    assert not check(payload.replace(b'"term":3', b'"term":4'), SECRET)  # type: ignore[operator]
    assert not check(payload, "another secret")  # type: ignore[operator]
