"""A private CA for a pair and one certificate per node, for the API and the peer link (TLS)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tandem.errors import TandemError
from tandem.files import write_atomic
from tandem.security.store import PRIVATE_MODE

CA_DAYS = 3650
NODE_DAYS = 825
PUBLIC_MODE = 0o644
_SERVER_AND_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class NodeFiles:
    name: str
    address: str
    cert_file: Path
    key_file: Path
    fingerprint: str


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """``sha256:<hex>`` of a certificate's DER encoding (what `ha.peer_tls.fingerprint` pins)."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accepts ``sha256:ab12..``, ``AB:12:..`` (openssl -fingerprint) or bare hex."""
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        value = value.removeprefix(prefix)
    value = value.replace(":", "")
    if not _HEX.match(value):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
    return "sha256:" + value


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tandem"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(name: str, address: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        if address != name:
            names.append(x509.DNSName(address))
    return names


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_node_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str, address: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server and client certificate: the node serves its API and dials its peer with it."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(name, address)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_pair(directory: Path, nodes: list[tuple[str, str]], cluster: str) -> list[NodeFiles]:
    """ca.pem / ca.key and NAME.pem / NAME.key per node in `directory`; keys are 0600.

    Refuses to overwrite an existing CA: replacing it would silently cut off every node
    that trusts the old one.
    """
    if not nodes:
        raise TandemError("give at least one --node NAME=ADDRESS")
    if len({name for name, _ in nodes}) != len(nodes):
        raise TandemError("node names must differ")
    ca_cert_file, ca_key_file = directory / "ca.pem", directory / "ca.key"
    if ca_cert_file.exists() or ca_key_file.exists():
        raise TandemError(f"{directory} already holds a CA (ca.pem/ca.key): use another --dir")
    ca_key, ca_cert = make_ca(f"Tandem {cluster} CA")
    write_atomic(ca_key_file, _key_pem(ca_key), mode=PRIVATE_MODE)
    write_atomic(ca_cert_file, _cert_pem(ca_cert), mode=PUBLIC_MODE)
    made: list[NodeFiles] = []
    for name, address in nodes:
        key, cert = make_node_cert(ca_key, ca_cert, name, address)
        key_file, cert_file = directory / f"{name}.key", directory / f"{name}.pem"
        write_atomic(key_file, _key_pem(key), mode=PRIVATE_MODE)
        write_atomic(cert_file, _cert_pem(cert), mode=PUBLIC_MODE)
        made.append(NodeFiles(name, address, cert_file, key_file, fingerprint(cert)))
    return made


def parse_node(text: str) -> tuple[str, str]:
    """``NAME=ADDRESS`` from the command line."""
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise ValueError(f"expected NAME=ADDRESS, got {text!r}")
    return name, address
