"""Process signals as asyncio events: SIGTERM and SIGINT ask for an orderly stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def interrupt_on_sigint() -> None:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt even if this process inherited it ignored.

    A shell starts background jobs (`cmd &` in a script) with SIGINT ignored, and Python then
    leaves it ignored: `kill -INT` would not stop the demo or a simulator started that way.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` during the block; the default handling comes back after."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        stop.set()

    installed: list[signal.Signals] = []
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
