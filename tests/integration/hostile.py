"""Hostile inputs for a live pair: what an attacker on the broker, the LAN or the API can send.

Each case is a name and an action that sends something at the pair; the test runs them one
after the other against one pair and checks, after every case, that both nodes are up and the
master publishes again within a second, and at the end that delivery stayed exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import httpx
import orjson

from tandem.ha.wire import Signer
from tandem.security.keys import broker_hmac_key, peer_bearer
from tandem.vrrp import packet
from tandem.vrrp.types import Advert

Action = Callable[["Target"], None]


@dataclass
class Target:
    """Where the hostile input goes: the pair's broker, nodes and VRRP port."""

    broker: tuple[str, int]
    cluster: str
    secret: str
    nodes: dict[str, str]  # name -> API base URL
    vrrp: dict[str, tuple[str, int]]  # name -> (address, udp port)
    data_topic: str  # e.g. /neuron/plc1
    token: str  # an operator token of node-a (for the cases that have a credential)
    device: str
    group: str
    interval: float

    @property
    def signer(self) -> Signer:
        return Signer(broker_hmac_key(self.secret), self.cluster)


def publish(target: Target, topic: str, payload: bytes, *, retain: bool = False) -> None:
    async def send() -> None:
        async with aiomqtt.Client(*target.broker, identifier=f"hostile-{time.time_ns()}") as c:
            await c.publish(topic, payload, qos=1, retain=retain)

    asyncio.run(send())


def state(payload: bytes, retain: bool = True) -> Action:
    return lambda t: publish(t, f"tandem/{t.cluster}/state", payload, retain=retain)


def heartbeat(payload: bytes) -> Action:
    return lambda t: publish(t, f"tandem/{t.cluster}/heartbeat", payload)


def data(build: Callable[[Target], bytes], retain: bool = False) -> Action:
    return lambda t: publish(t, t.data_topic, build(t), retain=retain)


def sample(t: Target, slot: int, term: int, source: str, sig: str | None = None) -> bytes:
    body = (
        f'{{"timestamp":1,"node":"{t.device}","group":"{t.group}","values":{{"x":1}},'
        f'"errors":{{}},"slot":{slot},"seq":1,"term":{term},"source_node":"{source}"'
    )
    tail = f',"sig":"{sig}"}}' if sig else "}"
    return (body + tail).encode()


def replay_real(t: Target) -> None:
    """Capture one real message of the pair off the broker and publish the same bytes again."""

    async def capture_and_replay() -> None:
        async with aiomqtt.Client(*t.broker, identifier=f"replay-{time.time_ns()}") as c:
            await c.subscribe(t.data_topic, qos=1)
            async for message in c.messages:
                if isinstance(message.payload, bytes) and message.payload.startswith(b"{"):
                    await c.publish(t.data_topic, message.payload, qos=1)
                    return

    asyncio.run(asyncio.wait_for(capture_and_replay(), 5.0))


def now_slot(t: Target) -> int:
    return math.floor(time.time() / t.interval)


def signed_sample(t: Target, slot: int, term: int, source: str) -> bytes:
    sig = t.signer.data(t.device, t.group, slot, 1, term, source)
    return sample(t, slot, term, source, sig)


def signed_control(kind: str, node: str, term: int, ts_ms: int | None = None) -> Action:
    def act(t: Target) -> None:
        ts = int(time.time() * 1000) if ts_ms is None else ts_ms
        body = t.signer.control_payload(kind, node, term, ts)
        publish(t, f"tandem/{t.cluster}/{kind}", body, retain=kind == "state")

    return act


def forged_control(kind: str, node: str, term: int) -> Action:
    def act(t: Target) -> None:
        wrong = Signer(b"not the cluster key" * 2, t.cluster)
        body = wrong.control_payload(kind, node, term, int(time.time() * 1000))
        publish(t, f"tandem/{t.cluster}/{kind}", body, retain=kind == "state")

    return act


def vrrp_udp(src: str, build: Callable[[Target, str, str], bytes]) -> Action:
    """A UDP datagram to every node's VRRP port, from `src` (a loopback address we bind)."""

    def act(t: Target) -> None:
        for address, port in t.vrrp.values():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.sendto(build(t, src, address), (address, port))

    return act


def advert(priority: int) -> Callable[[Target, str, str], bytes]:
    def build(t: Target, src: str, dst: str) -> bytes:
        a = Advert(version=3, vrid=51, priority=priority, interval=0.1, addresses=())
        from ipaddress import IPv4Address

        return packet.encode(a, IPv4Address(src), IPv4Address(dst))

    return build


def spoofed_resign(t: Target) -> None:
    """A priority-0 advert that claims to come from the master itself (raw socket, root)."""
    from ipaddress import IPv4Address

    (master_addr, port), (backup_addr, _) = list(t.vrrp.values())[:2]
    a = Advert(version=3, vrid=51, priority=0, interval=0.1, addresses=())
    vrrp = packet.encode(a, IPv4Address(master_addr), IPv4Address(backup_addr))
    udp_len = 8 + len(vrrp)
    udp = struct.pack("!HHHH", port, port, udp_len, 0) + vrrp
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + udp_len,
        0,
        0,
        255,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(master_addr),
        socket.inet_aton(backup_addr),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        s.sendto(ip + udp, (backup_addr, 0))


def http(
    method: str,
    path: str,
    expect: set[int],
    *,
    node: str = "node-a",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Action:
    """One request at a node; raises (a failed case) if the answer is not a refusal expected."""

    def act(t: Target) -> None:
        with httpx.Client(timeout=10.0) as client:
            r = client.request(method, f"{t.nodes[node]}{path}", headers=headers, content=body)
        if r.status_code not in expect:
            raise AssertionError(f"{method} {path}: {r.status_code}, expected {sorted(expect)}")

    return act


def bearer(t: Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {t.token}"}


def with_token(method: str, path: str, expect: set[int], body: bytes | None = None) -> Action:
    def act(t: Target) -> None:
        http(method, path, expect, headers=bearer(t), body=body)(t)

    return act


def peer_handover(term: int) -> Action:
    """A handover offer with the real peer bearer, from a 'peer' whose term is stale."""

    def act(t: Target) -> None:
        offer = {"from_node": "node-a", "term": term, "watermarks": {}, "reason": "hostile"}
        headers = {"Authorization": f"Bearer {peer_bearer(t.secret)}"}
        with httpx.Client(timeout=10.0) as client:
            r = client.post(
                f"{t.nodes['node-b']}/api/v1/peer/handover", json=offer, headers=headers
            )
        if r.status_code != 200 or r.json().get("accepted"):
            raise AssertionError(f"stale handover: {r.status_code} {r.text[:200]}")

    return act


def stream_flood(t: Target) -> None:
    """More event streams than the caps allow: the excess is refused, the master keeps going."""
    codes: list[int] = []

    def one() -> None:
        url = f"{t.nodes['node-a']}/api/v1/events"
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.Client(timeout=3.0) as client,
            client.stream("GET", url, headers=bearer(t)) as r,
        ):
            codes.append(r.status_code)
            time.sleep(1.0)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    if 503 not in codes:
        raise AssertionError(f"no stream refused: {sorted(set(codes))}")


def login_storm(t: Target) -> None:
    codes = []
    with httpx.Client(timeout=20.0) as client:
        for _ in range(30):
            r = client.post(
                f"{t.nodes['node-a']}/api/v1/login", json={"username": "admin", "password": "x"}
            )
            codes.append(r.status_code)
    if 429 not in codes or 200 in codes:
        raise AssertionError(f"login storm answers: {sorted(set(codes))}")


CASES: list[tuple[str, Action]] = [
    # -- broker: cluster state and heartbeats
    ("state: Infinity term (retained)", state(b'{"term": Infinity, "node": "x"}')),
    ("state: NaN term", state(b'{"term": NaN, "node": "x"}')),
    ("state: 5000-deep nesting (retained)", state(b"[" * 5000)),
    ("state: 40-digit term", state(b'{"term": 1' + b"0" * 40 + b', "node": "node-a"}')),
    ("state: term 2^63", state(b'{"term": 9223372036854775808, "node": "node-b"}')),
    ("state: term as a string", state(b'{"term": "99", "node": "node-b"}')),
    ("state: term true", state(b'{"term": true, "node": "node-b"}')),
    ("state: unsigned, huge term naming the master", state(b'{"term": 99999, "node": "node-a"}')),
    ("state: unsigned, high term naming the backup", state(b'{"term": 500, "node": "node-b"}')),
    ("state: wrong key, naming the backup", forged_control("state", "node-b", 700)),
    ("state: empty retained payload", state(b"")),
    ("state: binary garbage", state(bytes(range(256)) * 4)),
    ("heartbeat: wrong key, from the backup", forged_control("heartbeat", "node-b", 50)),
    ("heartbeat: unsigned", heartbeat(b'{"term": 50, "node": "node-b", "ts_ms": 1}')),
    ("heartbeat: replayed signed, old term", signed_control("heartbeat", "node-b", 0, ts_ms=1)),
    ("state: replayed signed, old term", signed_control("state", "node-b", 0, ts_ms=1)),
    ("state: signed, a term the master never took", signed_control("state", "node-a", 10**6)),
    # -- broker: data topics
    ("data: far-future slot, unsigned", data(lambda t: sample(t, now_slot(t) + 10**7, 9, "x"))),
    (
        "data: far-future slot, signed (a stolen key)",
        data(lambda t: signed_sample(t, now_slot(t) + 10**7, 1, "intruder")),
    ),
    ("data: 40-digit slot", data(lambda t: sample(t, 10**40, 1, "node-b"))),
    ("data: negative slot", data(lambda t: sample(t, -5, 1, "node-b"))),
    ("data: oversized (1 MiB)", data(lambda t: b'{"x":"' + b"a" * (1 << 20) + b'"}')),
    ("data: malformed JSON", data(lambda t: b'{"timestamp":1,"node":')),
    ("data: binary garbage (retained)", data(lambda t: bytes(range(256)) * 8, retain=True)),
    ("data: empty payload", data(lambda t: b"")),
    (
        "data: unsigned, higher term from the backup",
        data(lambda t: sample(t, now_slot(t), 80, "node-b")),
    ),
    ("data: replay of a real message", lambda t: replay_real(t)),
    ("data: NUL bytes in names", data(lambda t: b'{"timestamp":1,"node":"p\x00","group":"g\x00"}')),
    (
        "barrier: forged token for the backup",
        lambda t: publish(t, f"tandem/{t.cluster}/barrier/node-b", b'{"token":"x","sig":"00"}'),
    ),
    # -- VRRP
    ("vrrp: priority 255 from an unknown source", vrrp_udp("127.0.0.9", advert(255))),
    ("vrrp: priority 0 from an unknown source", vrrp_udp("127.0.0.9", advert(0))),
    ("vrrp: garbage datagram", vrrp_udp("127.0.0.9", lambda t, s, d: b"\x31" * 40)),
    ("vrrp: spoofed resign from the master's address", spoofed_resign),
    # -- HTTP: the API and the peer link
    ("http: switchover without a credential", http("POST", "/api/v1/switchover", {401})),
    (
        "http: switchover with a wrong token",
        http("POST", "/api/v1/switchover", {401}, headers={"Authorization": "Bearer nope"}),
    ),
    (
        "http: cross-site switchover with a made-up session cookie",
        http(
            "POST",
            "/api/v1/switchover",
            {401, 403},
            headers={"Cookie": "tandem_session=forged", "Origin": "http://evil.example"},
        ),
    ),
    ("http: config PUT without a credential", http("PUT", "/api/v1/config", {401}, body=b"x")),
    ("http: config PUT as an operator", with_token("PUT", "/api/v1/config", {403}, b"node: x")),
    (
        "http: device POST without a credential",
        http("POST", "/api/v1/devices", {401}, body=b'{"name": "x"}'),
    ),
    (
        "http: device DELETE as an operator",
        with_token("DELETE", "/api/v1/devices/plc1", {403}),
    ),
    (
        "http: tag CSV PUT as an operator",
        with_token("PUT", "/api/v1/devices/plc1/groups/fast/tags.csv", {403}, b"name\nx\n"),
    ),
    (
        "http: version restore as an operator",
        with_token("POST", "/api/v1/config/versions/1/restore", {403}),
    ),
    (
        "http: 10 MiB handover body without a credential",
        http("POST", "/api/v1/peer/handover", {401, 413}, node="node-b", body=b"{" * (10 << 20)),
    ),
    (
        "http: handover with an operator token instead of the peer bearer",
        lambda t: http(
            "POST",
            "/api/v1/peer/handover",
            {401, 403},
            node="node-b",
            headers=bearer(t),
            body=b"{}",
        )(t),
    ),
    ("http: handover from the peer with a stale term", peer_handover(0)),
    ("http: status without a credential", http("GET", "/api/v1/status", {401})),
    ("http: events without a credential", http("GET", "/api/v1/events", {401})),
    ("http: metrics without a credential", http("GET", "/metrics", {401})),
    (
        "http: peer stream with a wrong bearer",
        http(
            "GET",
            "/api/v1/peer/stream",
            {401},
            node="node-b",
            headers={"Authorization": "Bearer x"},
        ),
    ),
    (
        "http: a foreign Host header",
        http("GET", "/api/v1/health", {400, 421}, headers={"Host": "evil.example"}),
    ),
    (
        "http: 1 MiB switchover body with a token",
        with_token("POST", "/api/v1/switchover", {413}, b"x" * (1 << 20)),
    ),
    ("http: more event streams than the cap", stream_flood),
    ("http: a login storm", login_storm),
]


def describe(cases: list[tuple[str, Any]]) -> str:
    return "\n".join(f"{i + 1:2}. {name}" for i, (name, _) in enumerate(cases))


__all__ = ["CASES", "Target", "describe", "orjson"]
