"""OPC UA test helpers: application certificates made with `cryptography`, the simulator CLI.

Certificates are self-signed.

OPC UA Part 6, 6.2.2: an application instance certificate carries the application URI in
subjectAltName (and the host name), digital signature, key encipherment and data
encipherment key usage, and server and client auth extended usage.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TANDEM = Path(sys.executable).with_name("tandem")


@dataclass(frozen=True, slots=True)
class CertPair:
    certificate: Path  # DER
    private_key: Path  # PEM
    uri: str


def make_certificate(directory: Path, name: str, uri: str) -> CertPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName(socket.gethostname()),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.der"
    key_path = directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertPair(cert_path, key_path, uri)


def start_simulator(port: int) -> tuple[subprocess.Popen[bytes], int]:
    """`tandem simulate-plc --opcua PORT` in its own process: its start does not stall us."""
    process = subprocess.Popen(
        [str(TANDEM), "simulate-plc", "--opcua", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # "OPC UA simulator listening on opc.tcp://..."
    if "listening on" not in line:
        stop_simulator(process)
        raise AssertionError(f"simulator did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1].strip("/\n "))


def stop_simulator(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
