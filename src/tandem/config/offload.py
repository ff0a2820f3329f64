"""Config parsing for a running hub, in a worker process: a large file must not stall polling.

Parsing a 10,000-tag file with line numbers for every field takes the better part of a second
of CPU, much of it in libyaml holding the GIL. In a thread of the hub the event loop stalls
for up to 0.2 s at a time (measured; more on a busy machine) and runs at half speed, and
pollers that fall more than a second behind skip slots. In a
process of its own (started per change, at a lower CPU priority) the hub's loop keeps
running; the validated config comes back pickled. Small files stay in a thread: a process is
worth its start-up (half a second of imports) only for large ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem.config.hub import TandemConfig, load_config_text
from tandem.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)

LARGE_TEXT = 64 * 1024  # bytes of YAML from which a worker process parses it
WORKER_NICE = 10
# A worker that could not answer (out of processes or memory, killed): do the work in the hub.
WORKER_FAILED = (OSError, pickle.UnpicklingError, EOFError, ValueError)

Parsed = tuple[TandemConfig | None, list[ConfigProblem]]


def _parse(text: str, file: str) -> Parsed:
    """The config, or its problems (a ConfigError does not pickle faithfully)."""
    try:
        return load_config_text(text, file), []
    except ConfigError as exc:
        return None, list(exc.problems)


async def run_in_worker(module: str, request: object) -> Any:
    """`python -m MODULE` (whose main is `serve_worker`): the request pickled on stdin, the
    answer pickled on stdout. OSError when the child fails; WORKER_FAILED lists what to catch.

    A plain child process rather than multiprocessing: nothing of the hub's main module is
    re-imported, and nothing lingers after it.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
    if child.returncode != 0:
        raise OSError(f"exit {child.returncode}: {err.decode(errors='replace')[-300:]}")
    # Our own child's answer, never outside input. Unpickled in a thread: at 10,000 tags that
    # takes ~60 ms, which the GIL's switch interval cuts into short slices for the loop
    # (tandem.hub.modbus.schedule.prefer_the_loop).
    return await asyncio.to_thread(pickle.loads, out)


def serve_worker(handle: Callable[[Any], object]) -> int:
    """A worker's main, at a lower CPU priority: `handle`'s answer to the pickled request."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    request = pickle.loads(sys.stdin.buffer.read())  # from the hub that started this process
    sys.stdout.buffer.write(pickle.dumps(handle(request), pickle.HIGHEST_PROTOCOL))
    return 0


async def parse_config_text(text: str, file: str) -> TandemConfig:
    """load_config_text off the event loop; raises ConfigError as it does."""
    if len(text) < LARGE_TEXT:
        return await asyncio.to_thread(load_config_text, text, file)
    try:
        parsed: Parsed = await run_in_worker("tandem.config.offload", (text, file))
        config, problems = parsed
    except WORKER_FAILED as exc:
        # No worker (out of processes or memory): parse here, slower for the loop.
        log.warning("config worker failed (%s); parsing %s in the hub", exc, file)
        return await asyncio.to_thread(load_config_text, text, file)
    if config is None:
        raise ConfigError(problems)
    return config


async def parse_config_file(path: Path) -> TandemConfig:
    """load_config off the event loop; raises ConfigError as it does."""
    try:
        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read: {exc}")]) from exc
    return await parse_config_text(text, str(path))


def _serve(request: tuple[str, str]) -> Parsed:
    text, file = request
    return _parse(text, file)


if __name__ == "__main__":
    sys.exit(serve_worker(_serve))


__all__ = [
    "LARGE_TEXT",
    "WORKER_FAILED",
    "parse_config_file",
    "parse_config_text",
    "run_in_worker",
    "serve_worker",
]
