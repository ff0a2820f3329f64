"""The hub's side of outbox faults: a retry timer, one timeline line per change, the API view."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem.api.view import OutboxInfo
from tandem.config.hub import OutboxConfig
from tandem.hub.outbox import Outbox

Tell = Callable[[str, dict[str, Any]], object]  # the result is ignored


class OutboxWatch:
    """Arms one retry timer after a failed outbox write and tells each fault and recovery once.

    The outbox keeps what it could not write, but something must call it again when no new
    sample comes (polling off on a standby, a failed ack or trim). `arm` is the outbox's
    on_fault and is also called by the health check; `tell` runs after every store.
    """

    def __init__(self, retry: Callable[[], None], tell: Tell) -> None:
        self.outbox: Outbox | None = None
        self._retry = retry
        self._tell = tell
        self._timer: asyncio.TimerHandle | None = None
        self._told_writable = True
        self._told_recovery = False

    def open(self, path: Path, config: OutboxConfig) -> Outbox:
        """The outbox for `config`, watched by this."""
        self.outbox = Outbox(
            path,
            max_rows=config.max_rows,
            overflow=config.overflow,
            synchronous="FULL" if config.synchronous == "full" else "NORMAL",
            retry_limit=config.retry_queue,
            on_fault=self.arm,
        )
        return self.outbox

    def arm(self) -> None:
        """Call `retry` once the outbox's retry delay has passed, if it still holds anything."""
        outbox = self.outbox
        if self._timer is not None or outbox is None or not outbox.retry_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running yet: the first store or health check arms it
            return
        self._timer = loop.call_later(outbox.retry_in(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._retry()

    def tell(self) -> None:
        """One timeline line when writes start or stop failing, one for a recovery at start."""
        outbox = self.outbox
        if outbox is None:
            return
        recovered = outbox.recovered
        if recovered is not None and not self._told_recovery:
            self._told_recovery = True
            self._tell(
                f"outbox was corrupt ({recovered.reason}): moved to {recovered.moved_to}",
                {"moved_to": str(recovered.moved_to)},
            )
        if outbox.writable != self._told_writable:
            self._told_writable = outbox.writable
            message = outbox.fault_reason() or "outbox writable again"
            self._tell(message, {"outbox": outbox.writable})


def outbox_info(outbox: Outbox) -> OutboxInfo:
    """The API's view of the outbox, storage faults and start-up recovery included."""
    recovered = outbox.recovered
    return OutboxInfo(
        depth=outbox.depth(),
        overflow_dropped=outbox.overflow_dropped,
        writable=outbox.writable,
        write_errors=outbox.faults.errors,
        fault=outbox.fault_reason(),
        retry_queue=outbox.retry_queue,
        retry_dropped=outbox.retry_dropped,
        recovered=0 if recovered is None else 1,
        recovered_to=None if recovered is None else str(recovered.moved_to),
        recovered_reason=None if recovered is None else recovered.reason,
    )


__all__ = ["OutboxWatch", "outbox_info"]
