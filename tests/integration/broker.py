"""Test helpers: a real mosquitto on an ephemeral loopback port, and a recording subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


def free_port() -> int:
    """A port the kernel just handed out; mosquitto binds it again a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_test_certs(workdir: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca = workdir / "ca.key", workdir / "ca.crt"
    key, csr, cert = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test-ca")
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext,
    )  # fmt: skip
    return TlsFiles(ca, cert, key)


class Broker:
    """A mosquitto process that can be stopped and started again on the same port."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        tls: TlsFiles | None = None,
        persistent: bool = False,
    ) -> None:
        """``persistent`` keeps sessions and queued QoS 1 messages across stop()/start().

        Without it mosquitto forgets a subscriber when it stops, so whatever is published
        after a restart and before the subscriber is back is lost by the broker itself.
        """
        self.workdir = workdir
        self.host = HOST
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            *(
                ["persistence true", f"persistence_location {workdir}/", "autosave_interval 0"]
                if persistent
                else ["persistence false"]
            ),
            # The recording subscriber shares the test's event loop and can fall behind a
            # fast publisher; by default mosquitto would drop past 1000 queued messages.
            "max_queued_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        if (tls is not None or persistent) and os.geteuid() == 0:
            # mosquitto drops to its own user when started as root, and that user cannot
            # read (key) or write (persistence) pytest's private tmp dir
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running broker, stopped at the end of the test whatever happened."""
    with Broker(tmp_path) as b:
        yield b


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class RecordingSubscriber:
    """Subscribes with QoS 1 and records every message; reconnects fast after a broker outage.

    `subscribed` is set whenever a subscription is in place and cleared when it is lost, so a
    test can wait for the subscriber to be back before it lets publishers speak again.
    """

    def __init__(
        self, host: str, port: int, topic: str = "#", *, client_id: str | None = None
    ) -> None:
        """A ``client_id`` makes the session persistent (clean session off): a broker with
        persistence queues QoS 1 messages for it while it is away, even across a restart."""
        self.host = host
        self.port = port
        self.topic = topic
        self.client_id = client_id
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    timeout=5,
                    identifier=self.client_id,
                    clean_session=False if self.client_id else None,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        payload = msg.payload
                        if isinstance(payload, str):
                            payload = payload.encode()
                        assert isinstance(payload, (bytes, bytearray))
                        self.messages.append(Received(str(msg.topic), bytes(payload), msg.retain))
                        self._changed.set()
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)

    async def wait_for_count(self, count: int, timeout: float) -> list[Received]:
        """Wait until at least count messages arrived; returns them, or fails the test."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"received {len(self.messages)} of {count} messages in {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self._changed.wait()
        return list(self.messages)

    async def __aenter__(self) -> RecordingSubscriber:
        self._task = asyncio.create_task(self._run(), name="recording-subscriber")
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def recording_subscriber(
    broker: Broker, topic: str = "#"
) -> AsyncIterator[RecordingSubscriber]:
    async with RecordingSubscriber(broker.host, broker.port, topic) as sub:
        yield sub
