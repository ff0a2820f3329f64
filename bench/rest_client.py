"""The REST load of bench.load_isolation, in a process of its own at a lower CPU priority.

On a site the REST clients (SCADA, scripts, Prometheus) run on other machines; on the bench
box they share two cores with the pair. Run in the bench's own process, the generator (and
the 1 MB bodies it reads) took a whole core from the nodes it measures. Here it runs at
nice 10, so it takes what the machine has spare, as a remote client would, and what the
bench measures is the node under a request load rather than a CPU contest with its client.

    python -m bench.rest_client URL TOKEN_FILE RATE PATH [PATH ...]

Runs until SIGTERM, then prints {"done": N, "errors": N} on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

NICE = 10
IN_FLIGHT = 32


async def generate(url: str, token: str, rate: float, paths: list[str]) -> dict[str, int]:
    """`rate` requests/s, paced on a grid (a slow answer does not slow the rate: up to
    IN_FLIGHT requests are in flight at once), until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts = {"done": 0, "errors": 0}
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def one(client: httpx.AsyncClient, path: str) -> None:
        try:
            response = await client.get(path)
            counts["done" if response.status_code == 200 else "errors"] += 1
        except httpx.HTTPError:
            counts["errors"] += 1
        finally:
            limit.release()

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
        asyncio.TaskGroup() as tasks,
    ):
        start, n = time.monotonic(), 0
        while not stop.is_set():
            await limit.acquire()
            tasks.create_task(one(client, paths[n % len(paths)]))
            n += 1
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    return counts


def main(argv: list[str]) -> int:
    url, token_file, rate, *paths = argv
    os.nice(NICE)
    token = Path(token_file).read_text().strip()  # never in argv: other users can read it
    counts = asyncio.run(generate(url, token, float(rate), paths))
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
