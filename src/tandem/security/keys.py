"""Keys derived from the cluster secret, one per purpose, so no two uses share a key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PEER_LINK_LABEL = "tandem peer-link v1"
BROKER_HMAC_LABEL = "tandem broker hmac v1"


def derive_key(secret: str, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of the secret with `label` as its info: independent keys per label."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()).derive(
        secret.encode()
    )


def peer_bearer(secret: str) -> str:
    """The bearer the peer link sends: derived, so the broker key cannot be computed from it."""
    return derive_key(secret, PEER_LINK_LABEL).hex()


def broker_hmac_key(secret: str) -> bytes:
    """The key that signs cluster control messages and the HA fields of data payloads."""
    return derive_key(secret, BROKER_HMAC_LABEL)
