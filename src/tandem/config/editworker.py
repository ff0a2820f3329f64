"""Config edits of a large file in a worker process: the round trip must not stall polling.

ruamel.yaml's round trip is pure Python: a 10,000-tag file takes seconds to parse and write
back, all of it holding the GIL. In a thread of the hub the event loop would run at half speed
for that long and pollers would skip slots (see config/offload.py for the same reason with the
loader). So a large file is edited in a child process at a lower CPU priority; the edit and its
outcome travel pickled. Small files stay in a thread, with the document kept between edits.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import yaml

from tandem.config.edit import Edit, EditError, EditFailure, EditInvalid, Performed, perform
from tandem.config.offload import LARGE_TEXT, WORKER_FAILED, run_in_worker, serve_worker

log = logging.getLogger(__name__)

_MODULE = "tandem.config.editworker"  # run as `python -m` for a worker
Outcome = tuple[str, Any]  # ("ok", Performed) | ("error", EditError) | ("invalid", problems)


def _run(base: str, e: Edit) -> Outcome:
    try:
        done, _ = perform(base, e)
    except EditError as exc:
        return "error", (exc.reason, str(exc))
    except EditInvalid as exc:
        return "invalid", exc.problems
    return "ok", done


def _raise_or_return(outcome: Outcome) -> Performed:
    kind, value = outcome
    if kind == "error":
        reason, message = value
        raise EditError(reason, message)
    if kind == "invalid":
        raise EditInvalid(value)
    assert isinstance(value, Performed)
    return value


def _load(text: str) -> Any:
    """The file as plain data, no line numbers (what the read routes answer from)."""
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise EditError(EditFailure.BAD_DOCUMENT, f"the config file is not YAML: {exc}") from exc


async def perform_off_loop(base: str, e: Edit) -> Performed:
    """`perform` in a worker process (a large file) or a thread; raises as perform does."""
    if len(base) < LARGE_TEXT:
        return _raise_or_return(await asyncio.to_thread(_run, base, e))
    try:
        outcome: Outcome = await run_in_worker(_MODULE, ("edit", base, e))
    except WORKER_FAILED as exc:
        # No worker (out of processes or memory): edit here, slower for the loop.
        log.warning("config edit worker failed (%s); editing in the hub", exc)
        outcome = await asyncio.to_thread(_run, base, e)
    return _raise_or_return(outcome)


async def load_off_loop(text: str) -> Any:
    """The file's plain data, parsed in a worker process when large; EditError if not YAML."""
    if len(text) < LARGE_TEXT:
        return await asyncio.to_thread(_load, text)
    try:
        kind, value = await run_in_worker(_MODULE, ("load", text))
    except WORKER_FAILED as exc:
        log.warning("config load worker failed (%s); parsing in the hub", exc)
        return await asyncio.to_thread(_load, text)
    if kind == "error":
        raise EditError(EditFailure.BAD_DOCUMENT, value)
    return value


def _serve(request: tuple[Any, ...]) -> Any:
    if request[0] == "load":
        try:
            return "ok", _load(request[1])
        except EditError as exc:
            return "error", str(exc)
    _, base, e = request
    return _run(base, e)


if __name__ == "__main__":
    sys.exit(serve_worker(_serve))
