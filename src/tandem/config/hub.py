"""The native YAML config of the hub: pydantic models, cross-field checks and a located loader."""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tandem.config.yamlload import FieldPath, LocatedDocument, YamlSyntaxError, load_located
from tandem.errors import ConfigError, ConfigProblem, TandemError

log = logging.getLogger(__name__)

Area = Literal["holding", "input", "coil", "discrete"]
TagType = Literal[
    "int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit", "string"
]
Order = Literal["big", "little"]

BIT_AREAS: frozenset[str] = frozenset({"coil", "discrete"})
REGISTER_AREAS: frozenset[str] = frozenset({"holding", "input"})
# Registers each fixed-width type occupies; strings take their configured length.
TYPE_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
    "bool": 1,
    "bit": 1,
}
TOPIC_VARIABLES: frozenset[str] = frozenset({"node", "group", "source_node"})
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
    scale: float = 1.0
    offset: float = 0.0

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


class GroupConfig(_Model):
    """Tags polled together on one interval; one Sample per poll."""

    name: str = Field(pattern=NAME_PATTERN)
    interval: float = Field(default=1.0, ge=0.01, description="seconds between polls")
    tags: list[TagConfig] = Field(min_length=1)


class DeviceConfig(_Model):
    """One Modbus TCP device (Neuron's southbound node) and its groups."""

    name: str = Field(pattern=NAME_PATTERN)
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)
    timeout: float = Field(default=1.0, gt=0)
    reconnect_min: float = Field(default=0.1, gt=0)
    reconnect_max: float = Field(default=5.0, gt=0)
    groups: list[GroupConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_backoff(self) -> DeviceConfig:
        if self.reconnect_max < self.reconnect_min:
            raise _field_error("reconnect_max", "reconnect_max must be >= reconnect_min")
        return self


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


def cross_field_problems(data: Any) -> list[tuple[FieldPath, str]]:
    """Checks that span several fields: unique names and non-overlapping registers."""
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
    return found


# --- loading ------------------------------------------------------------------------------------


Locate = Callable[[FieldPath, str], ConfigProblem]


def _pydantic_problems(locate: Locate, exc: ValidationError) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for err in exc.errors(include_url=False):
        loc: FieldPath = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "tag_field":
            loc = (*loc, ctx["field"])
        message = err["msg"]
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
