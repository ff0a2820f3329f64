"""This node's tags as a read-only OPC UA server; in a pair, one server of a hot redundant set.

Every tag is a variable at ``Objects/<device>/<group>/<tag>`` (NodeId ``s=<device>/<group>/
<tag>`` in namespace ``urn:tandem:<cluster>``, the same on both nodes, as Part 4 wants of a
redundant set), updated from the samples the hub stored: the value, the slot's grid time as
SourceTimestamp (both nodes stamp a slot alike), and a StatusCode for a tag in error. In a
pair, ServerRedundancy says Hot with both server URIs, and ServiceLevel follows the node's
HA state (north/service_level.py), so an OPC UA client fails over by itself.

Read-only: anonymous sessions only, no user name is accepted (there are no users to grant
anything to), remote admin is off, and no variable is writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.common.connection import TransportLimits
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from tandem.api.view import OpcUaServerInfo
from tandem.config.hub import (
    AnyDevice,
    OpcUaDevice,
    OpcUaServerConfig,
    OpcUaTagType,
    TandemConfig,
)
from tandem.hub.model import Sample, Value
from tandem.hub.opcua_values import VARIANT_OF, error_status, modbus_tag_type, north_variant
from tandem.north.service_level import (
    NO_DATA,
    DataState,
    GroupData,
    LevelReason,
    NodeState,
    data_state,
    level_to_show,
    service_level,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024  # bytes of one request or response
MAX_CONNECTIONS = 100
LEVEL_PERIOD_S = 0.05  # data freshness is re-judged this often; role changes wake it at once
POLICY_OF: dict[str, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256-Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256-SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
# A variable is made with a value of its type; it shows BadWaitingForInitialData until polled.
_ZERO: dict[str, Value] = {
    **dict.fromkeys(VARIANT_OF, 0),
    "bool": False,
    "float32": 0.0,
    "float64": 0.0,
    "string": "",
}
HAS_PROPERTY = ObjectIds.HasProperty
HAS_TYPE_DEFINITION = ObjectIds.HasTypeDefinition


def _standard(identifier: int) -> ua.NodeId:
    """A node of namespace 0 by its numeric id (Part 6, Annex A: NodeIds.csv)."""
    return ua.NodeId(ua.Int32(identifier))


def _refuse_registration(*_: Any) -> None:
    log.warning("OPC UA RegisterServer from a client refused")
    raise ServiceError(StatusCodes.BadServiceUnsupported)


class AnonymousOnly:
    """asyncua's user manager: an anonymous reader, nobody else (no name gets a role)."""

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, **_: Any
    ) -> User | None:
        if username is not None or password is not None:
            return None
        return User(role=UserRole.User)


@dataclass(slots=True)
class _GroupNodes:
    """The variables of one group, and how far the server has shown it."""

    interval: float
    phase: float  # the slot's poll is due at slot * interval + phase, on both nodes
    timeout: float
    tags: list[tuple[str, ua.NodeId, OpcUaTagType]]
    shown_slot: int | None = None
    latest_slot: int | None = None
    has_errors: bool = False


def tag_types(device: AnyDevice) -> dict[str, list[tuple[str, OpcUaTagType]]]:
    """Each group's tags with the Tandem type of their values."""
    if isinstance(device, OpcUaDevice):
        return {g.name: [(t.name, t.type) for t in g.tags] for g in device.groups}
    return {g.name: [(t.name, modbus_tag_type(t)) for t in g.tags] for g in device.groups}


def phase_of(device: AnyDevice, group: str) -> float:
    """When in its interval a group polls (Modbus groups may be phased; OPC UA ones are not)."""
    if isinstance(device, OpcUaDevice):
        return 0.0
    config = next((g for g in device.groups if g.name == group), None)
    return config.phase_seconds(device.name) if config is not None else 0.0


@dataclass(slots=True)
class _Level:
    shown: int = NO_DATA
    reason: LevelReason = LevelReason.NOT_READY
    rise_since: float | None = None
    changes: int = 0


class OpcUaNorth:
    """The OPC UA server of one node, fed by the hub's `on_sample` and `on_gate` hooks."""

    def __init__(
        self,
        config_of: Callable[[], TandemConfig],
        node_state: Callable[[], NodeState],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config_of = config_of
        self._node_state = node_state
        self._clock = clock
        cfg = config_of()
        assert cfg.opcua_server is not None
        self.settings: OpcUaServerConfig = cfg.opcua_server
        self.uri = self.settings.uri(cfg.node)
        self.server = Server(user_manager=AnonymousOnly())  # type: ignore[arg-type]
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: dict[tuple[str, str], Sample] = {}
        self._groups: dict[tuple[str, str], _GroupNodes] = {}
        self._folders: dict[str, Node] = {}
        self._namespace = 0
        self._level = _Level()

    # --- the hub's hooks (synchronous, cheap) --------------------------------------------------

    def on_sample(self, sample: Sample) -> None:
        """A stored sample: the newest per group is shown at the next loop step."""
        key = (sample.node, sample.group)
        queued = self._pending.get(key)
        if queued is None or sample.slot > queued.slot:
            self._pending[key] = sample
            self._wake.set()

    def wake(self) -> None:
        """The role gate changed: re-judge the ServiceLevel now."""
        self._wake.set()

    @property
    def service_level(self) -> int:
        return self._level.shown

    @property
    def level_reason(self) -> LevelReason:
        return self._level.reason

    def info(self) -> OpcUaServerInfo:
        return OpcUaServerInfo(
            endpoint=self.endpoint, service_level=self._level.shown, reason=self._level.reason
        )

    @property
    def port(self) -> int:
        bserver = self.server.bserver
        return int(bserver.port) if bserver is not None else self.settings.port

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.settings.host}:{self.port}/"

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled; on the way out ServiceLevel 0 (maintenance), then stop."""
        await self._start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), LEVEL_PERIOD_S)
                self._wake.clear()
                await self._show_samples()
                await self._judge_level()
        finally:
            try:
                await self._write_level(0, LevelReason.MAINTENANCE)
            finally:
                await self.server.stop()

    async def _start(self) -> None:
        cfg = self._config_of()
        server, settings = self.server, self.settings
        await server.init()
        server.set_endpoint(f"opc.tcp://{settings.host}:{settings.port}/")
        server.set_server_name(f"Tandem {cfg.node}")
        server.product_uri = "urn:tandem"
        await server.set_application_uri(self.uri)
        server.allow_remote_admin(False)
        # A read-only tag server needs small requests and few clients: bound what one costs.
        server.limits = TransportLimits(
            max_recv_buffer=65535,
            max_send_buffer=65535,
            max_chunk_count=MAX_MESSAGE // 65535 + 1,
            max_message_size=MAX_MESSAGE,
        )
        server.iserver.max_connections = MAX_CONNECTIONS
        server.iserver.max_subscriptions = MAX_CONNECTIONS * 4
        server.set_security_policy([POLICY_OF[s] for s in settings.security])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        if settings.certificate is not None and settings.private_key is not None:
            await server.load_certificate(str(settings.certificate))
            await server.load_private_key(str(settings.private_key))
        if settings.trusted_clients is not None:
            store = TrustStore([settings.trusted_clients], [])
            await store.load()
            server.set_certificate_validator(
                CertificateValidator(
                    CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.TRUSTED,
                    store,
                )
            )
        cluster = cfg.ha.cluster if cfg.ha is not None else cfg.node
        self._namespace = await server.register_namespace(f"urn:tandem:{cluster}")
        await self._redundancy(cfg)
        for device in cfg.devices:
            for group in device.groups:
                await self._group_nodes((device.name, group.name))
        # Judged before the first client can connect: it must not read the placeholder level.
        await self._judge_level()
        await server.start()
        log.info("OPC UA server %s on %s (read-only)", self.uri, self.endpoint)
        self.ready.set()

    async def _redundancy(self, cfg: TandemConfig) -> None:
        """ServerRedundancy as a non-transparent Hot set (Part 5, 6.3.9), ServiceLevel 1."""
        server = self.server
        paired = cfg.ha is not None and self.settings.peer_uri is not None
        uris = [self.uri, self.settings.peer_uri] if paired else [self.uri]
        support = ua.RedundancySupport.Hot if paired else ua.RedundancySupport.None_
        redundancy = server.get_node(_standard(ObjectIds.Server_ServerRedundancy))
        uri_array = server.get_node(_standard(ObjectIds.Server_ServerRedundancy_ServerUriArray))
        await server.get_node(
            _standard(ObjectIds.Server_ServerRedundancy_RedundancySupport)
        ).write_value(ua.Variant(support, ua.VariantType.Int32))
        await uri_array.write_value(ua.Variant(uris, ua.VariantType.String))
        if paired:
            # asyncua ships ServerRedundancyType; a non-transparent set is its subtype, whose
            # mandatory ServerUriArray must be reachable by browsing.
            await redundancy.delete_reference(
                _standard(ObjectIds.ServerRedundancyType), HAS_TYPE_DEFINITION
            )
            await redundancy.add_reference(
                _standard(ObjectIds.NonTransparentRedundancyType), HAS_TYPE_DEFINITION
            )
            await redundancy.add_reference(uri_array, HAS_PROPERTY, bidirectional=True)
        await self._write_level(NO_DATA, LevelReason.NOT_READY)
        self._discovery(paired)

    def _discovery(self, paired: bool) -> None:
        """FindServers lists the peer (from the config), and nothing a client registers.

        asyncua answers RegisterServer without a session or credential; a registered server
        would be offered to every client discovering the redundant set, so it is refused.
        """
        iserver = self.server.iserver
        if paired and self.settings.peer_endpoint is not None:
            peer = ua.RegisteredServer()
            peer.ServerUri = self.settings.peer_uri
            peer.ProductUri = "urn:tandem"
            peer.ServerNames = [ua.LocalizedText(self.settings.peer_uri)]
            peer.ServerType = ua.ApplicationType.Server
            peer.DiscoveryUrls = [self.settings.peer_endpoint]
            peer.IsOnline = True
            iserver.register_server(peer)
        # The instance's own attributes: the uaprocessor calls these for every request.
        setattr(iserver, "register_server", _refuse_registration)  # noqa: B010
        setattr(iserver, "register_server2", _refuse_registration)  # noqa: B010

    async def _folder(self, parent: Node, path: str, name: str) -> Node:
        folder = self._folders.get(path)
        if folder is None:
            node_id = ua.NodeId(ua.String(path), ua.Int16(self._namespace))
            folder = await parent.add_folder(node_id, ua.QualifiedName(name, self._namespace))
            self._folders[path] = folder
        return folder

    async def _group_nodes(self, key: tuple[str, str]) -> _GroupNodes | None:
        """The group's variables, made the first time it is seen (a reconfigure adds some)."""
        known = self._groups.get(key)
        if known is not None:
            return known
        device = next((d for d in self._config_of().devices if d.name == key[0]), None)
        tags = tag_types(device).get(key[1]) if device is not None else None
        if device is None or tags is None:
            return None
        group_config = next(g for g in device.groups if g.name == key[1])
        device_folder = await self._folder(self.server.nodes.objects, key[0], key[0])
        folder = await self._folder(device_folder, f"{key[0]}/{key[1]}", key[1])
        nodes = _GroupNodes(group_config.interval, phase_of(device, key[1]), device.timeout, [])
        waiting = ua.DataValue(
            StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.BadWaitingForInitialData))
        )
        for tag, kind in tags:
            node_id = ua.NodeId(ua.String(f"{key[0]}/{key[1]}/{tag}"), ua.Int16(self._namespace))
            variable = await folder.add_variable(
                node_id, ua.QualifiedName(tag, self._namespace), _ZERO[kind], VARIANT_OF[kind]
            )
            await self.server.write_attribute_value(variable.nodeid, waiting)
            nodes.tags.append((tag, variable.nodeid, kind))
        self._groups[key] = nodes
        return nodes

    # --- values --------------------------------------------------------------------------------

    async def _show_samples(self) -> None:
        pending, self._pending = self._pending, {}
        for key, sample in pending.items():
            nodes = await self._group_nodes(key)
            if nodes is None or (nodes.shown_slot is not None and sample.slot <= nodes.shown_slot):
                continue  # never back in time
            nodes.shown_slot = nodes.latest_slot = sample.slot
            nodes.has_errors = bool(sample.errors)
            await self._show(nodes, sample)

    async def _show(self, nodes: _GroupNodes, sample: Sample) -> None:
        due = sample.slot * nodes.interval + nodes.phase
        stamp = cast(ua.DateTime, datetime.fromtimestamp(due, UTC))
        now = cast(ua.DateTime, datetime.now(UTC))
        for tag, node_id, kind in nodes.tags:
            value: Value | None = sample.values.get(tag)
            if value is not None:
                variant = north_variant(kind, value)
                status = StatusCodes.Good if variant is not None else StatusCodes.BadTypeMismatch
            elif tag in sample.errors:
                variant, status = None, error_status(sample.errors[tag])
            else:
                continue
            data = ua.DataValue(
                variant,
                StatusCode=ua.StatusCode(ua.UInt32(status)),
                SourceTimestamp=stamp,
                ServerTimestamp=now,
            )
            await self.server.write_attribute_value(node_id, data)

    # --- ServiceLevel --------------------------------------------------------------------------

    def _data(self, now: float) -> DataState:
        groups = []
        for device in self._config_of().devices:
            for group in device.groups:
                nodes = self._groups.get((device.name, group.name))
                latest = nodes.latest_slot if nodes is not None else None
                has_errors = nodes.has_errors if nodes is not None else False
                groups.append(
                    GroupData(
                        group.interval,
                        device.timeout,
                        latest,
                        has_errors,
                        phase_of(device, group.name),
                    )
                )
        return data_state(groups, now)

    async def _judge_level(self) -> None:
        data = self._data(self._clock())
        target, reason = service_level(self._node_state(), data)
        level = self._level
        now = time.monotonic()
        if target > level.shown:
            level.rise_since = level.rise_since or now
        else:
            level.rise_since = None
        pending = now - level.rise_since if level.rise_since is not None else 0.0
        shown = level_to_show(level.shown, target, data.caught_up, pending)
        if shown != level.shown or (shown == target and reason != level.reason):
            await self._write_level(shown, reason if shown == target else level.reason)

    async def _write_level(self, level: int, reason: LevelReason) -> None:
        state = self._level
        if level != state.shown:
            log.info("OPC UA ServiceLevel %s -> %s: %s", state.shown, level, reason.value)
            state.changes += 1
        state.shown, state.reason, state.rise_since = level, reason, None
        node = self.server.get_node(_standard(ObjectIds.Server_ServiceLevel))
        await node.write_value(ua.Variant(level, ua.VariantType.Byte))
