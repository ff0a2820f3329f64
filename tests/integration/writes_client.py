"""A Neuron-style MQTT client for write and read requests: publish, then wait for the uuid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiomqtt

from tandem.writes.mqtt import no_delay


class RequestClient:
    """Publishes requests and collects every response by uuid (all of them, repeats included)."""

    def __init__(self, host: str, port: int, cluster: str) -> None:
        self.host, self.port, self.cluster = host, port, cluster
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.raw: list[bytes] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.sent_at: dict[str, float] = {}
        self.first_answer_at: dict[str, float] = {}

    def topic(self, kind: str) -> str:
        return f"/neuron/{self.cluster}/{kind}"

    async def __aenter__(self) -> RequestClient:
        self._client = aiomqtt.Client(self.host, self.port, timeout=5)
        await self._client.__aenter__()
        no_delay(self._client)
        await self._client.subscribe(self.topic("write/resp"), qos=1)
        await self._client.subscribe(self.topic("read/resp"), qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            self.raw.append(bytes(payload))
            body = json.loads(payload)
            uuid = body.get("uuid")
            if isinstance(uuid, str):
                self.responses.setdefault(uuid, []).append(body)
                self.first_answer_at.setdefault(uuid, time.perf_counter())
            self._changed.set()

    async def publish(self, kind: str, body: dict[str, Any] | bytes) -> None:
        assert self._client is not None
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        if isinstance(body, dict) and "uuid" in body:
            self.sent_at.setdefault(body["uuid"], time.perf_counter())
        await self._client.publish(self.topic(kind), payload, qos=1)

    async def wait_for(self, uuid: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while uuid not in self.responses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no response to {uuid} in {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await self._changed.wait()
        return self.responses[uuid][0]

    async def request(
        self, kind: str, body: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        await self.publish(f"{kind}/req", body)
        return await self.wait_for(body["uuid"], timeout)
