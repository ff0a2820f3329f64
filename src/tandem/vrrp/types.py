"""The vocabulary shared by the VRRP codec, the state machine and the I/O driver.

Everything here is a frozen value: the machine consumes events and emits actions, the driver
turns actions into packets, addresses, hooks and log lines. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface

VRRP_PROTOCOL = 112  # RFC 3768 §5.2.4 / RFC 5798 §5.1.1.4
VRRP_MULTICAST = IPv4Address("224.0.0.18")  # RFC 3768 §5.2.2 / RFC 5798 §5.1.1.2
VRRP_TTL = 255  # RFC 3768 §5.2.3


class State(StrEnum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


class DropReason(StrEnum):
    """Why an incoming packet was not accepted. Counted and logged, never raised."""

    TOO_SHORT = "too_short"
    BAD_IP_HEADER = "bad_ip_header"
    NOT_VRRP = "not_vrrp"
    BAD_LENGTH = "bad_length"
    BAD_TTL = "bad_ttl"
    BAD_VERSION = "bad_version"  # not 2 or 3 at all
    VERSION_MISMATCH = "version_mismatch"  # valid, but not the version we speak
    BAD_TYPE = "bad_type"
    BAD_CHECKSUM = "bad_checksum"
    AUTH_TYPE_MISMATCH = "auth_type_mismatch"
    AUTH_MISMATCH = "auth_mismatch"
    INTERVAL_MISMATCH = "interval_mismatch"
    UNKNOWN_VRID = "unknown_vrid"
    NADDR_MISMATCH = "naddr_mismatch"
    VIP_MISMATCH = "vip_mismatch"
    NOT_LISTENING = "not_listening"  # instance in INIT or FAULT ignores every advert
    OWN_ADVERT = "own_advert"  # looped-back multicast from ourselves
    UNKNOWN_SOURCE = "unknown_source"  # unicast mode: the sender is not a configured peer


class SourceCheck(StrEnum):
    """Which senders a unicast instance listens to (no effect without unicast peers).

    PEERS_ONLY is Tandem's own rule: an advert from anyone but a configured peer is dropped
    before any other check looks at it. KEEPALIVED is keepalived's `check_unicast_src`, in
    keepalived's place: after the address checks, and skipped with the address checks when
    `vrrp_skip_check_adv_addr` sees the master already accepted. OFF is keepalived's default:
    the source is not checked, any sender with a matching advert is believed.
    """

    PEERS_ONLY = "peers_only"
    KEEPALIVED = "keepalived"
    OFF = "off"


class Reason(StrEnum):
    """Why a role changed. Exactly one per transition: it is the log line and the timeline entry."""

    STARTUP = "startup"  # INIT -> BACKUP (or -> MASTER at priority 255)
    MASTER_DOWN = "master_down_timer_expired"
    MASTER_RESIGNED = "master_sent_priority_0"
    PREEMPTED_LOWER_MASTER = "preempted_lower_priority_master"
    HIGHER_PRIORITY_ADVERT = "higher_priority_advert"
    TIE_BREAK_LOST = "equal_priority_higher_address"
    CHECK_FAILED = "tracked_check_failed"
    CHECKS_RECOVERED = "tracked_checks_recovered"
    SHUTDOWN = "shutdown"
    HANDOVER = "planned_handover"  # Tandem only: a master hands its role to a ready peer


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP advertisement as carried on the wire (RFC 3768 §5.1, RFC 5798 §5.1).

    `interval` is in seconds: whole seconds for v2, centiseconds resolution for v3.
    `auth_data` is the 8 bytes of a v2 advert (zeros without auth), empty for v3.
    `checksum` is the value on the wire when decoded; None when built locally (computed on encode).
    """

    version: int
    vrid: int
    priority: int
    interval: float
    addresses: tuple[IPv4Address, ...]
    auth_type: int = 0
    auth_data: bytes = b""
    checksum: int | None = None


@dataclass(frozen=True, slots=True)
class IpHeader:
    """The fields of the carrying IPv4 header that VRRP's receive checks look at."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    ident: int
    tos: int
    total_length: int
    header_length: int


@dataclass(frozen=True, slots=True)
class Drop:
    """A packet that did not decode or did not pass a receive check."""

    reason: DropReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """One vrrp_instance, already validated. Priority 255 means address owner."""

    name: str
    vrid: int
    priority: int
    advert_interval: float
    local_address: IPv4Address
    version: int = 2
    initial_state: State = State.BACKUP
    preempt: bool = True
    preempt_delay: float = 0.0
    vips: tuple[IPv4Interface, ...] = ()
    auth_pass: bytes | None = None  # v2 PASS; None = no authentication
    skip_check_adv_addr: bool = False
    unicast_peers: tuple[IPv4Address, ...] = ()  # empty = multicast 224.0.0.18
    source_check: SourceCheck = SourceCheck.PEERS_ONLY
    garp_master_delay: float = 5.0  # keepalived's default; 0 = no second burst
    garp_master_repeat: int = 5  # gratuitous ARPs per VIP in each burst, as keepalived


# ---- events (driver -> machine) ----


@dataclass(frozen=True, slots=True)
class Start:
    """The driver is ready: sockets open, checks scheduled. Explicit, unlike keepalived."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Orderly shutdown: a master resigns with one priority-0 advert."""


@dataclass(frozen=True, slots=True)
class Resign:
    """Planned handover (Tandem only): a MASTER resigns with priority 0 and stays BACKUP.

    The peer takes over after its skew time, as after a shutdown; if it does not, our own
    down timer brings us back, so a failed handover heals itself.
    """

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """The machine's deadline has passed (advert timer or master-down timer)."""


@dataclass(frozen=True, slots=True)
class AdvertIn:
    """An advert decoded from the wire, with what the IP layer told us about it."""

    advert: Advert
    src: IPv4Address
    ttl: int = VRRP_TTL
    multicast: bool = False


@dataclass(frozen=True, slots=True)
class ChecksChanged:
    """Tracked checks changed: `fault` holds the instance in FAULT; `priority_delta` adds up."""

    fault: bool
    priority_delta: int = 0


Event = Start | Stop | Resign | Tick | AdvertIn | ChecksChanged


# ---- actions (machine -> driver), executed in the order given ----


@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int
    interval: float
    count: int = 1


@dataclass(frozen=True, slots=True)
class AddVips:
    vips: tuple[IPv4Interface, ...]


@dataclass(frozen=True, slots=True)
class RemoveVips:
    vips: tuple[IPv4Interface, ...]


@dataclass(frozen=True, slots=True)
class GratuitousArp:
    """One burst: `count` announcements per VIP, back to back."""

    vips: tuple[IPv4Interface, ...]
    count: int = 1


@dataclass(frozen=True, slots=True)
class Transition:
    """A role change: one INFO log line, one timeline event, the notify hooks."""

    old: State
    new: State
    reason: Reason
    priority: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Dropped:
    """An advert rejected by a receive check: count it by reason, log it rate-limited."""

    reason: DropReason
    src: IPv4Address
    detail: str = ""


Action = SendAdvert | AddVips | RemoveVips | GratuitousArp | Transition | Dropped


@dataclass(slots=True)
class DropCounters:
    """Drops by reason, for status and metrics."""

    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: DropReason) -> None:
        self.by_reason[reason.value] = self.by_reason.get(reason.value, 0) + 1
