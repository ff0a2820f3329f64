"""Whether interfaces are up, from rtnetlink link events: keepalived's interface tracking.

An interface counts as up when it is administratively up and has carrier (IFF_UP and
IFF_RUNNING, keepalived's IF_ISUP), so a pulled cable counts as down just like
`ip link set down`. A missing or deleted interface is down. Events arrive as the kernel
sends them, so a tracked link going down is seen within milliseconds, not at the next poll.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from tandem.net.transport import TransportError

log = logging.getLogger(__name__)

IFF_UP = 0x1  # linux/if.h
IFF_RUNNING = 0x40

LinkChange = Callable[[str, bool], None]


def link_is_up(flags: int) -> bool:
    """keepalived's FLAGS_UP: administratively up and with carrier."""
    return flags & (IFF_UP | IFF_RUNNING) == (IFF_UP | IFF_RUNNING)


class LinkWatcher:
    """Follows the up/down state of a set of interfaces and reports every change.

    `on_change(name, up)` is called from `run()` only when a watched interface's state
    changes; `states` holds the current view, filled when the watcher is entered.
    """

    def __init__(self, interfaces: Iterable[str], on_change: LinkChange) -> None:
        self.watched = frozenset(interfaces)
        self._on_change = on_change
        self.states: dict[str, bool] = dict.fromkeys(self.watched, False)
        self._ipr: Any = None

    async def __aenter__(self) -> Self:
        ipr = AsyncIPRoute()
        try:
            await ipr.bind(groups=RTMGRP_LINK)
            async for message in await ipr.get_links():
                self._apply(message, report=False)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ipr.close()
            raise TransportError(f"cannot watch interfaces: {exc}") from exc
        self._ipr = ipr
        missing = sorted(name for name in self.watched if not self.states[name])
        if missing:
            log.warning("tracked interfaces down or missing at start: %s", ", ".join(missing))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    async def run(self) -> None:
        """Read link events until cancelled."""
        if self._ipr is None:
            raise TransportError("LinkWatcher is not open")
        while True:
            async for message in self._ipr.get():
                self._apply(message, report=True)

    def _apply(self, message: Any, report: bool) -> None:
        name = message.get("ifname")
        if name not in self.watched:
            return
        up = message.get("event") != "RTM_DELLINK" and link_is_up(int(message["flags"]))
        if self.states.get(name) == up:
            return
        self.states[name] = up
        log.info("interface %s is %s", name, "up" if up else "down")
        if report:
            self._on_change(name, up)
