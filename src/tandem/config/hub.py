"""The native YAML config of the hub: pydantic models, cross-field checks and a located loader."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import string
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tandem.config.yamlload import FieldPath, LocatedDocument, YamlSyntaxError, load_located
from tandem.errors import ConfigError, ConfigProblem, TandemError

log = logging.getLogger(__name__)

Area = Literal["holding", "input", "coil", "discrete"]
TagType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
    "bit",
    "string",
]
Order = Literal["big", "little"]
StringBytes = Literal["both", "low", "high"]
Access = Literal["read", "write", "read_write"]

BIT_AREAS: frozenset[str] = frozenset({"coil", "discrete"})
# Tables a Modbus client can only read (Modbus Application Protocol v1.1b3, 4.3).
READ_ONLY_AREAS: frozenset[str] = frozenset({"input", "discrete"})
WIDE_TYPES: frozenset[str] = frozenset({"int64", "uint64", "float64"})
FLOAT_TYPES: frozenset[str] = frozenset({"float32", "float64"})
NUMBER_TYPES: frozenset[str] = frozenset(
    {"int16", "uint16", "int32", "uint32", "int64", "uint64", *FLOAT_TYPES}
)
# Decimal places a double can carry meaningfully (17 significant digits).
MAX_PRECISION = 17
REGISTER_AREAS: frozenset[str] = frozenset({"holding", "input"})
# Registers each fixed-width type occupies; strings take their configured length.
TYPE_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bool": 1,
    "bit": 1,
}
TOPIC_VARIABLES: frozenset[str] = frozenset({"node", "group", "source_node"})
# A spread group starts in the first 90 % of its interval: the rest leaves room for its read.
PHASE_SPREAD = 0.9
# Names end up in MQTT topics and file paths: no wildcards, separators or spaces.
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MIN_SECRET = 8


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A model-level error that still names the offending field.

    The loader appends ``field`` to the error location so the problem points at the exact key.
    """
    return PydanticCustomError("tag_field", "{message}", {"field": field, "message": message})


class TagConfig(_Model):
    """One value read from a device: where it lives and how its registers become a value."""

    name: str = Field(min_length=1)
    area: Area = "holding"
    address: int = Field(ge=0, le=65535)
    type: TagType = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int | None = Field(default=None, ge=1, le=125)
    word_order: Order = "big"
    byte_order: Order = "big"
    dword_order: Order | None = Field(
        default=None,
        description=(
            "64-bit types: order of the two 32-bit halves (default: word_order); word_order"
            " then orders the two words within each half"
        ),
    )
    string_bytes: StringBytes = Field(
        default="both",
        description=(
            "strings: both (two characters per register, in byte_order), low or high (one"
            " character per register, in its low or high byte)"
        ),
    )
    scale: float = 1.0
    offset: float = 0.0
    precision: int | None = Field(
        default=None,
        ge=0,
        le=MAX_PRECISION,
        description="decimal places a non-integer value is rounded to (default: not rounded)",
    )
    access: Access = Field(
        default="read",
        description=(
            "read, write or read_write: write and read_write tags take writes (REST, MQTT;"
            " docs/writes.md); coil and holding tags only"
        ),
    )

    @property
    def width(self) -> int:
        """Registers (or bits, for coil/discrete) this tag occupies from ``address``."""
        if self.type == "string":
            return self.length or 0
        return TYPE_WIDTH[self.type]

    @model_validator(mode="after")
    def _check_shape(self) -> TagConfig:
        if self.area in BIT_AREAS and self.type != "bool":
            raise _field_error("type", f"a {self.area} tag must be type bool, not {self.type}")
        if self.type == "bit" and self.bit is None:
            raise _field_error("bit", "type bit needs bit: 0..15")
        if self.type != "bit" and self.bit is not None:
            raise _field_error("bit", "bit is only valid with type bit")
        if self.type == "string" and self.length is None:
            raise _field_error("length", "type string needs length (registers)")
        if self.type != "string" and self.length is not None:
            raise _field_error("length", "length is only valid with type string")
        if self.address + self.width > 65536:
            raise _field_error("address", "the tag runs past address 65535")
        if self.scale == 0:
            raise _field_error("scale", "scale 0 would erase every value")
        return self

    @model_validator(mode="after")
    def _check_options(self) -> TagConfig:
        if self.dword_order is not None and self.type not in WIDE_TYPES:
            raise _field_error("dword_order", "dword_order is only valid with 64-bit types")
        if self.string_bytes != "both" and self.type != "string":
            raise _field_error("string_bytes", "string_bytes is only valid with type string")
        if self.string_bytes != "both" and self.byte_order != "big":
            raise _field_error("byte_order", "one character per register has no byte order")
        if self.precision is not None and self.type not in NUMBER_TYPES:
            raise _field_error("precision", "precision is only valid with number types")
        if self.access != "read" and self.area in READ_ONLY_AREAS:
            raise _field_error("access", f"the {self.area} table is read-only")
        return self


class GroupConfig(_Model):
    """Tags polled together on one interval; one Sample per poll."""

    name: str = Field(pattern=NAME_PATTERN)
    interval: float = Field(default=1.0, ge=0.01, description="seconds between polls")
    # float | str rather than a Literal member: a union's errors would name its members.
    phase: float | str = Field(
        default=0.0,
        description=(
            "seconds after each grid point the group polls; spread: a fixed offset from the"
            " device and group names, so many devices do not all poll at once"
        ),
    )
    tags: list[TagConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_phase(self) -> GroupConfig:
        if isinstance(self.phase, str):
            if self.phase != "spread":
                raise _field_error("phase", "phase is seconds after the grid point, or spread")
        elif not 0 <= self.phase < self.interval:
            raise _field_error("phase", "phase must be >= 0 and shorter than the interval")
        return self

    def phase_seconds(self, device: str) -> float:
        """Seconds after each grid point this group polls; the same on every node.

        "spread" hashes the device and group names (blake2b, not Python's salted hash) into
        the interval, so a thousand devices on one interval start their polls one after
        another instead of all at the grid point.
        """
        if isinstance(self.phase, str):
            digest = hashlib.blake2b(f"{device}/{self.name}".encode(), digest_size=8).digest()
            fraction = int.from_bytes(digest, "big") / 2**64
            return fraction * self.interval * PHASE_SPREAD
        return self.phase


# --- devices: one model per protocol, told apart by `protocol` ---------------------------------

Protocol = Literal["modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "opcua"]
PROTOCOLS: tuple[str, ...] = ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "opcua")
DEFAULT_PROTOCOL = "modbus-tcp"
DEFAULT_MODBUS_PORT = 502
PathMode = Literal["switch-on-failure", "switch-on-trigger", "primary-only", "secondary-only"]


class SerialConfig(_Model):
    """One serial line (an RS-485 bus or an RS-232 link) and how its characters are framed."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    # Modbus over Serial Line v1.02, 2.5.1: 19200 is the required default, 9600 also required;
    # even parity is the default parity.
    baudrate: int = Field(default=19200, ge=300, le=4_000_000, description="bits per second")
    parity: Literal["N", "E", "O"] = Field(default="E", description="none, even or odd")
    stopbits: Literal[1, 2] = Field(default=1, description="stop bits per character")
    bytesize: Literal[7, 8] = Field(default=8, description="data bits; RTU needs 8")

    @model_validator(mode="after")
    def _check_rtu(self) -> SerialConfig:
        if self.bytesize != 8:
            raise _field_error("bytesize", "Modbus RTU frames carry 8 data bits (7 is ASCII)")
        return self

    @property
    def char_bits(self) -> int:
        """Bits on the wire per character: start, data, parity (if any), stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def label(self) -> str:
        return self.port


class TcpEndpoint(_Model):
    """A TCP endpoint: a Modbus TCP device or a serial-to-TCP gateway."""

    host: str = Field(min_length=1, description="address of the device or gateway")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


Endpoint = TcpEndpoint | SerialConfig


class HeartbeatTrigger(_Model):
    """A tag that must keep changing; unchanged for too long means the path is stale."""

    tag: str = Field(min_length=1, description="name of a tag of this device")
    unchanged_for: float = Field(gt=0, description="seconds the value may stay the same")


class RedundancyConfig(_Model):
    """How a device with several paths picks the one it polls through (Kepware's MLR modes).

    switch-on-failure: the next path when the active one fails (no connection, no answer),
    back to the primary as soon as it answers again. switch-on-trigger: the secondary while
    the trigger holds on the primary (bad quality for ``bad_polls`` polls, or ``heartbeat``
    unchanged), the primary again once it clears. primary-only and secondary-only pin one
    path, for maintenance of the other.
    """

    mode: PathMode = Field(default="switch-on-failure", description="how the active path is chosen")
    bad_polls: int | None = Field(
        default=None, ge=1, description="switch-on-trigger: polls in a row with bad quality"
    )
    heartbeat: HeartbeatTrigger | None = Field(
        default=None, description="switch-on-trigger: a tag that must keep changing"
    )
    probe_interval: float = Field(
        default=1.0, gt=0, description="seconds between health reads of the paths not in use"
    )

    @model_validator(mode="after")
    def _check_trigger(self) -> RedundancyConfig:
        has_trigger = self.bad_polls is not None or self.heartbeat is not None
        if self.mode == "switch-on-trigger" and not has_trigger:
            raise _field_error("mode", "switch-on-trigger needs bad_polls or heartbeat")
        if self.mode != "switch-on-trigger" and has_trigger:
            field = "bad_polls" if self.bad_polls is not None else "heartbeat"
            raise _field_error(field, f"{field} is only used with mode switch-on-trigger")
        return self


class _DeviceBase(_Model):
    """What every southbound device has, whatever its protocol: a name and groups."""

    protocol: str = Field(default=DEFAULT_PROTOCOL, description="southbound protocol")
    name: str = Field(pattern=NAME_PATTERN, description="device name, unique; used in topics")
    groups: list[GroupConfig] = Field(min_length=1, description="tags polled together")


class _ModbusDevice(_DeviceBase):
    unit: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout: float = Field(default=1.0, gt=0, description="seconds to wait for a response")
    reconnect_min: float = Field(default=0.1, gt=0, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=5.0, gt=0, description="longest reconnect delay, seconds")
    redundancy: RedundancyConfig | None = Field(
        default=None, description="how the active path is chosen; needs paths"
    )

    @model_validator(mode="after")
    def _check_modbus(self) -> _ModbusDevice:
        if self.reconnect_max < self.reconnect_min:
            raise _field_error("reconnect_max", "reconnect_max must be >= reconnect_min")
        if self.redundancy is not None and len(self.endpoints()) < 2:
            raise _field_error("redundancy", "redundancy needs two or more paths")
        return self

    @property
    def framing(self) -> Literal["mbap", "rtu"]:
        """MBAP header (Modbus TCP) or address + CRC (RTU), whatever carries the bytes."""
        return "rtu"

    def endpoints(self) -> list[Endpoint]:
        """Where the device can be reached, the primary path first."""
        raise NotImplementedError

    @property
    def path_mode(self) -> PathMode:
        return self.redundancy.mode if self.redundancy is not None else "primary-only"


class _TcpDevice(_ModbusDevice):
    host: str | None = Field(default=None, min_length=1, description="device or gateway address")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")
    paths: list[TcpEndpoint] | None = Field(
        default=None,
        min_length=2,
        description="redundant endpoints, primary first (instead of host)",
    )

    @model_validator(mode="after")
    def _check_endpoint(self) -> _TcpDevice:
        if self.paths is None and self.host is None:
            raise _field_error("host", "required field is missing (or give paths)")
        if self.paths is not None and self.host is not None:
            raise _field_error("paths", "set host (one path) or paths (several), not both")
        # A dumped config carries port 502 whatever the paths (HA hands configs on as JSON),
        # so only a port someone actually chose is a mistake here.
        if self.paths is not None and self.port != DEFAULT_MODBUS_PORT:
            raise _field_error("port", "with paths, each path has its own port")
        return self

    def endpoints(self) -> list[Endpoint]:
        if self.paths is not None:
            return list(self.paths)
        return [] if self.host is None else [TcpEndpoint(host=self.host, port=self.port)]


class ModbusTcpDevice(_TcpDevice):
    """A Modbus TCP device (Neuron's modbus-tcp node); devices at one host:port share its link."""

    protocol: Literal["modbus-tcp"] = Field(default="modbus-tcp", description="southbound protocol")

    @property
    def framing(self) -> Literal["mbap", "rtu"]:
        return "mbap"


class ModbusRtuOverTcpDevice(_TcpDevice):
    """A Modbus RTU device behind a serial-to-TCP gateway: RTU frames on a TCP socket."""

    protocol: Literal["modbus-rtu-over-tcp"] = Field(description="southbound protocol")
    unit: int = Field(default=1, ge=1, le=247, description="Modbus unit (slave) address")


class ModbusRtuDevice(_ModbusDevice):
    """A Modbus RTU device on a serial line; devices naming one port share that bus."""

    protocol: Literal["modbus-rtu"] = Field(description="southbound protocol")
    # Modbus over Serial Line v1.02, 2.2: 0 is broadcast (never answered), 248-255 reserved.
    unit: int = Field(default=1, ge=1, le=247, description="Modbus unit (slave) address")
    serial: SerialConfig | None = Field(default=None, description="the serial line")
    paths: list[SerialConfig] | None = Field(
        default=None, min_length=2, description="redundant serial lines, primary first"
    )

    @model_validator(mode="after")
    def _check_endpoint(self) -> ModbusRtuDevice:
        if self.paths is None and self.serial is None:
            raise _field_error("serial", "required field is missing (or give paths)")
        if self.paths is not None and self.serial is not None:
            raise _field_error("paths", "set serial (one line) or paths (several), not both")
        return self

    def endpoints(self) -> list[Endpoint]:
        if self.paths is not None:
            return list(self.paths)
        return [] if self.serial is None else [self.serial]


# --- OPC UA devices --------------------------------------------------------------------------

OpcUaTagType = Literal[
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
# OPC UA Part 6, 5.3.1.10: the string forms of a NodeId (ns=<index>; or nsu=<uri>; then i=, s=,
# g= or b=). Checked here without the OPC UA library, so loading a config stays light.
NODE_ID_PATTERN = (
    r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{12}|b=[A-Za-z0-9+/]+={0,2})$"
)
OpcUaPolicy = Literal["None", "Basic256Sha256"]
OpcUaMode = Literal["None", "Sign", "SignAndEncrypt"]


class OpcUaTagConfig(_Model):
    """One OPC UA variable read into a tag: its NodeId and the Tandem type it must have."""

    name: str = Field(min_length=1, description="tag name, unique within the group")
    node_id: str = Field(description="the variable's NodeId, e.g. ns=2;s=Line1.Temp")
    type: OpcUaTagType = Field(
        description="Tandem type; a value of another OPC UA type is a per-tag error (1005)"
    )
    max_length: int = Field(
        default=1024, ge=1, le=65535, description="longest string accepted, in characters"
    )

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, node_id: str) -> str:
        if re.fullmatch(NODE_ID_PATTERN, node_id) is None:
            raise ValueError(
                f"{node_id!r} is not a NodeId: write ns=<index>;s=<name>, ns=<index>;i=<number>, "
                "g=<guid> or b=<base64>"
            )
        return node_id

    @model_validator(mode="after")
    def _check_length(self) -> OpcUaTagConfig:
        if self.type != "string" and "max_length" in self.model_fields_set:
            raise _field_error("max_length", "max_length is only valid with type string")
        return self


class OpcUaGroupConfig(_Model):
    """OPC UA variables polled together: one Read per slot, one Sample per slot."""

    name: str = Field(pattern=NAME_PATTERN, description="group name, unique within the device")
    interval: float = Field(default=1.0, ge=0.01, description="seconds between polls")
    mode: Literal["read", "subscription"] = Field(
        default="read",
        description="read: one Read per slot (slot-exact); subscription: the server reports "
        "changes and each slot takes the latest (not slot-exact)",
    )
    tags: list[OpcUaTagConfig] = Field(min_length=1, description="the variables of this group")


class OpcUaSecurity(_Model):
    """How the secure channel to an OPC UA server is protected, and whom it trusts."""

    policy: OpcUaPolicy = Field(default="None", description="security policy")
    mode: OpcUaMode = Field(default="None", description="message security mode")
    certificate: Path | None = Field(
        default=None, description="this client's certificate (DER/PEM)"
    )
    private_key: Path | None = Field(default=None, description="this client's private key (PEM)")
    server_certificate: Path | None = Field(
        default=None,
        description="the server's certificate: only a server holding its key is accepted",
    )

    @model_validator(mode="after")
    def _check_policy(self) -> OpcUaSecurity:
        if self.policy == "None":
            if self.mode != "None":
                raise _field_error("mode", "security policy None needs mode None")
            for name in ("certificate", "private_key", "server_certificate"):
                if getattr(self, name) is not None:
                    raise _field_error(name, f"{name} is only used with a security policy")
            return self
        if self.mode == "None":
            raise _field_error("mode", f"policy {self.policy} needs mode Sign or SignAndEncrypt")
        for name in ("certificate", "private_key", "server_certificate"):
            if getattr(self, name) is None:
                raise _field_error(name, f"policy {self.policy} needs {name}")
        return self


class OpcUaDevice(_Model):
    """An OPC UA server polled as a device (Kepware, Ignition, a PLC's own server)."""

    protocol: Literal["opcua"] = Field(description="southbound protocol")
    name: str = Field(pattern=NAME_PATTERN, description="device name, unique; used in topics")
    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^\s@/]+(?::\d{1,5})?(?:/\S*)?$",
        description="the server's endpoint URL, opc.tcp://host:port/path (no credentials)",
    )
    security: OpcUaSecurity = Field(
        default_factory=OpcUaSecurity, description="secure channel settings"
    )
    application_uri: str | None = Field(
        default=None, description="this client's application URI (default: from its certificate)"
    )
    username: str | None = Field(default=None, min_length=1, description="user name token")
    password_file: Path | None = Field(default=None, description="file holding the password")
    password_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="variable with the password"
    )
    accept_uncertain: bool = Field(
        default=False, description="take Uncertain values as values (else a per-tag error)"
    )
    timeout: float = Field(default=2.0, gt=0, description="seconds to wait for a response")
    reconnect_min: float = Field(default=0.5, gt=0, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=10.0, gt=0, description="longest reconnect delay, seconds")
    max_message_size: int = Field(
        default=16 * 1024 * 1024, ge=65536, description="largest response asked for, bytes"
    )
    groups: list[OpcUaGroupConfig] = Field(min_length=1, description="tags polled together")

    @model_validator(mode="after")
    def _check_credentials(self) -> OpcUaDevice:
        if self.reconnect_max < self.reconnect_min:
            raise _field_error("reconnect_max", "reconnect_max must be >= reconnect_min")
        sources = [n for n in ("password_file", "password_env") if getattr(self, n) is not None]
        if self.username is None and sources:
            raise _field_error(sources[0], f"{sources[0]} needs username")
        if self.username is not None and len(sources) != 1:
            raise _field_error(
                "username",
                "username needs exactly one of password_file and "
                "password_env (a password never goes in the config or argv)",
            )
        return self


def _protocol_of(value: Any) -> str:
    """The union tag of a device: its protocol, modbus-tcp when left out (older configs)."""
    if isinstance(value, dict):
        protocol = value.get("protocol", DEFAULT_PROTOCOL)
        return protocol if isinstance(protocol, str) else repr(protocol)
    return str(getattr(value, "protocol", DEFAULT_PROTOCOL))


DeviceConfig = Annotated[
    Annotated[ModbusTcpDevice, Tag("modbus-tcp")]
    | Annotated[ModbusRtuDevice, Tag("modbus-rtu")]
    | Annotated[ModbusRtuOverTcpDevice, Tag("modbus-rtu-over-tcp")]
    | Annotated[OpcUaDevice, Tag("opcua")],
    Discriminator(
        _protocol_of,
        custom_error_type="unknown_protocol",
        custom_error_message=f"unknown protocol; use one of {', '.join(PROTOCOLS)}",
    ),
]
"""One southbound device; `protocol` picks the model (a new protocol is one more member)."""

ModbusDevice = ModbusTcpDevice | ModbusRtuDevice | ModbusRtuOverTcpDevice
AnyDevice = ModbusDevice | OpcUaDevice
DEVICE_ADAPTER: TypeAdapter[AnyDevice] = TypeAdapter(DeviceConfig)


def parse_device(data: Any) -> AnyDevice:
    """Validate one device mapping (tests, tools); raises pydantic's ValidationError."""
    return DEVICE_ADAPTER.validate_python(data)


class ApiTlsConfig(_Model):
    """HTTPS for the API, the dashboard and the peer link (PEM files)."""

    cert_file: Path = Field(description="this node's certificate (chain), PEM")
    key_file: Path = Field(description="its private key, PEM; keep it mode 0600")
    client_ca_file: Path | None = Field(
        default=None,
        description="require every client (browsers too) to show a certificate from this CA",
    )


class ApiConfig(_Model):
    """The HTTP API and dashboard: where it listens, and how it refuses what it should."""

    host: str = "0.0.0.0"
    port: int = Field(default=8085, ge=0, le=65535)
    tls: ApiTlsConfig | None = Field(
        default=None, description="serve API, dashboard and peer link over HTTPS"
    )
    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host header values accepted (names or addresses, no port; '*' for any); "
        "default: this node's addresses and host name, its VIPs and localhost",
    )
    metrics_public: bool = Field(
        default=False, description="serve /metrics without a credential (a local Prometheus)"
    )
    session_idle_timeout: float = Field(
        default=900.0, gt=0, description="seconds without a request before a login ends"
    )
    session_lifetime: float = Field(
        default=43200.0, gt=0, description="seconds after which a login ends regardless"
    )
    max_body_bytes: int = Field(
        default=16384, ge=1024, description="largest request body, except config uploads"
    )
    max_config_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest PUT /api/v1/config body"
    )
    max_streams: int = Field(
        default=64, ge=1, description="open event streams (SSE) at once; 503 beyond"
    )
    max_streams_per_principal: int = Field(
        default=8, ge=1, description="open event streams per user, token or peer; 503 beyond"
    )
    loop_share: float | None = Field(
        default=0.3,
        gt=0,
        le=1,
        description="the most of the hub's event loop API requests may take while polling "
        "needs it (seconds per second); beyond it they wait in line; null: no bound",
    )
    max_waiting_requests: int = Field(
        default=256, ge=1, description="requests waiting for their share of the loop; 503 beyond"
    )

    @model_validator(mode="after")
    def _check_session(self) -> ApiConfig:
        if self.session_lifetime < self.session_idle_timeout:
            raise _field_error(
                "session_lifetime", "session_lifetime must be >= session_idle_timeout"
            )
        return self


class TlsConfig(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = "/neuron/{node}"
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    inflight: int = Field(default=20, ge=1)
    keepalive: int = Field(default=10, ge=1)
    write_request_topic: str = Field(
        default="/neuron/{cluster}/write/req",
        description=(
            "where write requests arrive (Neuron's format); {cluster} is ha.cluster, or the"
            " node name of a single node"
        ),
    )
    write_response_topic: str = Field(
        default="/neuron/{cluster}/write/resp", description="where write requests are answered"
    )
    read_request_topic: str = Field(
        default="/neuron/{cluster}/read/req", description="where read requests arrive"
    )
    read_response_topic: str = Field(
        default="/neuron/{cluster}/read/resp", description="where read requests are answered"
    )
    request_max_bytes: int = Field(
        default=65536,
        ge=256,
        le=16 * 1024 * 1024,
        description="larger read/write requests are dropped (and counted) unparsed",
    )

    @field_validator(
        "write_request_topic", "write_response_topic", "read_request_topic", "read_response_topic"
    )
    @classmethod
    def _check_request_topic(cls, topic: str) -> str:
        if not topic or "+" in topic or "#" in topic:
            raise ValueError("a request topic must be non-empty and contain no wildcards")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad topic template: {exc}") from exc
        if names - {"cluster"}:
            raise ValueError(
                f"unknown topic variable(s) {sorted(names - {'cluster'})}; use cluster"
            )
        return topic

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        if not topic or "+" in topic or "#" in topic:
            raise ValueError("a publish topic must be non-empty and contain no wildcards")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad topic template: {exc}") from exc
        unknown = names - TOPIC_VARIABLES
        if unknown:
            raise ValueError(
                f"unknown topic variable(s) {sorted(unknown)}; use {sorted(TOPIC_VARIABLES)}"
            )
        return topic


class OutboxConfig(_Model):
    """The on-disk buffer between poller and publisher (SQLite, WAL)."""

    max_rows: int = Field(default=1_000_000, ge=1)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "normal: a committed sample survives a crash or kill of the process, the last"
            " commits can be lost on power loss; full: survives power loss too, at the cost of"
            " an fsync per commit (milliseconds on SD cards and eMMC)"
        ),
    )
    retry_queue: int = Field(
        default=10_000,
        ge=1,
        description=(
            "samples held in memory while the outbox cannot be written (disk full, read-only"
            " data dir); past this the oldest are dropped and counted"
        ),
    )


class VrrpSection(_Model):
    """How the two nodes elect a master: VRRP on the wire, like keepalived, or over UDP."""

    transport: Literal["raw", "udp"] = "raw"
    interface: str | None = Field(
        default=None, description="interface for raw VRRP and virtual IPs (raw transport)"
    )
    vrid: int = Field(default=51, ge=1, le=255)
    version: Literal[2, 3] = 3
    advert_interval: float = Field(
        default=0.1, ge=0.01, le=255, description="seconds; v2 needs whole seconds"
    )
    unicast_src_ip: IPv4Address | None = None
    unicast_peers: list[IPv4Address] = Field(default_factory=list)
    udp_port: int = Field(default=5112, ge=1, le=65535)
    auth_pass: str | None = Field(default=None, description="v2 PASS authentication")
    vips: list[IPv4Interface] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_transport(self) -> VrrpSection:
        if self.version == 2 and self.advert_interval != int(self.advert_interval):
            raise _field_error("advert_interval", "VRRPv2 adverts need whole seconds")
        if self.transport == "raw" and not self.interface:
            raise _field_error("interface", "the raw transport needs an interface")
        if self.transport == "udp" and self.unicast_src_ip is None:
            raise _field_error("unicast_src_ip", "the udp transport needs unicast_src_ip")
        if self.transport == "udp" and not self.unicast_peers:
            raise _field_error("unicast_peers", "the udp transport needs unicast_peers")
        return self


class HealthSection(_Model):
    """How the hub's own health lowers its VRRP priority, so the node that can work wins."""

    broker_weight: int = Field(default=30, ge=0, le=253, description="subtracted while broker down")
    devices_weight: int = Field(
        default=30, ge=0, le=253, description="subtracted while any device is unreachable"
    )
    interval: float = Field(default=0.1, gt=0, description="seconds between health evaluations")
    fail_after: float = Field(
        default=0.3, ge=0, description="seconds a broker/devices check must fail before it counts"
    )
    deadline: float = Field(
        default=1.0,
        gt=0,
        description="seconds without a health report from the hub process before it counts as "
        "hung (the node goes FAULT and the peer takes over)",
    )


class HooksSection(_Model):
    """keepalived-style notify hooks, run serialized and awaited on role changes."""

    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    timeout: float = Field(default=30.0, gt=0)


class PeerTlsConfig(_Model):
    """How a node checks it talks to its real peer over https: a CA, or a pinned certificate."""

    ca_file: Path | None = Field(
        default=None, description="CA that signed the peer's certificate (hostname checked)"
    )
    fingerprint: str | None = Field(
        default=None,
        description="SHA-256 of the peer's certificate (sha256:<hex>, colons allowed)",
    )

    @field_validator("fingerprint")
    @classmethod
    def _check_fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from tandem.security.certs import normalize_fingerprint

        return normalize_fingerprint(value)

    @model_validator(mode="after")
    def _check_one(self) -> PeerTlsConfig:
        if (self.ca_file is None) == (self.fingerprint is None):
            raise _field_error("ca_file", "set exactly one of ca_file and fingerprint")
        return self


class HaConfig(_Model):
    """Two-node high availability: election, standby mode, peer link and fencing."""

    cluster: str = Field(default="tandem", pattern=NAME_PATTERN)
    priority: int = Field(default=100, ge=1, le=254)
    standby: Literal["hot", "warm", "cold"] = "hot"
    recovery: Literal["automatic", "manual"] = "automatic"
    peer_url: str = Field(
        pattern=r"^https?://", description="the peer's API, e.g. http://10.0.0.2:8085"
    )
    peer_tls: PeerTlsConfig | None = Field(
        default=None, description="how to verify the peer's certificate (https peer_url)"
    )
    secret: str | None = Field(
        default=None, min_length=8, description="cluster secret (prefer secret_file/secret_env)"
    )
    secret_file: Path | None = Field(default=None, description="file holding the secret")
    secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the secret",
    )
    require_same_config: bool = False
    vrrp: VrrpSection
    health: HealthSection = HealthSection()
    hooks: HooksSection = HooksSection()

    @model_validator(mode="after")
    def _check_secret(self) -> HaConfig:
        given = [s for s in (self.secret, self.secret_file, self.secret_env) if s is not None]
        if len(given) != 1:
            raise _field_error("secret", "set exactly one of secret, secret_file and secret_env")
        if self.peer_tls is not None and not self.peer_url.startswith("https://"):
            raise _field_error("peer_tls", "peer_tls needs an https:// peer_url")
        return self

    @property
    def peer_fresh_s(self) -> float:
        """How old a peer-link state may be and still count as the peer's current state."""
        return max(3 * self.vrrp.advert_interval, 0.5)

    def shared_secret(self) -> str:
        """The cluster secret, from wherever the config says it is.

        Raises TandemError when the file or variable is missing or holds too short a secret.
        """
        if self.secret is not None:
            return self.secret
        if self.secret_file is not None:
            try:
                value = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TandemError(
                    f"ha.secret_file {self.secret_file}: {exc.strerror or exc}"
                ) from exc
            where = f"ha.secret_file {self.secret_file}"
        else:
            assert self.secret_env is not None
            value = os.environ.get(self.secret_env, "").strip()
            where = f"ha.secret_env: ${self.secret_env}"
        if len(value) < MIN_SECRET:
            raise TandemError(f"{where}: the secret must have at least {MIN_SECRET} characters")
        return value


ServerSecurity = Literal["None", "Basic256Sha256-Sign", "Basic256Sha256-SignAndEncrypt"]


def _no_security() -> list[ServerSecurity]:
    return ["None"]


class OpcUaServerConfig(_Model):
    """This node's tags as a read-only OPC UA server; in a pair, one of a hot redundant set.

    Node-local like api: each node has its own address, URI and certificate.
    """

    host: str = Field(default="0.0.0.0", description="address the server listens on")
    port: int = Field(default=4840, ge=0, le=65535, description="TCP port (0 = any free port)")
    application_uri: str | None = Field(
        default=None, min_length=1, description="this server's URI (default urn:tandem:<node>)"
    )
    peer_uri: str | None = Field(
        default=None,
        min_length=1,
        description="the peer's server URI; required in a pair (ServerUriArray names both)",
    )
    peer_endpoint: str | None = Field(
        default=None,
        pattern=r"^opc\.tcp://[^\s@/]+(?::\d{1,5})?(?:/\S*)?$",
        description="the peer server's endpoint URL, listed by FindServers so a client that "
        "knows one node finds the other (Part 4, 6.6.2.4.5.1)",
    )
    security: list[ServerSecurity] = Field(
        default_factory=_no_security, min_length=1, description="endpoints offered"
    )
    certificate: Path | None = Field(default=None, description="server certificate (DER/PEM)")
    private_key: Path | None = Field(default=None, description="server private key (PEM)")
    trusted_clients: Path | None = Field(
        default=None,
        description="directory of client certificates accepted on secure endpoints "
        "(default: any client certificate)",
    )

    @model_validator(mode="after")
    def _check_certificate(self) -> OpcUaServerConfig:
        secure = any(s != "None" for s in self.security)
        if secure and (self.certificate is None or self.private_key is None):
            field = "certificate" if self.certificate is None else "private_key"
            raise _field_error(field, "a Basic256Sha256 endpoint needs certificate and private_key")
        if len(set(self.security)) != len(self.security):
            raise _field_error("security", "an endpoint is listed twice")
        return self

    def uri(self, node: str) -> str:
        return self.application_uri or f"urn:tandem:{node}"


class TandemConfig(_Model):
    """The whole native config of one Tandem node."""

    node: str = Field(pattern=NAME_PATTERN)
    data_dir: Path
    api: ApiConfig = ApiConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    # An empty list is allowed: a node can be brought up (API, HA) before devices are known.
    devices: list[DeviceConfig] = Field(default_factory=list)
    ha: HaConfig | None = None
    opcua_server: OpcUaServerConfig | None = Field(
        default=None, description="serve the tags over OPC UA (read-only)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_data_dir(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("data_dir") is None
            and isinstance(data.get("node"), str)
        ):
            data = {**data, "data_dir": Path(".tandem") / data["node"]}
        return data


def dump_schema() -> dict[str, Any]:
    """JSON schema of the native config, for generated reference docs and editor support."""
    return TandemConfig.model_json_schema()


# --- cross-field checks -------------------------------------------------------------------------


def _named_duplicates(
    items: Iterable[tuple[int, Any]], what: str, base: FieldPath
) -> list[tuple[FieldPath, str]]:
    seen: dict[str, int] = {}
    found: list[tuple[FieldPath, str]] = []
    for index, item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        name = item["name"]
        if name in seen:
            found.append(
                (
                    (*base, index, "name"),
                    f"duplicate {what} name {name!r} (also {base[-1]}[{seen[name]}])",
                )
            )
        else:
            seen[name] = index
    return found


def _list_of(data: Any, key: str) -> list[Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, list) else []


def _device_overlaps(device: Any, device_index: int) -> list[tuple[FieldPath, str]]:
    """Tags of one device that claim the same register (or coil) in the same area.

    Only tags that are valid on their own take part, so one broken tag does not produce a
    cascade of overlap reports. Bit tags share their register with each other but not with
    a whole-register tag.
    """
    claims: dict[tuple[str, int], tuple[FieldPath, str, int | None]] = {}
    found: list[tuple[FieldPath, str]] = []
    if isinstance(device, dict) and device.get("protocol") == "opcua":
        return found  # OPC UA tags name nodes, not registers
    for gi, group in enumerate(_list_of(device, "groups")):
        for ti, raw in enumerate(_list_of(group, "tags")):
            try:
                tag = TagConfig.model_validate(raw)
            except ValidationError:
                continue
            path: FieldPath = ("devices", device_index, "groups", gi, "tags", ti)
            label = f"groups[{gi}].tags[{ti}] ({tag.name})"
            for register in range(tag.address, tag.address + tag.width):
                key = (tag.area, register)
                previous = claims.get(key)
                if previous is None:
                    claims[key] = (path, label, tag.bit if tag.type == "bit" else None)
                    continue
                _, other_label, other_bit = previous
                if tag.type == "bit" and other_bit is not None and other_bit != tag.bit:
                    continue
                found.append(
                    (
                        (*path, "address"),
                        f"{tag.area} register {register} is already used by {other_label}",
                    )
                )
                break
    return found


def _endpoint_path(device: ModbusDevice, index: int, path_index: int) -> FieldPath:
    """Where endpoint ``path_index`` of device ``index`` is written in the file."""
    if device.paths is not None:
        return ("devices", index, "paths", path_index)
    if isinstance(device, ModbusRtuDevice):
        return ("devices", index, "serial")
    return ("devices", index, "host")


def _serial_settings(serial: SerialConfig) -> str:
    return f"{serial.baudrate} {serial.bytesize}{serial.parity}{serial.stopbits}"


def _link_problems(devices: list[Any]) -> list[tuple[FieldPath, str]]:
    """Devices that share a line must agree on it: one setting, one framing, distinct units.

    Devices naming the same serial port are one RS-485 bus; devices at the same host:port
    share one connection, so the framing must match and, on an RTU line, the unit ids differ.
    """
    found: list[tuple[FieldPath, str]] = []
    first_on: dict[tuple[str, ...], tuple[int, ModbusDevice, Endpoint]] = {}
    units: dict[tuple[tuple[str, ...], int], int] = {}
    for di, raw in enumerate(devices):
        try:
            device = parse_device(raw)
        except ValidationError:
            continue
        if isinstance(device, OpcUaDevice):
            continue  # a session per device: no shared line to agree on
        for pi, endpoint in enumerate(device.endpoints()):
            key = link_key(endpoint)
            where = _endpoint_path(device, di, pi)
            first = first_on.setdefault(key, (di, device, endpoint))
            other_i, other, other_endpoint = first
            other_label = f"devices[{other_i}] ({other.name})"
            if other_i != di and isinstance(endpoint, SerialConfig):
                assert isinstance(other_endpoint, SerialConfig)
                if other_endpoint != endpoint:
                    found.append(
                        (
                            where,
                            f"serial port {endpoint.port} runs at "
                            f"{_serial_settings(other_endpoint)} for {other_label}; "
                            "one bus has one setting",
                        )
                    )
            elif other_i != di and other.framing != device.framing:
                found.append(
                    (
                        ("devices", di, "protocol"),
                        f"{endpoint.label} is {other.protocol} for {other_label}; "
                        "one connection carries one framing",
                    )
                )
            if device.framing != "rtu":
                continue
            owner = units.setdefault((key, device.unit), di)
            if owner != di:
                found.append(
                    (
                        ("devices", di, "unit"),
                        f"unit {device.unit} on {endpoint.label} is already "
                        f"devices[{owner}] ({parse_device(devices[owner]).name})",
                    )
                )
        found += _heartbeat_problems(device, di)
    return found


def link_key(endpoint: Endpoint) -> tuple[str, ...]:
    """The identity of the line an endpoint is on: a serial port, or a TCP host and port."""
    if isinstance(endpoint, SerialConfig):
        return ("serial", endpoint.port)
    return ("tcp", endpoint.host, str(endpoint.port))


def _heartbeat_problems(device: ModbusDevice, index: int) -> list[tuple[FieldPath, str]]:
    redundancy = device.redundancy
    if redundancy is None or redundancy.heartbeat is None:
        return []
    names = {tag.name for group in device.groups for tag in group.tags}
    if redundancy.heartbeat.tag in names:
        return []
    return [
        (
            ("devices", index, "redundancy", "heartbeat", "tag"),
            f"no tag {redundancy.heartbeat.tag!r} in this device's groups",
        )
    ]


def cross_field_problems(data: Any) -> list[tuple[FieldPath, str]]:
    """Checks that span several fields: unique names, registers, shared lines and units."""
    found: list[tuple[FieldPath, str]] = []
    devices = _list_of(data, "devices")
    found += _named_duplicates(enumerate(devices), "device", ("devices",))
    for di, device in enumerate(devices):
        groups = _list_of(device, "groups")
        found += _named_duplicates(enumerate(groups), "group", ("devices", di, "groups"))
        for gi, group in enumerate(groups):
            tags = _list_of(group, "tags")
            found += _named_duplicates(
                enumerate(tags), "tag", ("devices", di, "groups", gi, "tags")
            )
        found += _device_overlaps(device, di)
    found += _link_problems(devices)
    found += _opcua_server_problems(data)
    return found


def _opcua_server_problems(data: Any) -> list[tuple[FieldPath, str]]:
    """A pair's servers form one redundant set: each must name the other (ServerUriArray)."""
    server = data.get("opcua_server") if isinstance(data, dict) else None
    if not isinstance(server, dict) or not isinstance(data.get("ha"), dict):
        return []
    if server.get("peer_uri") is None:
        return [(("opcua_server", "peer_uri"), "required in a pair: the peer's server URI")]
    if server.get("peer_uri") == server.get("application_uri", f"urn:tandem:{data.get('node')}"):
        return [(("opcua_server", "peer_uri"), "the peer's URI must differ from this server's")]
    return []


# --- loading ------------------------------------------------------------------------------------


Locate = Callable[[FieldPath, str], ConfigProblem]


def _pydantic_problems(locate: Locate, exc: ValidationError) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for err in exc.errors(include_url=False):
        # A device's union tag (its protocol) is not a key of the file: drop it from the path.
        loc: FieldPath = tuple(part for part in err["loc"] if part not in PROTOCOLS)
        ctx = err.get("ctx") or {}
        message = err["msg"]
        if err["type"] == "tag_field":
            loc = (*loc, ctx["field"])
        elif err["type"] == "unknown_protocol":
            loc = (*loc, "protocol")
            given = err["input"].get("protocol") if isinstance(err["input"], dict) else None
            message = f"unknown protocol {given!r}; use one of {', '.join(PROTOCOLS)}"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append(locate(loc, message))
    return problems


def validate_document(doc: LocatedDocument) -> TandemConfig:
    """Validate parsed YAML; raises ConfigError with every problem found, sorted by line."""
    return validate_mapping(doc.data, doc.problem)


def validate_mapping(data: Any, locate: Locate) -> TandemConfig:
    """The one validation of a whole config (a file, a PUT, a peer's shared sections).

    `locate` turns a field path into a problem naming where it is (file and line for a YAML
    file, the source and the dotted path otherwise). Raises ConfigError with every problem.
    """
    problems: list[ConfigProblem] = []
    config: TandemConfig | None = None
    if not isinstance(data, dict):
        raise ConfigError([locate((), "the top level must be a mapping")])
    try:
        config = TandemConfig.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(locate, exc)
    problems += [locate(path, message) for path, message in cross_field_problems(data)]
    if problems:
        problems.sort(key=lambda p: (p.line if p.line is not None else 0, p.field))
        raise ConfigError(problems)
    assert config is not None
    return config


def load_config_text(text: str, file: str = "<config>") -> TandemConfig:
    """Parse and validate config text; ``file`` names it in problems."""
    try:
        doc = load_located(text, file)
    except YamlSyntaxError as exc:
        raise ConfigError(exc.problems) from exc
    return validate_document(doc)


def load_config(path: Path) -> TandemConfig:
    """Load the native YAML config, raising ConfigError that lists every problem with its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read: {exc}")]) from exc
    config = load_config_text(text, str(path))
    log.debug("loaded config %s: node %s, %s device(s)", path, config.node, len(config.devices))
    return config
