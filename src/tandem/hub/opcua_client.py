"""Polls one OPC UA server as a device: groups on the slot grid, one Read per group per slot.

The poller keeps one session to the server (secure channel as configured, user name token
from a file or the environment) and reconnects with backoff when it is lost. Every due slot
emits a Sample, exactly as the Modbus poller does: while the session is down every tag is
marked disconnected, so no slot is lost silently and slots, watermarks and failover work
the same. Values are checked at the boundary (hub/opcua_values.py): whatever the server
sends, a tag gets a value or an error, and the poll goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from tandem.config.hub import OpcUaDevice, OpcUaGroupConfig, OpcUaTagConfig
from tandem.hub.codec import ERR_DISCONNECTED, ERR_IO, ERR_TIMEOUT
from tandem.hub.modbus import (
    DeviceEvent,
    DeviceEventKind,
    DeviceListener,
    DeviceStatus,
    GroupStatus,
    PathStatus,
    PollScheduler,
    next_slot_after,
)
from tandem.hub.model import Sample, Value, slot_of
from tandem.hub.opcua_subscription import GroupSubscription
from tandem.hub.opcua_values import check_value, status_error

log = logging.getLogger(__name__)

# Service results that mean the session or channel is gone: reconnect rather than report.
SESSION_LOST: frozenset[int] = frozenset(
    {
        StatusCodes.BadSessionIdInvalid,
        StatusCodes.BadSessionClosed,
        StatusCodes.BadSessionNotActivated,
        StatusCodes.BadSecureChannelIdInvalid,
        StatusCodes.BadSecureChannelClosed,
        StatusCodes.BadConnectionClosed,
        StatusCodes.BadServerHalted,
        StatusCodes.BadShutdown,
        StatusCodes.BadNotConnected,
        StatusCodes.BadCommunicationError,
        StatusCodes.BadTcpInternalError,
    }
)
_NSU = re.compile(r"^nsu=([^;]+);(.*)$")


class SessionLost(Exception):
    """The session cannot serve reads any more; the poller reconnects."""


@dataclass(slots=True, eq=False)
class _Group:
    """One group's grid position, statistics and the NodeIds its Read asks for."""

    config: OpcUaGroupConfig
    owner: OpcUaPoller
    node_ids: list[ua.NodeId | None] = field(default_factory=list)  # None: not resolvable
    subscription: GroupSubscription | None = None
    next_slot: int | None = None
    busy: bool = False
    last_poll_ms: int | None = None
    last_slot: int | None = None
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    last_latency_ms: float | None = None
    error_tags: frozenset[str] = frozenset()

    def due(self, slot: int) -> None:
        try:
            self.owner._due(self, slot)
        except Exception:
            self.busy = False
            log.exception("poll of %s/%s failed to start", self.owner.device.name, self.name)

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> GroupStatus:
        return GroupStatus(
            name=self.config.name,
            interval=self.config.interval,
            last_poll_ms=self.last_poll_ms,
            last_slot=self.last_slot,
            polls=self.polls,
            errors=self.errors,
            overruns=self.overruns,
            last_latency_ms=self.last_latency_ms,
        )


def password_of(device: OpcUaDevice, environ: Mapping[str, str]) -> str | None:
    """The user's password, read when connecting (never from the config or argv)."""
    if device.password_file is not None:
        try:
            mode = device.password_file.stat().st_mode
            password = device.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise SessionLost(f"cannot read password_file: {reason}") from None
        if mode & 0o077:
            log.warning(
                "device %s: %s is readable by others (mode %o): chmod 600 it",
                device.name,
                device.password_file,
                mode & 0o777,
            )
        return password
    if device.password_env is not None:
        value = environ.get(device.password_env)
        if value is None:
            raise SessionLost(f"environment variable {device.password_env} is not set")
        return value
    return None


def certificate_uri(path: Path) -> str | None:
    """The application URI in a certificate's subjectAltName, which servers check."""
    data = path.read_bytes()
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed connect or read; never carries a secret."""
    if isinstance(exc, UaStatusCodeError):
        return f"{type(exc).__name__} (0x{exc.code:08X})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class OpcUaPoller:
    """Polls every group of one OPC UA device; the hub's Poller for ``protocol: opcua``."""

    def __init__(
        self,
        device: OpcUaDevice,
        *,
        source_node: str,
        emit: Callable[[Sample], None],
        clock: Callable[[], float] = time.time,
        on_event: DeviceListener | None = None,
        scheduler: PollScheduler | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.device = device
        self.source_node = source_node
        self._emit = emit
        self._clock = clock
        self._on_event = on_event
        self._scheduler = scheduler if scheduler is not None else PollScheduler(clock)
        self._environ = environ
        self._groups = [_Group(g, self) for g in device.groups]
        self._client: Client | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason: str | None = None
        self._polls: set[asyncio.Task[None]] = set()
        self._max_per_read = 0  # the server's MaxNodesPerRead; 0: no limit
        self.paused = False  # warm standby: the session stays up, nothing is read
        self._resume: dict[str, int] = {}
        self.connected = False
        self.last_error: str | None = None
        self.reconnects = 0
        self._generation = 0  # bumped at every start and stop: late callbacks see a stale one

    # --- status -------------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        endpoint = self.device.endpoint
        return DeviceStatus(
            name=self.device.name,
            connected=self.connected,
            last_error=self.last_error,
            groups=[g.status() for g in self._groups],
            active_path=endpoint,
            paths=[PathStatus(endpoint, self.connected, True, self.connected)],
        )

    def _set_connected(self, connected: bool, reason: str | None = None) -> None:
        if reason is not None:
            self.last_error = reason
        if connected == self.connected:
            return
        self.connected = connected
        name = self.device.name
        if connected:
            log.info("device %s connected to %s", name, self.device.endpoint)
            kind, message, detail = DeviceEventKind.CONNECTED, f"{name} connected", {}
        else:
            why = reason or self.last_error or "connection lost"
            log.warning("device %s disconnected: %s", name, why)
            kind, message, detail = (
                DeviceEventKind.DISCONNECTED,
                f"{name} disconnected: {why}",
                {"error": why},
            )
        if self._on_event is not None:
            detail["path"] = self.device.endpoint
            self._on_event(DeviceEvent(name, kind, message, detail))

    # --- lifecycle ----------------------------------------------------------------------------

    def resume(self, next_slots: Mapping[str, int]) -> None:
        """Start the named groups at these slots (a replaced poller's), not at the next tick."""
        self._resume = dict(next_slots)

    async def run(self) -> None:
        """Connect, poll on the grid, reconnect with backoff, until cancelled."""
        self._generation += 1
        for group in self._groups:
            group.next_slot, group.busy = self._resume.pop(group.config.name, None), False
            self._scheduler.add(group.config.interval, group)
        try:
            await self._sessions()
        finally:
            self._generation += 1
            for group in self._groups:
                self._scheduler.remove(group.config.interval, group)
            for task in list(self._polls):
                task.cancel()
            await self._close()
            self._set_connected(False, "polling stopped")

    async def _sessions(self) -> None:
        delay = self.device.reconnect_min
        while True:
            self._lost = asyncio.Event()
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._close()
                self._set_connected(False, f"connect to {self.device.endpoint}: {describe(exc)}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.device.reconnect_max)
                continue
            delay = self.device.reconnect_min
            self._set_connected(True)
            await self._lost.wait()
            self._set_connected(False, self._lost_reason)
            await self._close()
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        device = self.device
        client = Client(device.endpoint, timeout=device.timeout, watchdog_intervall=1.0)
        self._client = client
        client.name = client.description = f"Tandem {self.source_node}"
        client.application_uri = device.application_uri or f"urn:tandem:{self.source_node}:client"
        client.session_timeout = 60_000  # ms; a session we lost is not kept for an hour
        client.max_messagesize = device.max_message_size
        client.max_chunkcount = device.max_message_size // 65535 + 1
        security = device.security
        if security.policy == "Basic256Sha256":
            assert security.certificate and security.private_key and security.server_certificate
            if device.application_uri is None:
                client.application_uri = certificate_uri(security.certificate) or (
                    client.application_uri
                )
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(security.certificate),
                private_key=str(security.private_key),
                server_certificate=str(security.server_certificate),
                mode=getattr(ua.MessageSecurityMode, security.mode),
            )
        if device.username is not None:
            client.set_user(device.username)
            client.set_password(password_of(device, self._environ) or "")
        client.connection_lost_callback = self._on_connection_lost
        await asyncio.wait_for(client.connect(auto_reconnect=False), device.timeout * 3)
        await self._after_connect(client)

    async def _after_connect(self, client: Client) -> None:
        """What the session needs before the first poll: limits, namespaces, subscriptions."""
        self._max_per_read = await self._server_read_limit(client)
        namespaces: list[str] | None = None
        if any(t.node_id.startswith("nsu=") for g in self._groups for t in g.config.tags):
            namespaces = [str(uri) for uri in await client.get_namespace_array()]
        for group in self._groups:
            group.node_ids = [resolve_node_id(t.node_id, namespaces) for t in group.config.tags]
            if group.config.mode == "subscription":
                group.subscription = GroupSubscription(group.config, self.device.accept_uncertain)
                await group.subscription.start(client, group.node_ids)

    async def _server_read_limit(self, client: Client) -> int:
        node = client.get_node(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        try:
            limit = await node.read_value()
        except (UaError, TimeoutError):
            return 0  # the capability is optional
        return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 0

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lose(describe(exc))

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = f"session lost: {reason}"
            self._lost.set()

    async def _close(self) -> None:
        client, self._client = self._client, None
        for group in self._groups:
            group.subscription = None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), self.device.timeout)
        except Exception as exc:  # a dead peer cannot say goodbye; nothing to keep
            log.debug("device %s: disconnect: %s", self.device.name, describe(exc))

    async def __aenter__(self) -> OpcUaPoller:
        """Run in the background for the ``async with`` body (tests, small tools)."""
        self._task = asyncio.create_task(self.run(), name=f"poller:{self.device.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])

    # --- polling ------------------------------------------------------------------------------

    def _due(self, group: _Group, tick: int) -> None:
        """The grid reached slot ``tick`` of the group's interval (as DevicePoller._due)."""
        if self.paused:
            group.next_slot = None
            return
        if group.busy:
            return
        slot = tick if group.next_slot is None else group.next_slot
        if slot > tick:
            return
        if slot < tick:
            slot, skipped = next_slot_after(slot - 1, self._clock(), group.config.interval)
            group.overruns += skipped
        self._start_poll(group, slot)

    def _start_poll(self, group: _Group, slot: int) -> None:
        started_wall, started = self._clock(), time.perf_counter()
        client = self._client if self.connected else None
        if client is None:
            errors = dict.fromkeys((t.name for t in group.config.tags), ERR_DISCONNECTED)
            self._finish(group, slot, started_wall, started, {}, errors)
        elif group.subscription is not None:
            values, errors = group.subscription.latest()
            self._finish(group, slot, started_wall, started, values, errors)
        else:
            group.busy = True
            task = asyncio.get_running_loop().create_task(
                self._read_poll(client, group, slot, started_wall, started),
                name=f"read:{self.device.name}/{group.name}",
            )
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)

    async def _read_poll(
        self, client: Client, group: _Group, slot: int, started_wall: float, started: float
    ) -> None:
        values: dict[str, Value] = {}
        errors: dict[str, int] = {}
        try:
            await self._read_group(client, group, values, errors)
        except SessionLost as exc:
            self._lose(str(exc))
            errors = dict.fromkeys((t.name for t in group.config.tags), ERR_IO)
            values = {}
        except TimeoutError:
            self.last_error = f"{group.name}: no answer within {self.device.timeout:g} s"
            errors = dict.fromkeys((t.name for t in group.config.tags), ERR_TIMEOUT)
            values = {}
        finally:
            group.busy = False
        self._finish(group, slot, started_wall, started, values, errors)

    async def _read_group(
        self, client: Client, group: _Group, values: dict[str, Value], errors: dict[str, int]
    ) -> None:
        """One Read of the group (several if the server caps nodes per Read)."""
        tags = group.config.tags
        wanted = [(t, n) for t, n in zip(tags, group.node_ids, strict=True) if n is not None]
        for tag, node in zip(tags, group.node_ids, strict=True):
            if node is None:
                errors[tag.name] = StatusCodes.BadNodeIdUnknown
        size = self._max_per_read or len(wanted) or 1
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            results = await self._read(client, [n for _, n in chunk])
            if len(results) != len(chunk):
                self.last_error = f"{group.name}: {len(results)} results for {len(chunk)} nodes"
                errors.update(dict.fromkeys((t.name for t, _ in chunk), ERR_IO))
                continue
            for (tag, _), result in zip(chunk, results, strict=True):
                self._fold(tag, result, values, errors)

    async def _read(self, client: Client, nodes: list[ua.NodeId]) -> list[Any]:
        params = ua.ReadParameters()
        params.MaxAge = 0  # from the device, not a cache
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        params.NodesToRead = [
            ua.ReadValueId(NodeId=n, AttributeId=AttributeIds.Value) for n in nodes
        ]
        try:
            results = await asyncio.wait_for(client.uaclient.read(params), self.device.timeout)
        except UaStatusCodeError as exc:
            if exc.code in SESSION_LOST:
                raise SessionLost(describe(exc)) from None
            # A service fault (BadTooManyOperations, ...) answers for every node of the Read.
            return [ua.DataValue(StatusCode=ua.StatusCode(exc.code))] * len(nodes)
        except (ConnectionError, OSError, UaError) as exc:
            raise SessionLost(describe(exc)) from None
        return results if isinstance(results, list) else []

    def _fold(
        self, tag: OpcUaTagConfig, result: Any, values: dict[str, Value], errors: dict[str, int]
    ) -> None:
        checked = check_value(
            tag.type,
            result,
            max_length=tag.max_length,
            accept_uncertain=self.device.accept_uncertain,
        )
        if checked.error is None and checked.value is not None:
            values[tag.name] = checked.value
        else:
            errors[tag.name] = checked.error if checked.error is not None else status_error(0)

    def _finish(
        self,
        group: _Group,
        slot: int,
        started_wall: float,
        started: float,
        values: dict[str, Value],
        errors: dict[str, int],
    ) -> None:
        group.last_latency_ms = (time.perf_counter() - started) * 1000
        group.last_poll_ms = int(started_wall * 1000)
        group.last_slot = slot
        group.polls += 1
        if errors:
            group.errors += 1
        self._note_errors(group, errors)
        self._emit(
            Sample(
                node=self.device.name,
                group=group.name,
                slot=slot,
                timestamp_ms=group.last_poll_ms,
                values=values,
                errors=errors,
                seq=0,
                source_node=self.source_node,
            )
        )
        interval = group.config.interval
        group.next_slot, skipped = next_slot_after(slot, self._clock(), interval)
        group.overruns += skipped
        if group.next_slot <= slot_of(self._clock(), interval) and not self.paused:
            # Behind the grid (a slow answer): the missed slot is polled now, as Modbus does.
            asyncio.get_running_loop().call_soon(self._catch_up, group, self._generation)

    def _catch_up(self, group: _Group, generation: int) -> None:
        if generation != self._generation or group.busy or self.paused:
            return
        if group.next_slot is not None:
            self._start_poll(group, group.next_slot)

    def _note_errors(self, group: _Group, errors: dict[str, int]) -> None:
        """One log line when the set of failing tags changes, not one per poll."""
        failing = frozenset(errors)
        if failing == group.error_tags:
            return
        group.error_tags = failing
        if failing:
            shown = ", ".join(f"{t}={errors[t]:#x}" for t in sorted(failing)[:5])
            log.warning(
                "device %s group %s: %s tag(s) in error: %s",
                self.device.name,
                group.name,
                len(failing),
                shown,
            )
        else:
            log.info("device %s group %s: every tag reads again", self.device.name, group.name)


def resolve_node_id(text: str, namespaces: list[str] | None) -> ua.NodeId | None:
    """A NodeId from its string form; ``nsu=`` names its namespace by URI (Part 6, 5.3.1.10)."""
    match = _NSU.match(text)
    if match is not None:
        if namespaces is None or match.group(1) not in namespaces:
            return None
        text = f"ns={namespaces.index(match.group(1))};{match.group(2)}"
    try:
        return ua.NodeId.from_string(text)
    except (UaError, ValueError):
        return None
