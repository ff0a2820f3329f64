"""Runs one node from its config file until a signal asks it to stop: the process entry point."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tandem.config.hub import TandemConfig, load_config
from tandem.signals import stop_on_signals

log = logging.getLogger(__name__)


async def run_node(config_path: Path) -> int:
    """Load the config and run the node until SIGTERM/SIGINT; 0 after an orderly stop.

    Raises ConfigError for a config that does not validate, TandemError when the node cannot
    start (e.g. the API port is taken).
    """
    cfg = load_config(config_path)
    warn_if_secrets_readable(cfg, config_path)
    if cfg.ha is not None:
        warn_if_peer_link_in_clear(cfg)
        # Imported here: a single node needs none of the HA machinery.
        from tandem.ha.warden import run_ha_node

        return await run_ha_node(cfg, config_path)
    return await run_single_node(cfg, config_path)


def warn_if_secrets_readable(cfg: TandemConfig, config_path: Path) -> None:
    """A config holding a password or secret inline should be readable by its owner only."""
    inline = (cfg.ha is not None and cfg.ha.secret is not None) or cfg.mqtt.password is not None
    try:
        mode = config_path.stat().st_mode
    except OSError:
        return
    if inline and mode & 0o077:
        log.warning(
            "%s holds a secret and is readable by others (mode %o): chmod 600 it, or use "
            "ha.secret_file / ha.secret_env",
            config_path,
            mode & 0o777,
        )


def warn_if_peer_link_in_clear(cfg: TandemConfig) -> None:
    if cfg.ha is not None and not cfg.ha.peer_url.startswith("https://"):
        log.warning(
            "the peer link to %s is plain http: its bearer and the synced config (MQTT "
            "password included) travel in clear; see docs/security.md for TLS",
            cfg.ha.peer_url,
        )


async def run_single_node(cfg: TandemConfig, config_path: Path | None = None) -> int:
    """One hub, no peer: role SINGLE, always polling and publishing, term 0.

    With its config file, the config can be edited over the API (applied with reconfigure).
    """
    # Imported here: the warden of an HA node never loads the hub stack, its child does.
    from tandem.hub.modbus.schedule import prefer_the_loop
    from tandem.hub.runtime import Hub

    prefer_the_loop()
    stop = asyncio.Event()
    hub = Hub(cfg)
    if config_path is not None:
        from tandem.api import configedit

        target = configedit.SingleTarget(config_path, hub)
        configedit.install(hub.app, configedit.ConfigEditor(target, configedit.HubReader(hub)))
    with stop_on_signals(stop):
        async with hub:
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
