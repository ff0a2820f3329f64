"""TLS for the API (server side) and for the peer link (client side: CA or pinned certificate).

A pinned peer is checked without trusting anything else: a first handshake fetches the peer's
certificate without sending a byte of HTTP; only if its SHA-256 matches the pin is that exact
certificate added as the one trust anchor of the link's context (OpenSSL's partial-chain mode
lets a leaf be an anchor). Every real connection then verifies against it in its own handshake,
so the bearer is never sent to a server that did not prove it holds the pinned certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tandem.errors import TandemError
from tandem.security.certs import fingerprint

if TYPE_CHECKING:
    from tandem.config.hub import ApiTlsConfig, PeerTlsConfig

log = logging.getLogger(__name__)

PIN_CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What uvicorn needs to serve HTTPS; checked at start so a bad file is a clear error."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_config(cls, tls: ApiTlsConfig | None) -> ServerTls | None:
        if tls is None:
            return None
        return cls(tls.cert_file, tls.key_file, tls.client_ca_file)

    def check(self) -> None:
        """Load the files once; raises TandemError naming the file that is wrong."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TandemError(
                f"api.tls: cannot use {self.cert_file} / {self.key_file}: {exc}"
            ) from exc
        if self.client_ca_file is not None:
            try:
                ctx.load_verify_locations(self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TandemError(f"api.tls.client_ca_file {self.client_ca_file}: {exc}") from exc

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ssl_certfile": str(self.cert_file),
            "ssl_keyfile": str(self.key_file),
        }
        if self.client_ca_file is not None:
            options["ssl_ca_certs"] = str(self.client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return options


class PeerTls:
    """The client side of the peer link: an SSL context, and the pin check when pinned."""

    def __init__(
        self, context: ssl.SSLContext, pin: str | None, own: tuple[Path, Path] | None = None
    ) -> None:
        self.context = context
        self.pin = pin
        self._own = own  # (cert, key) this node presents, for a peer requiring client certs
        self._anchored = False
        self._lock = asyncio.Lock()

    @classmethod
    def for_peer(
        cls, peer_url: str, peer: PeerTlsConfig | None, own: ApiTlsConfig | None
    ) -> PeerTls | None:
        """The TLS side of a link to `peer_url`; None for plain http (nothing to verify, and
        loading the system's CAs costs a noticeable moment at start)."""
        if not peer_url.startswith("https://"):
            return None
        return cls.from_config(peer, own)

    @classmethod
    def from_config(cls, peer: PeerTlsConfig | None, own: ApiTlsConfig | None) -> PeerTls:
        """CA mode checks chain and hostname; pin mode checks only the exact certificate.

        Without `ha.peer_tls` an https peer is verified against the system's CAs. The node's
        own certificate is presented, for a peer that requires client certificates.
        """
        if peer is not None and peer.fingerprint is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False  # the pin is stronger than a name
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            pin: str | None = peer.fingerprint
        else:
            cafile = str(peer.ca_file) if peer is not None and peer.ca_file else None
            try:
                ctx = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise TandemError(f"ha.peer_tls.ca_file {cafile}: {exc}") from exc
            pin = None
        files = None
        if own is not None:
            files = (own.cert_file, own.key_file)
            with contextlib.suppress(OSError, ssl.SSLError):  # ServerTls.check() reports it
                ctx.load_cert_chain(*files)
        return cls(ctx, pin, files)

    async def ensure_pinned(self, url: str) -> None:
        """Before the first request: fetch the peer's certificate and check it against the pin.

        Raises ssl.SSLCertVerificationError (an OSError) when it does not match.
        """
        if self.pin is None or self._anchored:
            return
        async with self._lock:
            if self._anchored:
                return
            der = await _peer_certificate(url, self._own)
            seen = fingerprint(der)
            if seen != self.pin:
                raise ssl.SSLCertVerificationError(
                    f"peer certificate {seen} does not match ha.peer_tls.fingerprint {self.pin}"
                )
            self.context.load_verify_locations(cadata=der)
            self._anchored = True
            log.info("peer certificate matches the pinned fingerprint %s", seen)


async def _peer_certificate(url: str, own: tuple[Path, Path] | None) -> bytes:
    """The DER certificate the server at `url` presents; nothing is sent but the handshake."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # only to read the certificate, compared right after
    if own is not None:
        with contextlib.suppress(OSError, ssl.SSLError):
            probe.load_cert_chain(*own)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=probe, server_hostname=host or None),
        PIN_CONNECT_TIMEOUT_S,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not der:
        raise ssl.SSLCertVerificationError("the peer presented no certificate")
    return bytes(der)
