"""Read and write requests over MQTT (Neuron's topics and shapes): hostile input, bounded work.

One connection of its own, subscribed to the request topics. Every message is size-capped
before it is parsed, parsed strictly, and either answered (on the response topic, QoS 1) or
counted as a drop with its reason; nothing a client sends can end the loop. Only a node that
may write answers (a single node, or the publishing master): a backup stays silent, so a
client never gets "not master" from the backup while the master answers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import string
from dataclasses import dataclass
from typing import Any

import aiomqtt
from pydantic import ValidationError

from tandem.config.hub import TandemConfig
from tandem.hub.mqtt import BACKOFF_MAX_S, BACKOFF_MIN_S, MqttSettings, build_tls_context
from tandem.writes.codes import WriteCode
from tandem.writes.requests import ReadBody, WriteBody, readable_uuid
from tandem.writes.service import WriteService

log = logging.getLogger(__name__)

MAX_PENDING = 256  # requests being executed at once; more are dropped (counted)


@dataclass(frozen=True, slots=True)
class RequestTopics:
    node: str  # in the client id: the two nodes of a pair share their (synced) mqtt section
    write_req: str
    write_resp: str
    read_req: str
    read_resp: str
    max_bytes: int

    @classmethod
    def of(cls, cfg: TandemConfig) -> RequestTopics:
        cluster = cfg.ha.cluster if cfg.ha is not None else cfg.node
        m = cfg.mqtt

        def fill(template: str) -> str:
            names = {n for _, n, _, _ in string.Formatter().parse(template) if n is not None}
            return template.format(cluster=cluster) if names else template

        return cls(
            cfg.node,
            fill(m.write_request_topic),
            fill(m.write_response_topic),
            fill(m.read_request_topic),
            fill(m.read_response_topic),
            m.request_max_bytes,
        )


def no_delay(client: aiomqtt.Client) -> None:
    """Nagle off on the client's socket: an answer is a PUBACK and a PUBLISH back to back, and
    Nagle would hold the second until the broker's delayed ACK of the first (~40 ms each way)."""
    paho = getattr(client, "_client", None)  # aiomqtt keeps its paho client here
    sock = paho.socket() if paho is not None else None
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RequestListener:
    """Subscribes to the request topics and answers them through the WriteService."""

    def __init__(
        self, settings: MqttSettings, topics: RequestTopics, service: WriteService
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.service = service
        self.connected = False
        self._tls = build_tls_context(settings)
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            s = self.settings
            client = aiomqtt.Client(
                s.host,
                s.port,
                username=s.username,
                password=s.password,
                identifier=f"{s.client_id}-{self.topics.node}-requests" if s.client_id else None,
                keepalive=s.keepalive,
                clean_session=True,
                tls_context=self._tls,
                tls_insecure=s.tls_insecure if self._tls is not None else None,
            )
            try:
                async with client:
                    no_delay(client)
                    await client.subscribe(self.topics.write_req, qos=1)
                    await client.subscribe(self.topics.read_req, qos=1)
                    self.connected = True
                    backoff = BACKOFF_MIN_S
                    log.info("listening for requests on %s", self.topics.write_req)
                    async for message in client.messages:
                        self._on_message(client, str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                log.debug("request listener: %s", exc)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _on_message(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        counters = self.service.counters
        if not isinstance(payload, bytes | bytearray):
            counters.drop("unparsable")
            return
        if len(payload) > self.topics.max_bytes:
            counters.drop("too_large")
            return
        if not self.service.authority.answers_requests():
            counters.drop("not_master")  # the master answers; a backup stays silent
            return
        if len(self._pending) >= MAX_PENDING:
            counters.drop("overload")
            return
        is_write = topic == self.topics.write_req
        response_topic = self.topics.write_resp if is_write else self.topics.read_resp
        try:
            if is_write:
                body: WriteBody | ReadBody = WriteBody.model_validate_json(payload)
            else:
                body = ReadBody.model_validate_json(payload)
        except ValidationError:
            uuid = readable_uuid(bytes(payload))
            if uuid is None:
                counters.drop("unparsable")
                return
            counters.answer(WriteCode.BAD_REQUEST)
            self._spawn(self._respond(client, response_topic, {"uuid": uuid, "error": 1002}))
            return
        self._spawn(self._handle(client, response_topic, body))

    async def _handle(self, client: aiomqtt.Client, topic: str, body: WriteBody | ReadBody) -> None:
        if isinstance(body, ReadBody):
            await self._respond(client, topic, self.service.read(body))
            return
        answer = await self.service.submit(body)
        if answer.code is WriteCode.NOT_MASTER:
            return  # never on MQTT: the node that may write answers the client's retry
        await self._respond(client, topic, answer.neuron())

    async def _respond(self, client: aiomqtt.Client, topic: str, body: dict[str, Any]) -> None:
        try:
            await client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)
        except aiomqtt.MqttError as exc:
            # The client retries an unanswered uuid and gets the recorded answer.
            log.info("response to %s lost: %s", body.get("uuid"), exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request handling failed", exc_info=task.exception())
