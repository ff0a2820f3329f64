"""The VRRP state machine with keepalived 2.2.7's rules: events and a clock in, actions out."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from tandem.vrrp.packet import AUTH_NONE, AUTH_PASS, auth_matches, pass_auth_data
from tandem.vrrp.priority import OWNER_PRIORITY, clamp_priority
from tandem.vrrp.types import (
    VRRP_TTL,
    Action,
    AddVips,
    AdvertIn,
    ChecksChanged,
    Drop,
    DropCounters,
    Dropped,
    DropReason,
    Event,
    GratuitousArp,
    InstanceConfig,
    Reason,
    RemoveVips,
    Resign,
    SendAdvert,
    SourceCheck,
    Start,
    State,
    Stop,
    Tick,
    Transition,
)

__all__ = ["VrrpMachine", "master_down_interval", "skew_time"]

logger = logging.getLogger(__name__)

RESIGN_PRIORITY = 0  # RFC 3768 §5.3.4: "stop participating", the backup takes over after skew
FAULT_RESIGN_COUNT = 2  # keepalived sends two priority-0 adverts on MASTER -> FAULT


def skew_time(version: int, priority: int, master_adver_int: float) -> float:
    """Skew_Time (RFC 3768 §6.1 / RFC 5798 §6.1): higher priorities wait less, so they win."""
    if version == 3:
        return (256 - priority) * master_adver_int / 256
    return (256 - priority) / 256


def master_down_interval(version: int, priority: int, master_adver_int: float) -> float:
    """Master_Down_Interval (RFC 3768 §6.1 / RFC 5798 §6.1): three missed adverts plus skew."""
    return 3 * master_adver_int + skew_time(version, priority, master_adver_int)


class VrrpMachine:
    """One VRRP instance. Pure: the caller supplies monotonic `now` and executes the actions.

    The driver must deliver a Tick once `now >= deadline`; early Ticks are harmless no-ops.
    """

    def __init__(self, config: InstanceConfig) -> None:
        self._config = config
        self._state = State.INIT
        self._stopped = False
        self._preempt = self._honoured_preempt(config)
        self._fault = False
        self._priority_delta = 0
        self._master_adver_int = config.advert_interval
        self._master_address: IPv4Address | None = None
        self._preempt_until = 0.0
        self._down_at: float | None = None
        # What an expiring down timer means, so the takeover carries the right reason.
        self._down_reason = Reason.MASTER_DOWN
        self._lower_master: tuple[IPv4Address, int] | None = None
        self._advert_at: float | None = None
        self._garp_at: float | None = None
        self._counters = DropCounters()

    @staticmethod
    def _honoured_preempt(config: InstanceConfig) -> bool:
        if config.preempt:
            return True
        if config.initial_state is not State.BACKUP or config.priority == OWNER_PRIORITY:
            # keepalived clears nopreempt here too; a silent difference would surprise operators.
            logger.warning(
                "%s: nopreempt needs state BACKUP and priority below 255; preempting anyway",
                config.name,
            )
            return True
        return False

    # ---- read-only view for the driver, status and metrics ----

    @property
    def config(self) -> InstanceConfig:
        return self._config

    @property
    def state(self) -> State:
        return self._state

    @property
    def deadline(self) -> float | None:
        """Monotonic time of the next Tick the driver must deliver; None while no timer runs."""
        if self._state is State.BACKUP:
            return self._down_at
        if self._state is State.MASTER:
            timers = [t for t in (self._advert_at, self._garp_at) if t is not None]
            return min(timers) if timers else None
        return None

    @property
    def effective_priority(self) -> int:
        return clamp_priority(self._config.priority, self._priority_delta)

    @property
    def master_adver_int(self) -> float:
        return self._master_adver_int

    @property
    def master_address(self) -> IPv4Address | None:
        return self._master_address

    @property
    def preempt(self) -> bool:
        """Whether nopreempt was honoured (False) or cleared as keepalived does (True)."""
        return self._preempt

    @property
    def counters(self) -> DropCounters:
        return self._counters

    # ---- the one entry point ----

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event at monotonic time `now`; returns actions to execute in order."""
        if self._stopped:
            return []
        if isinstance(event, Tick):
            return self._on_tick(now)
        if isinstance(event, AdvertIn):
            return self._on_advert(event, now)
        if isinstance(event, ChecksChanged):
            return self._on_checks(event, now)
        if isinstance(event, Start):
            return self._on_start(now)
        if isinstance(event, Stop):
            return self._on_stop()
        if isinstance(event, Resign):
            return self._on_resign(event, now)
        raise TypeError(f"not a VRRP event: {event!r}")

    # ---- transitions ----

    def _transition(self, new: State, reason: Reason, detail: str = "") -> Transition:
        old = self._state
        self._state = new
        priority = self.effective_priority
        # No log line here: the driver logs each Transition once, with its reason.
        return Transition(old=old, new=new, reason=reason, priority=priority, detail=detail)

    def _arm_down_timer(self, now: float) -> None:
        self._down_at = now + master_down_interval(
            self._config.version, self.effective_priority, self._master_adver_int
        )
        self._down_reason = Reason.MASTER_DOWN
        self._lower_master = None

    def _become_backup(self, now: float, reason: Reason, detail: str = "") -> list[Action]:
        actions: list[Action] = []
        if self._state is State.MASTER:
            actions.append(RemoveVips(self._config.vips))
        self._advert_at = self._garp_at = None
        self._arm_down_timer(now)
        actions.append(self._transition(State.BACKUP, reason, detail))
        return actions

    def _become_master(self, now: float, reason: Reason, detail: str = "") -> list[Action]:
        config = self._config
        self._master_adver_int = config.advert_interval
        self._master_address = config.local_address
        self._down_at = None
        self._advert_at = now + config.advert_interval
        return [
            SendAdvert(self.effective_priority, config.advert_interval),
            AddVips(config.vips),
            self._garp_burst(now),
            self._transition(State.MASTER, reason, detail),
        ]

    def _garp_burst(self, now: float) -> GratuitousArp:
        """keepalived's garp_master_repeat ARPs now, and as many again garp_master_delay later
        (the second burst reaches switches that were still learning during the first)."""
        delay = self._config.garp_master_delay
        self._garp_at = now + delay if delay > 0 else None
        return GratuitousArp(self._config.vips, self._config.garp_master_repeat)

    def _resign_and_leave(
        self, new: State, reason: Reason, adverts: int, detail: str = ""
    ) -> list[Action]:
        config = self._config
        self._advert_at = self._garp_at = None
        return [
            SendAdvert(RESIGN_PRIORITY, config.advert_interval, count=adverts),
            RemoveVips(config.vips),
            self._transition(new, reason, detail),
        ]

    # ---- event handlers ----

    def _on_start(self, now: float) -> list[Action]:
        if self._state is not State.INIT:
            return []
        self._preempt_until = now + self._config.preempt_delay
        if self._fault:
            return [self._transition(State.FAULT, Reason.CHECK_FAILED, "a tracked check holds")]
        if self._config.priority == OWNER_PRIORITY:
            return self._become_master(now, Reason.STARTUP, "address owner")
        # Even `state MASTER` starts as BACKUP: keepalived first waits a down interval for a peer.
        return self._become_backup(now, Reason.STARTUP)

    def _on_resign(self, event: Resign, now: float) -> list[Action]:
        if self._state is not State.MASTER:
            return []
        actions = self._resign_and_leave(State.BACKUP, Reason.HANDOVER, 1, event.detail)
        self._arm_down_timer(now)
        return actions

    def _on_stop(self) -> list[Action]:
        self._stopped = True
        state = self._state
        self._down_at = self._advert_at = self._garp_at = None
        if state is State.MASTER:
            return self._resign_and_leave(State.INIT, Reason.SHUTDOWN, 1)
        if state in (State.BACKUP, State.FAULT):
            return [self._transition(State.INIT, Reason.SHUTDOWN)]
        return []

    def _takeover_detail(self) -> str:
        if self._down_reason is Reason.PREEMPTED_LOWER_MASTER and self._lower_master:
            src, prio = self._lower_master
            return f"{src} advertises priority {prio} < {self.effective_priority}"
        if self._master_address is not None:
            return f"last master {self._master_address}"
        return "no master seen"

    def _on_tick(self, now: float) -> list[Action]:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        if self._state is State.BACKUP:
            detail = self._takeover_detail()
            return self._become_master(now, self._down_reason, detail)
        actions: list[Action] = []
        if self._advert_at is not None and now >= self._advert_at:
            actions.append(SendAdvert(self.effective_priority, self._config.advert_interval))
            # Re-arm from the schedule, not from a late wakeup, so the period does not drift.
            scheduled = self._advert_at + self._config.advert_interval
            self._advert_at = scheduled if scheduled > now else now + self._config.advert_interval
        if self._garp_at is not None and now >= self._garp_at:
            actions.append(GratuitousArp(self._config.vips, self._config.garp_master_repeat))
            self._garp_at = None
        return actions

    def _on_checks(self, event: ChecksChanged, now: float) -> list[Action]:
        old_priority = self.effective_priority
        self._fault = event.fault
        self._priority_delta = event.priority_delta
        if self.effective_priority != old_priority:
            logger.info(
                "%s: effective priority %s -> %s",
                self._config.name,
                old_priority,
                self.effective_priority,
            )
        state = self._state
        if event.fault and state is State.MASTER:
            return self._resign_and_leave(State.FAULT, Reason.CHECK_FAILED, FAULT_RESIGN_COUNT)
        if event.fault and state is State.BACKUP:
            self._down_at = None
            return [self._transition(State.FAULT, Reason.CHECK_FAILED)]
        if not event.fault and state is State.FAULT:
            self._master_adver_int = self._config.advert_interval
            if self._config.priority == OWNER_PRIORITY:
                return self._become_master(now, Reason.CHECKS_RECOVERED, "address owner")
            return self._become_backup(now, Reason.CHECKS_RECOVERED)
        # INIT remembers the fault for Start; otherwise only later adverts and timers change.
        return []

    def _on_advert(self, event: AdvertIn, now: float) -> list[Action]:
        drop = self._receive_check(event)
        if drop is not None:
            self._counters.add(drop.reason)
            logger.debug(
                "%s: dropped advert from %s: %s %s",
                self._config.name,
                event.src,
                drop.reason,
                drop.detail,
            )
            return [Dropped(drop.reason, event.src, drop.detail)]
        if self._state is State.BACKUP:
            return self._backup_receive(event, now)
        return self._master_receive(event, now)

    def _receive_check(self, event: AdvertIn) -> Drop | None:
        """keepalived's vrrp_check_packet, in its order: the first failing check names the drop."""
        config, advert = self._config, event.advert
        if self._state not in (State.BACKUP, State.MASTER):
            return Drop(DropReason.NOT_LISTENING, f"instance is {self._state}")
        if event.src == config.local_address:
            return Drop(DropReason.OWN_ADVERT, "looped back")
        if config.source_check is SourceCheck.PEERS_ONLY:
            # Tandem's rule: nothing from a stranger is looked at, not even its password.
            unknown = self._unknown_source(event)
            if unknown is not None:
                return unknown
        if event.multicast and event.ttl != VRRP_TTL:
            # RFC 3768 §7.1: only multicast must arrive with TTL 255; keepalived lets unicast pass.
            return Drop(DropReason.BAD_TTL, f"TTL {event.ttl}")
        if advert.version != config.version:
            return Drop(DropReason.VERSION_MISMATCH, f"v{advert.version}, ours v{config.version}")
        if advert.version == 2:
            expected_type = AUTH_NONE if config.auth_pass is None else AUTH_PASS
            if advert.auth_type != expected_type:
                return Drop(
                    DropReason.AUTH_TYPE_MISMATCH,
                    f"auth type {advert.auth_type}, ours {expected_type}",
                )
            if config.auth_pass is not None and not auth_matches(
                pass_auth_data(config.auth_pass), advert.auth_data
            ):
                return Drop(DropReason.AUTH_MISMATCH, "password differs")
            if advert.interval != round(config.advert_interval):
                return Drop(
                    DropReason.INTERVAL_MISMATCH,
                    f"advert interval {advert.interval:g} s, ours {config.advert_interval:g} s",
                )
        if advert.vrid != config.vrid:
            return Drop(DropReason.UNKNOWN_VRID, f"vrid {advert.vrid}, ours {config.vrid}")
        if config.skip_check_adv_addr and event.src == self._master_address:
            return None
        if len(advert.addresses) != len(config.vips):
            return Drop(
                DropReason.NADDR_MISMATCH,
                f"{len(advert.addresses)} addresses, ours {len(config.vips)}",
            )
        if set(advert.addresses) != {vip.ip for vip in config.vips}:
            theirs = ",".join(str(a) for a in advert.addresses)
            return Drop(DropReason.VIP_MISMATCH, f"addresses {theirs}")
        if config.source_check is SourceCheck.KEEPALIVED:
            # keepalived's check_unicast_src sits here, inside the address checks it skips.
            return self._unknown_source(event)
        return None

    def _unknown_source(self, event: AdvertIn) -> Drop | None:
        """A unicast instance's sender must be one of its peers; multicast has no such list."""
        peers = self._config.unicast_peers
        if not peers or event.src in peers:
            return None
        return Drop(DropReason.UNKNOWN_SOURCE, f"{event.src} is not a unicast peer")

    def _backup_receive(self, event: AdvertIn, now: float) -> list[Action]:
        advert = event.advert
        if advert.priority == RESIGN_PRIORITY:
            # The master resigned: take over after skew alone instead of the full interval.
            self._down_at = now + skew_time(
                self._config.version, self.effective_priority, self._master_adver_int
            )
            self._down_reason = Reason.MASTER_RESIGNED
            return []
        accept = (
            advert.priority >= self.effective_priority
            or not self._preempt
            or now < self._preempt_until
        )
        if accept:
            self._master_address = event.src
            if advert.version == 3 and advert.interval > 0:
                # RFC 5798 §6.4.2: a v3 backup follows the master's interval, checked or not.
                self._master_adver_int = advert.interval
            self._arm_down_timer(now)
            return []
        # A lower-priority master is ignored on purpose: our timer runs out and we preempt it.
        if self._down_reason is Reason.MASTER_DOWN:
            self._down_reason = Reason.PREEMPTED_LOWER_MASTER
        self._lower_master = (event.src, advert.priority)
        logger.debug(
            "%s: ignoring lower priority %s advert from %s",
            self._config.name,
            advert.priority,
            event.src,
        )
        return []

    def _master_receive(self, event: AdvertIn, now: float) -> list[Action]:
        advert, config = event.advert, self._config
        ours = self.effective_priority
        if advert.priority == RESIGN_PRIORITY:
            # Another master resigned: tell its backups at once that we are here.
            self._advert_at = now + config.advert_interval
            return [SendAdvert(ours, config.advert_interval)]
        we_win = advert.priority < ours or (
            advert.priority == ours and event.src < config.local_address
        )
        if we_win:
            # keepalived: advert and ARPs again (garp_lower_prio_repeat/_delay default to the
            # garp_master_* values), so the stray master's neighbours learn where the VIPs are.
            self._advert_at = now + config.advert_interval
            return [SendAdvert(ours, config.advert_interval), self._garp_burst(now)]
        reason = Reason.HIGHER_PRIORITY_ADVERT if advert.priority > ours else Reason.TIE_BREAK_LOST
        self._master_address = event.src
        if advert.version == 3 and advert.interval > 0:
            self._master_adver_int = advert.interval
        detail = f"advert from {event.src} priority {advert.priority}"
        return self._become_backup(now, reason, detail)
