"""Pure choice of the path a redundant device is polled through (Kepware's MLR modes).

The poller feeds in what it saw (a poll, a probe of a path not in use, a link going down)
and gets back at most one PathSwitch with its typed reason; no clock, no I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tandem.config.hub import PathMode, RedundancyConfig
from tandem.hub.model import Value


class SwitchReason(enum.Enum):
    """Why the active path changed; the value is the sentence logs and the timeline show."""

    PATH_FAILED = "the active path failed"
    BAD_QUALITY = "bad quality on the primary path"
    HEARTBEAT_STALE = "the heartbeat stopped changing on the primary path"
    PRIMARY_BACK = "a preferred path answers again"
    ACTIVE_DOWN_OTHER_UP = "the active path is down and another answers"
    TRIGGER_CLEARED = "the trigger cleared on the primary path"


@dataclass(frozen=True, slots=True)
class PathSwitch:
    """Poll through path ``to_index`` from now on, instead of ``from_index``."""

    from_index: int
    to_index: int
    reason: SwitchReason


@dataclass(slots=True)
class _PathHealth:
    healthy: bool = True  # unknown counts as worth trying
    bad_in_row: int = 0
    beat: Value | None = None
    beat_changed_at: float = 0.0


class PathSelector:
    """Which of a device's paths is active, and when to move.

    switch-on-failure: leave a path that fails (no connection, no answer) for the first
    healthy one in priority order; go back to a preferred path when a probe of it answers.
    switch-on-trigger: the trigger is judged on the primary only (bad quality for
    ``bad_polls`` polls, or its heartbeat unchanged for ``unchanged_for`` s): while it holds
    the secondary is used, once it clears (a good probe, a heartbeat that moves) the primary.
    primary-only / secondary-only never move.
    """

    def __init__(self, paths: int, config: RedundancyConfig | None, now: float) -> None:
        self.mode: PathMode = config.mode if config is not None else "primary-only"
        self._config = config
        self.count = paths
        self.active = 1 if self.mode == "secondary-only" and paths > 1 else 0
        self._health = [_PathHealth(beat_changed_at=now) for _ in range(paths)]
        self.switches = 0

    @property
    def switching(self) -> bool:
        return self.count > 1 and self.mode in ("switch-on-failure", "switch-on-trigger")

    def probe_targets(self) -> list[int]:
        """The paths not in use whose health decides a future switch."""
        if not self.switching:
            return []
        if self.mode == "switch-on-trigger":
            return [0] if self.active != 0 else []
        return [i for i in range(self.count) if i != self.active]

    def healthy(self, index: int) -> bool:
        return self._health[index].healthy

    # --- observations -------------------------------------------------------------------------

    def on_link(self, index: int, connected: bool) -> PathSwitch | None:
        """A path's connection went up or down."""
        if connected or not self.switching:
            return None
        self._health[index].healthy = False
        if self.mode == "switch-on-failure" and index == self.active:
            return self._fail_over()
        return None

    def on_poll(
        self, index: int, *, failed: bool, bad: bool, beat: Value | None, now: float
    ) -> PathSwitch | None:
        """A poll through ``index`` finished: no answer at all (failed), any tag error (bad)."""
        if not self.switching or index != self.active:
            return None
        self._observe(index, ok=not failed, bad=bad, beat=beat, now=now)
        if self.mode == "switch-on-failure":
            return self._fail_over() if failed else None
        if index == 0 and self._trigger(now) is not None:
            return self._move(self._next_after(0), self._trigger(now) or SwitchReason.BAD_QUALITY)
        return None

    def on_probe(
        self, index: int, *, ok: bool, bad: bool, beat: Value | None, now: float
    ) -> PathSwitch | None:
        """A health read of a path not in use: ``ok`` when the device answered at all."""
        if not self.switching or index == self.active:
            return None
        self._observe(index, ok=ok, bad=bad, beat=beat, now=now)
        if self.mode == "switch-on-trigger":
            if index == 0 and ok and self._trigger(now) is None:
                return self._move(0, SwitchReason.TRIGGER_CLEARED)
            return None
        if not ok:
            return None
        if index < self.active:
            return self._move(index, SwitchReason.PRIMARY_BACK)
        if not self._health[self.active].healthy:
            return self._move(index, SwitchReason.ACTIVE_DOWN_OTHER_UP)
        return None

    # --- decisions ----------------------------------------------------------------------------

    def _observe(self, index: int, *, ok: bool, bad: bool, beat: Value | None, now: float) -> None:
        health = self._health[index]
        health.healthy = ok
        health.bad_in_row = health.bad_in_row + 1 if bad or not ok else 0
        if beat is not None and beat != health.beat:
            if health.beat is not None:
                health.beat_changed_at = now
            health.beat = beat

    def _trigger(self, now: float) -> SwitchReason | None:
        """Whether the switch-on-trigger condition holds on the primary path."""
        config = self._config
        primary = self._health[0]
        if config is None:
            return None
        if config.bad_polls is not None and primary.bad_in_row >= config.bad_polls:
            return SwitchReason.BAD_QUALITY
        heartbeat = config.heartbeat
        if heartbeat is not None and now - primary.beat_changed_at >= heartbeat.unchanged_for:
            return SwitchReason.HEARTBEAT_STALE
        return None

    def _fail_over(self) -> PathSwitch | None:
        for index in range(self.count):
            if index != self.active and self._health[index].healthy:
                return self._move(index, SwitchReason.PATH_FAILED)
        return None

    def _next_after(self, index: int) -> int:
        return (index + 1) % self.count

    def _move(self, index: int, reason: SwitchReason) -> PathSwitch | None:
        if index == self.active:
            return None
        switch = PathSwitch(self.active, index, reason)
        self.active = index
        self.switches += 1
        return switch
