"""The hub's timeline: a bounded list of events, and the connection changes that feed it.

ConnectionsSeen is pure: it is told statuses and events and answers with the lines to add, so
the rule (one line per change, with the reason for a loss) is testable without a hub.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tandem.api.view import TimelineEvent, TimelineKind
from tandem.hub.modbus import DeviceEvent, DeviceEventKind, DeviceStatus
from tandem.hub.mqtt import PublisherStatus

Line = tuple[TimelineKind, str, dict[str, Any]]


@dataclass(slots=True)
class ConnectionsSeen:
    devices: dict[str, bool] = field(default_factory=dict)
    broker: bool = False

    def device_event(self, event: DeviceEvent) -> Line:
        """A poller that reports its own changes (as they happen, not sampled)."""
        if event.kind is DeviceEventKind.CONNECTED:
            self.devices[event.device] = True
        elif event.kind is DeviceEventKind.DISCONNECTED:
            self.devices[event.device] = False
        return ("device", event.message, {"device": event.device, **event.detail})

    def sampled(
        self, devices: Iterable[DeviceStatus], publisher: PublisherStatus, broker: str
    ) -> list[Line]:
        """Changes since the last sample, for pollers without events and for the broker."""
        lines: list[Line] = []
        for st in devices:
            if st.connected == self.devices.get(st.name, False):
                continue
            self.devices[st.name] = st.connected
            if st.connected:
                lines.append(("device", f"{st.name} connected", {"device": st.name}))
            else:
                reason = st.last_error or "connection lost"
                lines.append(
                    (
                        "device",
                        f"{st.name} disconnected: {reason}",
                        {"device": st.name, "error": reason},
                    )
                )
        if publisher.connected != self.broker:
            self.broker = publisher.connected
            if publisher.connected:
                lines.append(("broker", f"connected to {broker}", {"broker": broker}))
            else:
                reason = publisher.last_error or "connection lost"
                lines.append(
                    ("broker", f"disconnected from {broker}: {reason}", {"broker": broker})
                )
        return lines

    def keep_only(self, names: set[str]) -> None:
        """A new configuration: devices that are gone are forgotten."""
        for gone in [n for n in self.devices if n not in names]:
            del self.devices[gone]


@dataclass(frozen=True, slots=True)
class RoleChange:
    """A role decision as the log and the timeline say it: what it became, why, in which phase.

    `detail` says what is happening within the role ("acquiring term 2: waiting for the broker
    barrier"); without it the line names the term.
    """

    previous: str
    role: str
    term: int
    reason: str
    phase: str | None
    detail: str

    @property
    def said(self) -> str:
        return f"{self.role}, {self.detail}" if self.detail else f"{self.role} (term {self.term})"

    def line(self) -> Line:
        said = self.said
        message = f"{said} [{self.reason}]" if self.detail else f"became {said}: {self.reason}"
        detail = {
            "from": self.previous,
            "role": self.role,
            "term": self.term,
            "reason": self.reason,
            "phase": self.phase,
            "detail": self.detail,
        }
        return ("role", message, detail)


class Timeline:
    """The newest `size` events; each one also goes to `push` (the live dashboards)."""

    def __init__(self, size: int, push: Callable[[TimelineEvent], None]) -> None:
        self._events: deque[TimelineEvent] = deque(maxlen=size)
        self._push = push

    def add(self, kind: TimelineKind, message: str, detail: dict[str, Any] | None) -> TimelineEvent:
        event = TimelineEvent(
            ts_ms=int(time.time() * 1000), kind=kind, message=message, detail=detail or {}
        )
        self._events.append(event)
        self._push(event)
        return event

    def newest(self, limit: int) -> list[TimelineEvent]:
        """Newest first."""
        return list(reversed(self._events))[:limit]


__all__ = ["ConnectionsSeen", "Line", "RoleChange", "Timeline"]
