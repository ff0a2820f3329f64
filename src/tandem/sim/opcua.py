"""An OPC UA PLC simulator: typed variables that move with time, and bad status codes on demand.

Variables live in namespace ``urn:tandem:sim`` (index 2) as ``ns=2;s=<Name>`` under the
Objects folder (``t`` = seconds since the simulator started):

==========  =========  ========================================================
Counter     UInt32     +1 every 100 ms
Sine        Double     sin(2*pi*t/10)
Ramp        Float      0..999.0, +1 every 10 ms
Toggle      Boolean    flips every whole second
Level       Int16      fixture, -1234
Total       Int64      fixture, 2**40 + 1
Text        String     fixture, "TANDEM-SIM"
==========  =========  ========================================================

``bad`` pins a status on a variable (``Sine=BadSensorFailure``): it reads with that status
and no value until cleared. Tests reach further with `set_status` and `pin` (any Variant,
e.g. an array or a NaN), and can require a user name and password or Basic256Sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

log = logging.getLogger(__name__)

NAMESPACE = "urn:tandem:sim"
UPDATE_S = 0.01  # the ramp moves every 10 ms


@dataclass(frozen=True, slots=True)
class SimVariable:
    name: str
    variant: ua.VariantType
    value_at: Callable[[float], Any]


VARIABLES: tuple[SimVariable, ...] = (
    SimVariable("Counter", ua.VariantType.UInt32, lambda t: int(t * 10) % 2**32),
    SimVariable("Sine", ua.VariantType.Double, lambda t: math.sin(2 * math.pi * t / 10)),
    SimVariable("Ramp", ua.VariantType.Float, lambda t: float(int(t * 100) % 1000)),
    SimVariable("Toggle", ua.VariantType.Boolean, lambda t: int(t) % 2 == 0),
    SimVariable("Level", ua.VariantType.Int16, lambda t: -1234),
    SimVariable("Total", ua.VariantType.Int64, lambda t: 2**40 + 1),
    SimVariable("Text", ua.VariantType.String, lambda t: "TANDEM-SIM"),
)


def status_code(name_or_number: str) -> int:
    """A StatusCode from its name (BadSensorFailure) or number (0x80320000)."""
    value = getattr(StatusCodes, name_or_number, None)
    if isinstance(value, int):
        return value
    try:
        return int(name_or_number, 0)
    except ValueError:
        raise ValueError(f"unknown status code {name_or_number!r}") from None


class _Users:
    """Accepts anonymous users, or only the configured user name and password."""

    def __init__(self, users: Mapping[str, str] | None) -> None:
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, **_: Any
    ) -> User | None:
        if self.users is None:
            return User(role=UserRole.User)
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaSimulator:
    """``async with OpcUaSimulator(port=0) as sim:`` serves until the block ends."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        *,
        bad: Mapping[str, int] | None = None,
        users: Mapping[str, str] | None = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        application_uri: str = "urn:tandem:sim:server",
    ) -> None:
        self.host, self.requested_port = host, port
        self._users = users
        self._certificate, self._private_key = certificate, private_key
        self.application_uri = application_uri
        self.server = Server(user_manager=_Users(users))  # type: ignore[arg-type]
        self._status: dict[str, int] = dict(bad or {})
        self._pinned: dict[str, ua.Variant] = {}
        self._nodes: dict[str, ua.NodeId] = {}
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.server.bserver.port) if self.server.bserver else self.requested_port

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    def node_id(self, name: str) -> str:
        return f"ns=2;s={name}"

    def set_status(self, name: str, code: int | None) -> None:
        """Read ``name`` with this status and no value (None: good again)."""
        if code is None:
            self._status.pop(name, None)
        else:
            self._status[name] = code

    def pin(self, name: str, variant: ua.Variant | None) -> None:
        """Serve this Variant as ``name``'s value whatever its type (None: back to normal).

        A read callback, not a write: the server refuses writes of another type, and a
        simulator of a broken server must be able to send one. Reads only (no datachange).
        """
        if variant is None:
            self._pinned.pop(name, None)
            return
        self._pinned[name] = variant
        pinned = ua.DataValue(variant)
        self.server.iserver.aspace.set_attribute_value_callback(
            self._nodes[name], AttributeIds.Value, lambda _node, _attr: pinned
        )

    async def __aenter__(self) -> OpcUaSimulator:
        server = self.server
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.requested_port}/")
        server.set_server_name("Tandem OPC UA simulator")
        await server.set_application_uri(self.application_uri)
        server.allow_remote_admin(False)
        self._security(server)
        index = await server.register_namespace(NAMESPACE)
        objects = server.nodes.objects
        for var in VARIABLES:
            node_id = ua.NodeId(ua.String(var.name), ua.Int16(index))
            await objects.add_variable(node_id, var.name, var.value_at(0.0), var.variant)
            self._nodes[var.name] = node_id
        if self._certificate is not None and self._private_key is not None:
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
        await self._update()
        await server.start()
        self._task = asyncio.create_task(self._update_forever(), name="opcua-sim")
        return self

    def _security(self, server: Server) -> None:
        if self._certificate is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ]
            )
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self._users is None:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self.server.stop()

    async def _update_forever(self) -> None:
        while True:
            await asyncio.sleep(UPDATE_S)
            await self._update()

    async def _update(self) -> None:
        t = time.monotonic() - self._started
        for var in VARIABLES:
            if var.name in self._pinned:
                continue  # served by its read callback until unpinned
            code = self._status.get(var.name)
            if code is not None:
                value = ua.DataValue(StatusCode=ua.StatusCode(ua.UInt32(code)))
            else:
                variant = ua.Variant(var.value_at(t), var.variant)
                value = ua.DataValue(variant, SourceTimestamp=cast(ua.DateTime, datetime.now(UTC)))
            # A write also drops a pinned value's read callback: the variable is normal again.
            await self.server.write_attribute_value(self._nodes[var.name], value)


async def serve_forever(host: str, port: int, bad: Mapping[str, int]) -> None:
    """`tandem simulate-plc --opcua PORT`: serve until cancelled (Ctrl-C)."""
    async with OpcUaSimulator(host, port, bad=bad) as sim:
        log.info("OPC UA simulator on %s (%s variables)", sim.endpoint, len(VARIABLES))
        print(f"OPC UA simulator listening on {sim.endpoint}", flush=True)
        await asyncio.Event().wait()


def pinned_statuses(items: Iterable[str]) -> dict[str, int]:
    """``--bad NAME=STATUS`` items as variable -> status code; ValueError names a bad one."""
    names = {v.name for v in VARIABLES}
    pinned: dict[str, int] = {}
    for item in items:
        name, _, code = item.partition("=")
        if name not in names or not code:
            raise ValueError(f"--bad {item!r}: use NAME=STATUS with NAME one of {sorted(names)}")
        try:
            pinned[name] = status_code(code)
        except ValueError as exc:
            raise ValueError(f"--bad {item!r}: {exc}") from None
    return pinned


def main(host: str, port: int, bad: Iterable[str] = ()) -> None:
    """Blocking entry for ``tandem simulate-plc --opcua PORT``; Ctrl-C stops it."""
    pinned = pinned_statuses(bad)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(host, port, pinned))
