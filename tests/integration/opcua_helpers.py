"""OPC UA test helpers: application certificates made with `cryptography`, the simulator CLI.

Certificates are self-signed.

OPC UA Part 6, 6.2.2: an application instance certificate carries the application URI in
subjectAltName (and the host name), digital signature, key encipherment and data
encipherment key usage, and server and client auth extended usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Client, ua
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


# --- a Part 4 redundancy client, for the pair tests and bench/opcua_failover.py --------------

PAIR_TAG = "plc1/fast/counter"
PAIR_NAMESPACE = "urn:tandem:line1"  # the cluster's: the same NodeIds on both servers
READ_PERIOD_S = 0.02


@dataclass(slots=True)
class Reading:
    at: float
    levels: dict[str, int | None]
    chosen: str | None
    stamp: datetime.datetime | None


@dataclass
class RedundantClient:
    """A Part 4 client: ServiceLevel of each server, values from the highest one."""

    urls: dict[str, str]
    readings: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    async def _run(self) -> None:
        clients: dict[str, Client | None] = dict.fromkeys(self.urls)
        retry_at: dict[str, float] = dict.fromkeys(self.urls, 0.0)
        try:
            while not self._stop.is_set():
                levels: dict[str, int | None] = {}
                for name in self.urls:
                    levels[name] = await self._level(name, clients, retry_at)
                live = {n: lv for n, lv in levels.items() if lv is not None}
                chosen = max(live, key=lambda n: live[n]) if live else None
                stamp = await self._stamp(clients[chosen]) if chosen else None
                self.readings.append(Reading(time.time(), levels, chosen, stamp))
                await asyncio.sleep(READ_PERIOD_S)
        finally:
            for client in clients.values():
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 2)

    async def _level(
        self, name: str, clients: dict[str, Client | None], retry_at: dict[str, float]
    ) -> int | None:
        client = clients[name]
        if client is None:
            if time.monotonic() < retry_at[name]:
                return None
            client = Client(self.urls[name], timeout=1.0)
            try:
                await asyncio.wait_for(client.connect(), 3)
            except Exception:
                retry_at[name] = time.monotonic() + 0.2
                return None
            clients[name] = client
        try:
            node = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel))
            return int(await asyncio.wait_for(node.read_value(), 1))
        except Exception as exc:
            self.errors.append(f"{name}: {exc!r}")
            clients[name] = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 1)
            return None

    async def _stamp(self, client: Client | None) -> datetime.datetime | None:
        if client is None:
            return None
        try:
            ns = await client.get_namespace_index(PAIR_NAMESPACE)
            node = client.get_node(f"ns={ns};s={PAIR_TAG}")
            value = await asyncio.wait_for(node.read_data_value(raise_on_bad_status=False), 1)
        except Exception:
            return None
        good = value.StatusCode is not None and value.StatusCode.is_good()
        return value.SourceTimestamp if good else None

    def first(self, after: float, ok: object) -> Reading | None:
        assert callable(ok)
        return next((r for r in self.readings if r.at >= after and ok(r)), None)
