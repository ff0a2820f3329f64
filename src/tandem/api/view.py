"""The contract between the hub runtime and the API: response models and the HubView protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tandem.api.tagindex import SortColumn, TagKind

if TYPE_CHECKING:
    from tandem.api.live import LiveFeed

# Roles the dashboard and the metrics know by name; the status may carry others (e.g. "INIT").
KNOWN_ROLES: tuple[str, ...] = ("MASTER", "BACKUP", "FAULT", "SINGLE", "INIT", "STOPPED")

TimelineKind = Literal["role", "device", "broker", "config", "info"]
LiveEventType = Literal["hello", "status", "timeline", "page", "rows"]
ErrorFilter = Literal["any", "error", "ok"]


class _Model(BaseModel):
    # Frozen and strict about field names, so a typo in the runtime fails loudly, not silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Health(_Model):
    """Liveness for load balancers and VRRP track scripts: ok only if every check passes."""

    ok: bool
    checks: dict[str, bool] = Field(default_factory=dict)
    # Why a failing check fails, in words, where the runtime knows more than true/false.
    reasons: dict[str, str] = Field(default_factory=dict)


class GroupInfo(_Model):
    """One poll group of one device, as the poller sees it."""

    name: str
    interval: float
    last_poll_ms: int | None = None
    last_slot: int | None = None
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    last_latency_ms: float | None = None


class PathInfo(_Model):
    """One path to a device (a TCP endpoint or a serial port) and whether it is in use."""

    endpoint: str
    connected: bool
    active: bool
    healthy: bool = True


class DeviceInfo(_Model):
    """One southbound device, its groups and the path it is polled through."""

    name: str
    connected: bool
    last_error: str | None = None
    groups: list[GroupInfo] = Field(default_factory=list)
    active_path: str | None = None
    paths: list[PathInfo] = Field(default_factory=list)
    path_switches: int = 0


class OutboxInfo(_Model):
    """The durable queue between poller and publisher, and the health of its storage."""

    depth: int = 0
    overflow_dropped: int = 0
    writable: bool = True  # false from a failed write until one succeeds
    write_errors: int = 0  # failed write transactions since start
    fault: str | None = None  # why writes fail, while they do
    retry_queue: int = 0  # samples held in memory, not committed yet
    retry_dropped: int = 0  # samples the full retry queue dropped
    recovered: int = 0  # corrupt outbox files set aside at start (0 or 1)
    recovered_to: str | None = None  # where the corrupt file went
    recovered_reason: str | None = None


class PublisherInfo(_Model):
    """The MQTT side; rates are per second over the runtime's own averaging window."""

    connected: bool = False
    published_total: int = 0
    publish_rate: float = 0.0
    values_rate: float = 0.0
    last_error: str | None = None
    reconnects: int = 0


class HaInfo(_Model):
    """The high-availability pair, as far as this node knows it; every field may be unknown."""

    peer: str | None = None
    peer_state: str | None = None
    watermark_lag: int | None = None
    last_failover: dict[str, Any] | None = None
    config_version: str | None = None
    peer_config_version: str | None = None
    switchover: str | None = None  # on the master: "ready", or why it would be refused now


class OpcUaServerInfo(_Model):
    """The node's OPC UA server: where it listens and the ServiceLevel clients see."""

    endpoint: str
    service_level: int
    reason: str


class WritesInfo(_Model):
    """Write and read requests: answers by error code, MQTT requests dropped by reason."""

    answered: dict[str, int] = Field(default_factory=dict)  # error code (as text) -> count
    drops: dict[str, int] = Field(default_factory=dict)


class Status(_Model):
    """Everything the dashboard shows at a glance; also the source of /metrics."""

    node: str
    role: str  # one of KNOWN_ROLES, or whatever else the runtime reports
    phase: str | None = None  # within the role: active, barrier, quiet, acquiring, ...
    publishing: bool = False
    term: int = 0
    standby_mode: str | None = None
    uptime_s: float = 0.0
    devices: list[DeviceInfo] = Field(default_factory=list)
    outbox: OutboxInfo = Field(default_factory=OutboxInfo)
    publisher: PublisherInfo = Field(default_factory=PublisherInfo)
    ha: HaInfo | None = None
    vrrp: dict[str, Any] | None = None
    opcua_server: OpcUaServerInfo | None = None
    writes: WritesInfo | None = None


class TagValue(_Model):
    """The latest value of one tag; `value` is None while `error` holds a tag error code."""

    device: str
    group: str
    tag: str
    value: int | float | bool | str | None = None
    error: int | None = None
    timestamp_ms: int
    slot: int


class TagRow(_Model):
    """One row of the dashboard's tag table: the tag's names, its kind and its latest state."""

    key: str  # "device/group/tag"
    device: str
    group: str
    tag: str
    kind: TagKind
    value: int | float | bool | str | None = None
    error: int | None = None
    timestamp_ms: int | None = None  # of the group's latest poll; None before the first
    slot: int | None = None


class TagQuery(BaseModel):
    """Which rows of the tag table a page asks for: filters, natural sort and a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search: str = Field("", max_length=200, description="words that must all appear in the key")
    device: str | None = Field(None, max_length=200)
    group: str | None = Field(None, max_length=200)
    error: ErrorFilter = "any"
    sort: SortColumn = SortColumn.DEVICE
    desc: bool = False
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(100, ge=1, le=500)


class LiveViewRequest(TagQuery):
    """What one open page shows: its table window and the tags on its trend."""

    seq: int = Field(0, ge=0, description="echoed in page events, so stale answers are ignored")
    trend: list[Annotated[str, Field(max_length=400)]] = Field(default_factory=list, max_length=8)


class TagPage(_Model):
    """A window of the filtered, sorted tag table, with what the filter controls offer."""

    seq: int = 0
    total: int  # rows matching the query
    catalog_total: int  # tags the node has
    offset: int
    rows: list[TagRow]
    devices: list[str]
    groups: list[str]
    default_trend: str | None = None  # the first numeric, non-boolean tag


class TagSeries(_Model):
    """Recent history of one tag from the node's buffer: parallel timestamps and values."""

    key: str
    resolution_ms: int | None = None
    t: list[int] = Field(default_factory=list)
    v: list[float | None] = Field(default_factory=list)  # None: the poll had an error


class TimelineEvent(_Model):
    """One line on the dashboard timeline: one decision, one reason."""

    ts_ms: int
    kind: TimelineKind
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One push to live clients; becomes one server-sent event named after `type`.

    `data` by type: "hello" {"subscription": id} (first, names the stream for PUT .../view),
    "status" a Status, "timeline" a TimelineEvent, "page" a TagPage (the view's window,
    after the view or the set of matching tags changed), "rows" {"seq", "rows": [{"key",
    "value", "error", "timestamp_ms"}], "groups": [{"device", "group", "timestamp_ms",
    "slot"}]} (only changed values of rows the view shows). Models or JSON-able values.
    """

    type: LiveEventType
    data: Any


@runtime_checkable
class HubView(Protocol):
    """What the API needs from the hub runtime; reads are snapshots and must not block.

    `subscribe()` yields live events for one client until it is closed; `live` serves the
    tag table and trend (pages, per-client views, recent history). `switchover()` may raise
    NotImplementedError (answered with 501) or a TandemError (answered with 409).
    """

    live: LiveFeed

    def health(self) -> Health: ...

    def status(self) -> Status: ...

    def tags(self) -> list[TagValue]: ...

    def tags_json(self) -> bytes: ...

    def timeline(self, limit: int) -> list[TimelineEvent]: ...

    def subscribe(self) -> AsyncIterator[LiveEvent]: ...

    async def switchover(self) -> dict[str, Any]: ...
