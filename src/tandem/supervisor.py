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
    warn_if_secrets_readable(cfg, config_path)
    if cfg.ha is not None:
        return await run_pair_node(cfg, config_path)
    return await run_single_node(cfg)


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


async def run_pair_node(cfg: TandemConfig, config_path: Path) -> int:
    """One member of a pair, its peer link verifying the peer as `ha.peer_tls` says."""
    # Imported here: a single node needs none of the HA machinery.
    from tandem.ha.node import HaNode
    from tandem.security.tls import PeerTls

    assert cfg.ha is not None
    if not cfg.ha.peer_url.startswith("https://"):
        log.warning(
            "the peer link to %s is plain http: its bearer and the synced config (MQTT "
            "password included) travel in clear; see docs/security.md for TLS",
            cfg.ha.peer_url,
        )
    stop = asyncio.Event()
    with stop_on_signals(stop):
        node = HaNode(cfg, config_path)
        node.peer.use_tls(PeerTls.from_config(cfg.ha.peer_tls, cfg.api.tls))
        return int(await node.run(stop))


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
