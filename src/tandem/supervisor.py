"""Runs one node from its config file until a signal asks it to stop: the process entry point."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tandem.config.hub import TandemConfig, load_config
from tandem.hub.runtime import Hub
from tandem.signals import stop_on_signals

log = logging.getLogger(__name__)


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
