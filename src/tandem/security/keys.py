"""Keys derived from the cluster secret, one per purpose, so no two uses share key material."""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PEER_LINK_LABEL = "tandem peer-link v1"
BROKER_HMAC_LABEL = "tandem broker hmac v1"
KEY_BYTES = 32


def derive_key(secret: str, label: str, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the cluster secret; `label` is the info string.

    No salt: the secret is shared configuration, not a per-session input, and both nodes must
    derive the same key without talking to each other first.
    """
    if not secret:
        raise ValueError("the cluster secret is empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode())
    return hkdf.derive(secret.encode("utf-8"))


def peer_bearer(secret: str) -> str:
    """The bearer both nodes present on the peer link; the raw secret never goes on the wire.

    Derived, so neither the secret nor the broker key can be computed from it.
    """
    return derive_key(secret, PEER_LINK_LABEL).hex()


def broker_hmac_key(secret: str) -> bytes:
    """The key that signs cluster control messages and the HA fields of data payloads."""
    return derive_key(secret, BROKER_HMAC_LABEL)


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    if not authorization or not expected:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), expected.encode()
    )
