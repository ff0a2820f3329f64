"""Outbox and MQTT publisher against a real mosquitto: delivery, outage, overflow, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tandem.errors import ConfigError
from tandem.hub.model import Sample
from tandem.hub.mqtt import MqttPublisher, MqttSettings, check_topic_template
from tandem.hub.outbox import Outbox
from tests.integration.broker import Broker, Received, RecordingSubscriber, make_test_certs

# The acceptance run uses 30 s (TANDEM_TEST_OUTAGE_S=30); 10 s shows the same behaviour faster.
OUTAGE_S = float(os.environ.get("TANDEM_TEST_OUTAGE_S", "10"))
APPEND_PERIOD_S = 0.1


def make_sample(group: str, slot: int, *, node: str = "plc1", n: int = 3) -> Sample:
    return Sample(
        node=node,
        group=group,
        slot=slot,
        timestamp_ms=1_700_000_000_000 + slot * 100,
        values={f"tag{i}": slot + i for i in range(n)},
        errors={"broken": 1002} if slot % 5 == 0 else {},
        seq=0,
        source_node="tandem-a",
        term=7,
    )


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path) as b:
        yield b


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as ob:
        yield ob


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[RecordingSubscriber]:
    async with RecordingSubscriber(broker.host, broker.port, "#") as sub:
        yield sub


def settings_for(broker: Broker, **overrides: object) -> MqttSettings:
    base: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "topic": "/neuron/{node}",
        "keepalive": 5,
    }
    base.update(overrides)
    return MqttSettings(**base)  # type: ignore[arg-type]


def by_group(messages: list[Received]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = defaultdict(list)
    for m in messages:
        body = m.json()
        out[body["group"]].append(body)
    return out


async def test_publisher_appended_samples_all_arrive_intact(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    publisher = MqttPublisher(settings_for(broker), outbox)
    async with publisher:
        for slot in range(50):
            outbox.append(make_sample("fast", slot))
            outbox.append(make_sample("slow", slot, node="plc2"))
            publisher.notify()
        received = await subscriber.wait_for_count(100, timeout=20)
        await wait_until(lambda: outbox.depth() == 0, 10, "outbox to drain")
        status = publisher.status()

    assert len(received) == 100
    assert {m.topic for m in received} == {"/neuron/plc1", "/neuron/plc2"}
    groups = by_group(received)
    for group in ("fast", "slow"):
        assert [b["slot"] for b in groups[group]] == list(range(50))
        assert [b["seq"] for b in groups[group]] == list(range(1, 51))
    first = groups["fast"][0]
    assert first == {
        "timestamp": 1_700_000_000_000,
        "node": "plc1",
        "group": "fast",
        "values": {"tag0": 0, "tag1": 1, "tag2": 2},
        "errors": {"broken": 1002},
        "slot": 0,
        "seq": 1,
        "term": 0,  # a single node's publisher sends term 0, whatever the sample was made with
        "source_node": "tandem-a",
    }
    assert status.connected
    assert status.published_total == 100
    assert status.publish_rate > 0
    assert status.values_rate == pytest.approx(status.publish_rate * 3)
    assert status.outbox_depth == 0


async def test_publisher_topic_template_uses_group_and_source_node(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    settings = settings_for(broker, topic="site/{source_node}/{node}/{group}")
    async with MqttPublisher(settings, outbox) as publisher:
        outbox.append(make_sample("g", 1))
        publisher.notify()
        received = await subscriber.wait_for_count(1, timeout=10)
    assert received[0].topic == "site/tandem-a/plc1/g"


async def test_publisher_gate_closed_sends_nothing_until_opened(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    gate = {"open": False}
    publisher = MqttPublisher(settings_for(broker), outbox, may_publish=lambda: gate["open"])
    async with publisher:
        await wait_until(lambda: publisher.status().connected, 10, "connection")
        for slot in range(10):
            outbox.append(make_sample("g", slot))
        publisher.notify()
        await asyncio.sleep(0.5)
        assert subscriber.messages == []
        assert outbox.depth() == 10
        gate["open"] = True
        received = await subscriber.wait_for_count(10, timeout=10)
    assert [b["slot"] for b in by_group(received)["g"]] == list(range(10))


async def test_publisher_gate_closed_midstream_stops_within_inflight(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    inflight = 20
    gate = {"open": True}
    settings = settings_for(broker, inflight=inflight)
    publisher = MqttPublisher(settings, outbox, may_publish=lambda: gate["open"])
    outbox.append_many([make_sample("g", slot, n=200) for slot in range(3000)])
    async with publisher:
        publisher.notify()
        await wait_until(lambda: publisher.status().published_total >= 200, 20, "some traffic")
        gate["open"] = False
        acked_at_fence = publisher.status().published_total
        await asyncio.sleep(1.0)
        fenced = publisher.status()
        await subscriber.wait_for_count(fenced.published_total, timeout=10)
        await asyncio.sleep(0.3)
        delivered_while_fenced = len(subscriber.messages)
        gate["open"] = True
        await wait_until(lambda: outbox.depth() == 0, 60, "outbox to drain after unfencing")
        received = await subscriber.wait_for_count(3000, timeout=30)

    # only what was already handed to the client may complete after the gate closes
    assert fenced.published_total - acked_at_fence <= inflight
    assert fenced.inflight == 0
    assert delivered_while_fenced == fenced.published_total
    assert fenced.outbox_depth == 3000 - fenced.published_total > 0
    assert [b["slot"] for b in by_group(received)["g"]] == list(range(3000))


@pytest.mark.slow
async def test_publisher_broker_outage_every_slot_once_in_order(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    # A broker without persistence forgets the subscriber when it stops, and drops whatever
    # arrives before the subscriber is back. The gate holds the publisher until then, so the
    # test measures the publisher and not that race.
    gate = {"open": True}
    publisher = MqttPublisher(settings_for(broker), outbox, may_publish=lambda: gate["open"])
    groups = ("g100ms", "g200ms")
    appended: dict[str, int] = {g: 0 for g in groups}

    async def produce(stop: asyncio.Event) -> None:
        tick = 0
        while not stop.is_set():
            outbox.append(make_sample(groups[0], tick))
            appended[groups[0]] += 1
            if tick % 2 == 0:
                outbox.append(make_sample(groups[1], tick // 2, node="plc2"))
                appended[groups[1]] += 1
            publisher.notify()
            tick += 1
            await asyncio.sleep(APPEND_PERIOD_S)

    stop = asyncio.Event()
    async with publisher:
        producer = asyncio.create_task(produce(stop))
        try:
            await asyncio.sleep(1.0)
            broker.stop()
            await wait_until(lambda: not publisher.status().connected, 15, "disconnect")
            await asyncio.sleep(OUTAGE_S)
            depth_during_outage = outbox.depth()
            gate["open"] = False
            broker.start()
            await asyncio.wait_for(subscriber.subscribed.wait(), 15)
            gate["open"] = True
            publisher.notify()
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await producer
        total = sum(appended.values())
        received = await subscriber.wait_for_count(total, timeout=30)
        await wait_until(lambda: outbox.depth() == 0, 15, "outbox to drain")
        status = publisher.status()

    # the outage really held rows back: ~OUTAGE_S of 15 rows/s
    assert depth_during_outage >= OUTAGE_S * 10
    assert status.reconnects >= 1
    assert len(received) == total
    got = by_group(received)
    for group in groups:
        assert [b["slot"] for b in got[group]] == list(range(appended[group]))
        assert [b["seq"] for b in got[group]] == list(range(1, appended[group] + 1))


async def test_outbox_overflow_while_offline_drops_oldest(
    broker: Broker, tmp_path: Path, subscriber: RecordingSubscriber
) -> None:
    with Outbox(tmp_path / "small.db", max_rows=20) as outbox:
        for slot in range(50):
            outbox.append(make_sample("g", slot))
        assert outbox.overflow_dropped == 30
        assert outbox.depth() == 20
        async with MqttPublisher(settings_for(broker), outbox) as publisher:
            publisher.notify()
            received = await subscriber.wait_for_count(20, timeout=10)
            await wait_until(lambda: outbox.depth() == 0, 10, "outbox to drain")
            await asyncio.sleep(0.2)
    bodies = by_group(subscriber.messages)["g"]
    assert [b["slot"] for b in bodies] == list(range(30, 50))
    # seq is not reused for what was dropped: the gap tells consumers data was lost
    assert [b["seq"] for b in bodies] == list(range(31, 51))
    assert len(received) == 20


async def test_publisher_unreachable_broker_keeps_rows_and_counts_reconnects(
    tmp_path: Path, outbox: Outbox
) -> None:
    port_holder = Broker(tmp_path)  # never started: a port nobody listens on
    publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=port_holder.port), outbox)
    outbox.append(make_sample("g", 1))
    async with publisher:
        await wait_until(lambda: publisher.status().reconnects >= 2, 10, "retries")
        status = publisher.status()
    assert not status.connected
    assert status.last_error
    assert outbox.depth() == 1


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tandem.hub.model import Sample
    from tandem.hub.outbox import Outbox

    ob = Outbox(Path(sys.argv[1]))
    slot = 0
    while True:
        ob.append(Sample("plc1", "g", slot, slot, {"v": slot}, {}, 0, "tandem-a", 0))
        slot += 1
        print(slot, flush=True)
    """
)


def test_outbox_kill9_during_appends_keeps_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        committed = 0
        deadline = time.monotonic() + 30
        while committed < 2000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 2000

    with Outbox(path) as ob:
        rows = ob.peek(1_000_000)
        # everything printed was committed; at most the rows after the last print are extra
        assert ob.depth() == len(rows) >= committed
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert ob.last_seq("g", "plc1") == len(rows)
        assert ob.append(make_sample("g", 10**6)).seq == len(rows) + 1


def test_topic_template_unknown_variable_rejected() -> None:
    check_topic_template("/neuron/{node}/{group}/{source_node}")
    with pytest.raises(ConfigError) as err:
        check_topic_template("/neuron/{device}")
    assert "device" in str(err.value)
    with pytest.raises(ConfigError):
        check_topic_template("/neuron/{node")


@pytest.mark.slow
async def test_publisher_throughput_probe_1000_value_samples(
    broker: Broker, outbox: Outbox, subscriber: RecordingSubscriber
) -> None:
    count = 2000
    samples = [make_sample(f"g{i % 4}", i // 4, n=1000) for i in range(count)]
    start = time.perf_counter()
    for sample in samples:
        outbox.append(sample)  # one commit each, as the poller does
    append_s = (time.perf_counter() - start) / count
    start = time.perf_counter()
    async with MqttPublisher(settings_for(broker), outbox) as publisher:
        publisher.notify()
        await wait_until(lambda: outbox.depth() == 0, 120, "outbox to drain")
        elapsed = time.perf_counter() - start
        await subscriber.wait_for_count(count, timeout=60)
    rate = count / elapsed
    print(
        f"\nthroughput: {count} samples x 1000 values in {elapsed:.2f} s: "
        f"{rate:.0f} msg/s, {rate * 1000:.0f} values/s; append {append_s * 1e6:.0f} us/sample"
    )
    assert rate > 20  # generous floor on shared CPUs; the printed number is the result


async def test_publisher_tls_with_ca_connects_and_drains(tmp_path: Path, outbox: Outbox) -> None:
    certs = make_test_certs(tmp_path / "certs")
    with Broker(tmp_path, tls=certs) as tls_broker:
        settings = settings_for(tls_broker, tls_ca=str(certs.ca))
        async with MqttPublisher(settings, outbox) as publisher:
            outbox.append_many([make_sample("g", slot) for slot in range(5)])
            publisher.notify()
            await wait_until(lambda: outbox.depth() == 0, 15, "outbox to drain over TLS")
            assert publisher.status().published_total == 5


async def test_publisher_tls_unknown_ca_refused_unless_insecure(
    tmp_path: Path, outbox: Outbox
) -> None:
    certs = make_test_certs(tmp_path / "certs")
    outbox.append(make_sample("g", 1))
    with Broker(tmp_path, tls=certs) as tls_broker:
        # system CAs do not know the test CA: verification must fail and keep the row
        strict = MqttPublisher(settings_for(tls_broker, tls=True), outbox)
        async with strict:
            await wait_until(lambda: strict.status().reconnects >= 1, 15, "a failed attempt")
            assert not strict.status().connected
            assert strict.status().last_error
        assert outbox.depth() == 1
        lax = MqttPublisher(settings_for(tls_broker, tls=True, tls_insecure=True), outbox)
        async with lax:
            await wait_until(lambda: outbox.depth() == 0, 15, "outbox to drain, insecure TLS")


def test_mqtt_settings_from_config_maps_every_field() -> None:
    from tandem.config.hub import MqttConfig

    cfg = MqttConfig.model_validate(
        {
            "host": "broker.local",
            "port": 8883,
            "topic": "/site/{source_node}/{node}",
            "qos": 1,
            "client_id": "tandem-a",
            "username": "u",
            "password": "p",
            "tls": {"ca_file": "/etc/ca.pem", "insecure": True},
            "inflight": 50,
            "keepalive": 15,
        }
    )
    s = MqttSettings.from_config(cfg)
    assert (s.host, s.port, s.topic, s.qos) == (
        "broker.local",
        8883,
        "/site/{source_node}/{node}",
        1,
    )
    assert (s.client_id, s.username, s.password) == ("tandem-a", "u", "p")
    assert (s.tls_ca, s.tls_cert, s.tls_key, s.tls_insecure) == ("/etc/ca.pem", None, None, True)
    assert (s.inflight, s.keepalive) == (50, 15)
    assert s.tls_enabled
    assert not MqttSettings.from_config(MqttConfig()).tls_enabled
