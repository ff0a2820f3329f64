"""Runs one node from its config file until a signal asks it to stop: the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

from tandem.config.hub import TandemConfig, load_config
from tandem.hub.runtime import Hub

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_node(config_path: Path) -> int:
    """Load the config and run the node until SIGTERM/SIGINT; 0 after an orderly stop.

    Raises ConfigError for a config that does not validate, TandemError when the node cannot
    start (e.g. the API port is taken).
    """
    cfg = load_config(config_path)
    if getattr(cfg, "ha", None) is not None:
        # Imported here: a single node needs none of the HA machinery.
        from tandem.ha.warden import run_ha_node

        return await run_ha_node(cfg, config_path)
    return await run_single_node(cfg)


async def run_single_node(cfg: TandemConfig) -> int:
    """One hub, no peer: role SINGLE, always polling and publishing, term 0."""
    stop = asyncio.Event()
    with stop_on_signals(stop):
        async with Hub(cfg) as hub:
            log.info(
                "node %s running: %s device(s), API on %s:%s",
                cfg.node,
                len(cfg.devices),
                cfg.api.host,
                hub.api_port,
            )
            stopped = asyncio.create_task(hub.wait_stopped(), name="hub-stopped")
            asked = asyncio.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            if stopped.done():
                stopped.result()  # the hub ended by itself: raise why
                return 1
            stopped.cancel()
            log.info("node %s stopping on signal", cfg.node)
    return 0


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
