"""The MQTT publisher: drains the outbox in id order with QoS 1, deleting rows only after PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt

from tandem.batch import LoopStepBatch
from tandem.errors import ConfigError, ConfigProblem, TandemError
from tandem.hub.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)

TOPIC_FIELDS = frozenset({"node", "group", "source_node"})

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 0.5  # a broker back after a restart is used within half a second
# A connection that lived this long was healthy: the next failure starts the backoff afresh.
# Shorter ones keep doubling, so a broker that accepts and then drops us is not hammered.
STABLE_CONNECTION_S = 5.0
RATE_WINDOW_S = 5.0
# Rows read per outbox query; large enough to keep the pipe full, small enough to stay fast.
PEEK_BATCH = 64  # rows read ahead; each can hold thousands of values, so keep it near the window
# A closed gate (may_publish False) is a plain callable, so it is re-checked on this period
# as well as on notify().
GATE_RECHECK_S = 0.05
# notify() is the real wake-up; this only bounds the damage of a forgotten notify().
IDLE_RECHECK_S = 1.0


class MqttSetupError(TandemError):
    """The publisher settings cannot work (unreadable TLS files, bad topic template)."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """What the publisher needs from the mqtt config section, independent of the config model."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = "/neuron/{node}"
    qos: int = 1
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    inflight: int = 20
    keepalive: int = 10
    tls: bool = False  # TLS with the system CAs even when no file is named

    @property
    def tls_enabled(self) -> bool:
        return self.tls or any((self.tls_ca, self.tls_cert, self.tls_key, self.tls_insecure))

    @classmethod
    def from_config(cls, mqtt: Any) -> MqttSettings:
        """Map the config model's mqtt section (duck-typed, so this module never imports it)."""
        tls = getattr(mqtt, "tls", None)
        password = getattr(mqtt, "password", None)
        if password is not None and hasattr(password, "get_secret_value"):
            password = password.get_secret_value()

        def path_or_none(value: Any) -> str | None:
            return None if value is None else str(value)

        return cls(
            host=mqtt.host,
            port=int(mqtt.port),
            topic=mqtt.topic,
            qos=int(mqtt.qos),
            client_id=getattr(mqtt, "client_id", None),
            username=getattr(mqtt, "username", None),
            password=password,
            tls_ca=path_or_none(getattr(tls, "ca_file", None)),
            tls_cert=path_or_none(getattr(tls, "cert_file", None)),
            tls_key=path_or_none(getattr(tls, "key_file", None)),
            tls_insecure=bool(getattr(tls, "insecure", False)),
            inflight=int(getattr(mqtt, "inflight", 20)),
            keepalive=int(getattr(mqtt, "keepalive", 10)),
            tls=tls is not None,
        )


@dataclass(frozen=True, slots=True)
class PublisherStatus:
    """A snapshot for the API, dashboard and metrics."""

    connected: bool
    published_total: int  # messages acknowledged by the broker since start
    publish_rate: float  # messages/s over the last RATE_WINDOW_S
    values_rate: float  # tag values/s over the last RATE_WINDOW_S
    last_error: str | None
    reconnects: int  # connection attempts after the first one
    inflight: int  # publishes sent and waiting for PUBACK
    outbox_depth: int


def check_topic_template(template: str) -> None:
    """Reject a template with variables the publisher cannot fill, at startup not per message."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError([ConfigProblem("", None, "mqtt.topic", str(exc))]) from exc
    unknown = names - TOPIC_FIELDS
    if unknown:
        allowed = ", ".join(sorted(TOPIC_FIELDS))
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    None,
                    "mqtt.topic",
                    f"unknown variable(s) {sorted(unknown)} in {template!r}; allowed: {allowed}",
                )
            ]
        )


def topic_renderer(template: str) -> Callable[[OutboxRow], str]:
    """The default topic_for: the template filled from the row's device, group and source node."""
    check_topic_template(template)

    def render(row: OutboxRow) -> str:
        return template.format(node=row.node, group=row.group, source_node=row.source_node)

    return render


def single_node_payload(row: OutboxRow) -> bytes:
    """The message of a row as a node without a pair sends it: term 0, unsigned."""
    return row.payload(0)


def build_tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    if not settings.tls_enabled:
        return None
    try:
        ctx = ssl.create_default_context(cafile=settings.tls_ca)
        if settings.tls_cert:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise MqttSetupError(f"cannot load MQTT TLS files: {exc}") from exc
    if settings.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Connection:
    """Per-connection state: the cursor restarts at the oldest unacked row on every connection."""

    def __init__(self, client: aiomqtt.Client, inflight: int) -> None:
        self.client = client
        self.slots = asyncio.Semaphore(inflight)
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[None]] = set()

    def fail(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)


class MqttPublisher:
    """Publishes outbox rows in id order, up to `inflight` at once, and acks them after PUBACK.

    Order on the wire per stream follows id order because every publish is handed to the
    client in id order on one connection. After a connection loss the publisher starts again
    from the oldest unacknowledged row, so delivery is at least once: a message whose PUBACK was
    lost is sent again. Consumers drop such repeats by (node, group, seq), or by
    (node, group, slot) across a failover, where the other node's seq counts on its own.

    `payload_for` assembles the message from a row; the default stamps term 0 and no signature,
    as a single node sends. The HA layer passes its own, with the term that sends the row.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        topic_for: Callable[[OutboxRow], str] | None = None,
        may_publish: Callable[[], bool] | None = None,
        publish_timeout: float | None = None,
        payload_for: Callable[[OutboxRow], bytes] | None = None,
        on_acked: Callable[[list[OutboxRow]], None] | None = None,
        hold: Callable[[OutboxRow], bool] | None = None,
    ) -> None:
        if settings.inflight < 1:
            raise ValueError(f"inflight must be >= 1, got {settings.inflight}")
        if settings.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {settings.qos}")
        self.settings = settings
        self.outbox = outbox
        self._topic_for = topic_for or topic_renderer(settings.topic)
        self._may_publish = may_publish or (lambda: True)
        # The HA layer stamps its fencing term at send time and learns its watermark from acks.
        self._payload_for = payload_for or single_node_payload
        self._on_acked = on_acked
        # The HA layer may keep a row back (and everything after it) for a moment, e.g. while
        # a healthier standby that polled the same slot is about to take over.
        self._hold = hold
        # Lost PUBACKs surface here; paho's keepalive (1.5 x keepalive) usually notices first.
        self._publish_timeout = publish_timeout or max(10.0, 2.0 * settings.keepalive)
        self._tls_context = build_tls_context(settings)
        self._wake = asyncio.Event()
        self._conn: _Connection | None = None
        # Every PUBACK handled in one loop step goes into one delete transaction.
        self._acked: LoopStepBatch[OutboxRow] = LoopStepBatch(self._handle_acks)
        self._inflight = 0
        self._published_total = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._recent: deque[tuple[float, int, int]] = deque()
        self._runner: asyncio.Task[None] | None = None

    # -- public ----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the publisher: the pipeline calls this after appending to the outbox."""
        self._wake.set()

    def status(self) -> PublisherStatus:
        now = time.monotonic()
        self._prune_recent(now)
        msgs = sum(n for _, n, _ in self._recent)
        values = sum(v for _, _, v in self._recent)
        return PublisherStatus(
            connected=self._conn is not None,
            published_total=self._published_total,
            publish_rate=msgs / RATE_WINDOW_S,
            values_rate=values / RATE_WINDOW_S,
            last_error=self._last_error,
            reconnects=self._reconnects,
            inflight=self._inflight,
            outbox_depth=self.outbox.depth(),
        )

    async def publish_status(self, topic: str, payload: bytes | str, retain: bool = True) -> bool:
        """Publish one out-of-band message (e.g. retained cluster state); False if not possible.

        It bypasses the outbox and the may_publish gate: the caller decides who may speak.
        """
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.client.publish(
                topic, payload, qos=1, retain=retain, timeout=self._publish_timeout
            )
        except aiomqtt.MqttError as exc:
            self._last_error = f"status publish: {exc}"
            log.warning("status publish to %s failed: %s", topic, exc)
            return False
        return True

    async def run(self) -> None:
        """Connect, publish, and reconnect with backoff until cancelled."""
        backoff = BACKOFF_MIN_S
        attempts = 0
        failing_since: float | None = None
        while True:
            if attempts:
                self._reconnects += 1
            attempts += 1
            client = self._make_client()
            connected_at: float | None = None
            try:
                async with client:
                    connected_at = time.monotonic()
                    self._on_connected(failing_since)
                    failing_since = None
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._last_error = str(exc) or type(exc).__name__
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "MQTT %s:%s: %s; retrying with backoff",
                        self.settings.host,
                        self.settings.port,
                        self._last_error,
                    )
                else:
                    log.debug("MQTT still unavailable: %s", self._last_error)
            finally:
                self._conn = None
                self._acked.flush()
            if connected_at is not None and time.monotonic() - connected_at >= STABLE_CONNECTION_S:
                backoff = BACKOFF_MIN_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def __aenter__(self) -> MqttPublisher:
        self._runner = asyncio.create_task(self.run(), name="mqtt-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    # -- connection ------------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=s.client_id,
            keepalive=s.keepalive,
            clean_session=True,  # the outbox is our session; nothing to resume on the broker
            max_inflight_messages=s.inflight,
            tls_context=self._tls_context,
            tls_insecure=s.tls_insecure if self._tls_context is not None else None,
            timeout=self._publish_timeout,
        )
        # aiomqtt warns on every publish past 10 pending; inflight publishes are our design.
        client.pending_calls_threshold = s.inflight + 10
        return client

    def _on_connected(self, failing_since: float | None) -> None:
        if failing_since is None:
            log.info("MQTT connected to %s:%s", self.settings.host, self.settings.port)
        else:
            log.info(
                "MQTT connected to %s:%s after %.1f s unavailable",
                self.settings.host,
                self.settings.port,
                time.monotonic() - failing_since,
            )
        self._last_error = None

    async def _serve(self, client: aiomqtt.Client) -> None:
        conn = _Connection(client, self.settings.inflight)
        self._conn = conn
        watcher = asyncio.create_task(self._await_disconnect(client))
        pump = asyncio.create_task(self._pump(conn))
        try:
            done, _ = await asyncio.wait(
                {watcher, pump, conn.failed}, return_when=asyncio.FIRST_COMPLETED
            )
            for fut in done:
                fut.result()  # re-raises the reason the connection ended
        finally:
            self._conn = None
            for task in (watcher, pump, *conn.tasks):
                task.cancel()
            await asyncio.gather(watcher, pump, *conn.tasks, return_exceptions=True)
            if not conn.failed.done():
                conn.failed.cancel()
            elif not conn.failed.cancelled():
                conn.failed.exception()  # retrieved, so asyncio does not log it as lost

    @staticmethod
    async def _await_disconnect(client: aiomqtt.Client) -> None:
        # No subscriptions, so the iterator yields nothing and only ends by raising
        # MqttError when the connection drops: aiomqtt's public way to observe that.
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("message iterator ended")

    async def _pump(self, conn: _Connection) -> None:
        cursor = 0
        while True:
            self._wake.clear()
            if not self._may_publish():
                await self._sleep_until_woken(GATE_RECHECK_S)
                continue
            rows = self.outbox.peek(PEEK_BATCH, after_id=cursor)
            if not rows:
                await self._sleep_until_woken(IDLE_RECHECK_S)
                continue
            held = False
            for row in rows:
                await conn.slots.acquire()
                # Checked per message so a fenced node stops at once, not after the batch.
                if not self._may_publish():
                    conn.slots.release()
                    break
                if self._hold is not None and self._hold(row):
                    conn.slots.release()
                    held = True
                    break
                self._inflight += 1
                task = asyncio.create_task(self._publish_one(conn, row))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
                cursor = row.id
            if held:
                await self._sleep_until_woken(GATE_RECHECK_S)

    async def _publish_one(self, conn: _Connection, row: OutboxRow) -> None:
        try:
            await conn.client.publish(
                self._topic_for(row),
                self._payload_for(row),
                qos=self.settings.qos,
                timeout=self._publish_timeout,
            )
        except aiomqtt.MqttError as exc:
            conn.fail(exc)
            return
        except Exception as exc:  # a broken topic_for must end the connection, not hang it
            conn.fail(aiomqtt.MqttError(f"publish of row {row.id} failed: {exc!r}"))
            return
        finally:
            self._inflight -= 1
            conn.slots.release()
        self._acked.add(row)

    def _handle_acks(self, rows: list[OutboxRow]) -> None:
        # Never raises: an ack the storage cannot take now is kept and written later.
        self.outbox.ack(r.id for r in rows)
        if self._on_acked is not None:
            self._on_acked(rows)
        self._published_total += len(rows)
        now = time.monotonic()
        self._recent.append((now, len(rows), sum(r.value_count for r in rows)))
        self._prune_recent(now)

    def _prune_recent(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    async def _sleep_until_woken(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # races with notify(), leaving the pump running after its connection is gone.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


__all__ = [
    "MqttPublisher",
    "MqttSettings",
    "MqttSetupError",
    "PublisherStatus",
    "check_topic_template",
    "single_node_payload",
    "topic_renderer",
]
