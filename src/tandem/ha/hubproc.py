"""The hub process of an HA node: pollers, outbox, publisher, API and the peer link.

Started by the warden with one end of a socket pair; it dies with the warden (the kernel sends
it SIGKILL when its parent goes) and leaves stopping to the warden: SIGINT and SIGTERM are
ignored, a `HubStop` on the channel (or the channel closing) ends it in order.

    python -m tandem.ha.hubproc FD PARENT_PID LOG_FORMAT VERBOSE
"""

# ruff: noqa: E402  (one setting must come before the imports: see below)
from __future__ import annotations

import sys

# Before anything imports httpx: the hub process has no use for httpx's command line, whose
# import (click and rich) costs ~0.2 s of every hub start. With a None entry, httpx's own
# `except ImportError` fallback applies.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
from pathlib import Path

from tandem.config.hub import TandemConfig
from tandem.ha.channel import Channel
from tandem.ha.hubside import HubSide
from tandem.ha.messages import CODEC, HubStart, HubStop
from tandem.hub.modbus.schedule import prefer_the_loop
from tandem.logs import setup_logging

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """SIGKILL when the warden goes, however it goes; exit now if it is already gone."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


async def serve(channel: Channel) -> int:
    start = await channel.receive()
    if not isinstance(start, HubStart):
        log.error("hub process: expected HubStart, got %r", type(start).__name__)
        return 2
    cfg = TandemConfig.model_validate_json(start.config_json)
    side = HubSide(
        cfg,
        Path(start.config_path) if start.config_path else None,
        channel.send,
        start.started_at,
    )
    stop = asyncio.Event()

    def on_command(message: object) -> None:
        if isinstance(message, HubStop):
            stop.set()
        else:
            side.on_command(message)

    async with side.hub as hub, asyncio.TaskGroup() as tg:
        loops = [
            tg.create_task(side.observer.run(), name="observer"),
            tg.create_task(side.configsync.run(), name="config-sync"),
            tg.create_task(side.peer.run(), name="peer-link"),
            tg.create_task(side.report_loop(), name="hub-report"),
            tg.create_task(side.heartbeat_loop(), name="heartbeat"),
        ]
        commands = tg.create_task(channel.pump(on_command), name="commands")
        stopped = tg.create_task(hub.wait_stopped(), name="hub-stopped")
        asked = tg.create_task(stop.wait(), name="stop")
        await asyncio.wait({commands, stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
        hub.set_publishing(False)
        for task in (*loops, commands, asked):
            task.cancel()
        if not stopped.done():
            stopped.cancel()
    return 0


async def amain(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    channel = await Channel.open(sock, CODEC)
    try:
        return await serve(channel)
    finally:
        with contextlib.suppress(Exception):
            await channel.drain()
        channel.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, parent, log_format, verbose = int(args[0]), int(args[1]), args[2], args[3] == "1"
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(log_format, verbose)
    prefer_the_loop()
    return asyncio.run(amain(fd))


if __name__ == "__main__":
    sys.exit(main())
