"""VRRP timing under load: a pair at plant scale keeps its role, its adverts and every slot.

The demo's loopback pair (two ``tandem run`` nodes, VRRPv3 at 0.1 s over the UDP transport
between 127.0.0.2 and 127.0.0.3, hot standby, one PLC simulator, mosquitto) polls ``--tags``
tags (1,000 per device, every value changing, all every 100 ms). Then, one after the other,
for ``--duration`` seconds each, the master is left alone (**idle**: the baseline, what
polling that many tags costs this machine by itself), then put under:

* **pages**: 5 dashboard pages open on the master (real headless Chromium, logged in, each in
  its own browser context so none is a throttled background tab);
* **rest**: 200 REST requests/s on the master (status, tags, timeline, metrics, in turn),
  from a client process at nice 10 (bench.rest_client: on a site the clients are remote);
* **reconfig**: the whole config (every device, every tag) changed live on the master every
  ``--reconfig-every`` seconds (a tag added to, then removed from, every group), synced to
  the backup;
* **editor**: one tag edited through the Configuration API (``PUT .../tags/{tag}``, its scale
  toggled) every ``--reconfig-every`` seconds: the round trip of the whole file with its
  comments, in a worker process for a large file, then applied and synced like a PUT;
* **burners**: two CPU burners (busy loops at normal priority, one per core).

Per phase: VRRP transitions of either node (any is spurious: nothing asked for one),
spurious takeovers the HA core counted, role changes seen by polling both nodes, terms
taken, the longest gap between two adverts of the master (kernel receive stamps at a
listener on 127.0.0.9) and how many exceeded 1.5 x the interval, slots lost and duplicated
at an independent subscriber, and poll overruns (slots the pollers skipped because the
machine could not poll them in time: PLC-side capacity, not failover).

Usage: ``.venv/bin/python -m bench.load_isolation [--duration 600] [--quick]``
(``--quick``: 20 s per phase, a smoke run; the acceptance figure is 600 s per phase.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are importable from the root
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from bench.dashboard import (  # noqa: E402
    LISTENER,
    AdvertGaps,
    AdvertListener,
    advert_gaps,
    devices_for,
    open_page,
)
from bench.report import table, write_json  # noqa: E402
from tandem.demo import DemoCluster  # noqa: E402
from tandem.demo.pair import ADVERT_INTERVAL_S, shared_udp_port  # noqa: E402
from tandem.security.roles import Role  # noqa: E402
from tandem.security.tokens import create_token  # noqa: E402
from tests.integration.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PAGES = 5
REST_RATE = 200.0
REST_PATHS = ("/api/v1/status", "/api/v1/tags", "/api/v1/timeline?limit=50", "/metrics")
BURNERS = 2
PLC_NICE = int(os.environ.get("PLC_NICE", "-5"))  # 0: the simulator's niceness untouched
PHASES = ("idle", "pages", "rest", "reconfig", "editor", "burners")


@dataclass(frozen=True, slots=True)
class Counters:
    """What the two nodes and the subscriber have counted so far."""

    at: float
    transitions: dict[str, int]  # per node: VRRP transitions since it started
    spurious: dict[str, int]  # per node: takeovers the HA core judged spurious
    terms: dict[str, int]
    overruns: dict[str, int]  # per node and device (a replaced poller starts again at 0)
    lost: int
    duplicates: int
    lost_by_stream: dict[str, int]


@dataclass(frozen=True, slots=True)
class PhaseResult:
    phase: str
    seconds: float
    load_done: int  # pages opened, requests answered, changes applied, burners run
    load_errors: int
    vrrp_transitions: int
    spurious_takeovers: int
    role_changes: int
    terms_taken: int
    adverts: AdvertGaps
    lost: int
    duplicates: int
    overruns: int
    master_kept_role: bool
    lost_by_stream: dict[str, int]  # device/group: slots lost in the phase


def _sum(counts: dict[str, Any] | None) -> int:
    return sum(int(v) for v in (counts or {}).values())


def overruns_between(before: dict[str, int], after: dict[str, int]) -> int:
    """Overruns counted in between; a count that went down belongs to a new poller."""
    return sum(n - before.get(k, 0) if n >= before.get(k, 0) else n for k, n in after.items())


async def counters(cluster: DemoCluster) -> Counters:
    statuses = await cluster.refresh()
    transitions, spurious, terms, overruns = {}, {}, {}, {}
    for name, status in statuses.items():
        status = status or {}
        vrrp = status.get("vrrp") or {}
        transitions[name] = _sum(vrrp.get("transitions"))
        spurious[name] = int(vrrp.get("spurious_takeovers") or 0)
        terms[name] = int(status.get("term") or 0)
        for d in status.get("devices", []):
            overruns[f"{name}/{d['name']}"] = sum(g["overruns"] for g in d["groups"])
    audit = cluster.audit
    by_stream = {key: stream.lost for key, stream in audit.streams.items()}
    return Counters(
        time.time(),
        transitions,
        spurious,
        terms,
        overruns,
        audit.lost,
        audit.duplicates,
        by_stream,
    )


def describe_losses(cluster: DemoCluster, start: float, end: float) -> None:
    """Where a phase lost slots, as wall-clock ranges on stderr (for the post-mortem)."""
    for key, stream in sorted(cluster.audit.streams.items()):
        missing = [s for s in stream.missing() if start <= s * 0.1 <= end]
        if not missing:
            continue
        runs: list[list[int]] = []
        for slot in missing:
            if runs and slot == runs[-1][1] + 1:
                runs[-1][1] = slot
            else:
                runs.append([slot, slot])
        shown = ", ".join(
            f"{time.strftime('%H:%M:%S', time.localtime(a * 0.1))}.{a % 10}+{b - a + 1}"
            for a, b in runs[:8]
        )
        print(f"  {key}: {len(missing)} lost in {len(runs)} run(s): {shown}", file=sys.stderr)


# ---- the loads --------------------------------------------------------------------------------

Load = Callable[[DemoCluster, str, asyncio.Event], Awaitable[tuple[int, int]]]


async def idle_load(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
    """No load: the baseline, what polling this many tags costs this machine by itself."""
    await stop.wait()
    return 0, 0


async def pages_load(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            url = cluster.url(master) + "/"
            pages = [await open_page(browser, url, cluster.login) for _ in range(PAGES)]
            await stop.wait()
            errors = sum(len(p.errors) for p in pages)
            for p in pages:
                await p.context.close()
            return len(pages), errors
        finally:
            await browser.close()


async def rest_load(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
    """REST_RATE requests/s from bench.rest_client, a process of its own at nice 10 (on a site
    the clients are other machines; here they must not win a CPU contest with the node)."""
    assert cluster.workdir is not None
    token_file = cluster.workdir / "rest_client.token"
    token_file.touch(mode=0o600)
    token_file.write_text(cluster.tokens[master])
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.rest_client",
        cluster.url(master),
        str(token_file),
        str(REST_RATE),
        *REST_PATHS,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            client.terminate()
        out, _ = await client.communicate()
    counts = json.loads(out or b"{}")
    return int(counts.get("done", 0)), int(counts.get("errors", 0))


def changed_config(text: str, add: bool) -> str:
    """The node's config with a tag added to every group (or the added ones removed)."""
    doc = yaml.safe_load(text)
    for device in doc["devices"]:
        for index, group in enumerate(device["groups"]):
            tags = [t for t in group["tags"] if t["name"] != "bench_added"]
            if add:
                tags.append({"name": "bench_added", "address": 90 + index, "type": "uint16"})
            group["tags"] = tags
    return yaml.safe_dump(doc, sort_keys=False)


def reconfig_load(every_s: float) -> Load:
    async def run(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
        assert cluster.workdir is not None
        admin = create_token(cluster.workdir / master, Role.ADMIN, "bench")
        path = cluster.workdir / f"{master}.yaml"
        original = path.read_text()
        done, errors, add = 0, 0, True
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {admin}"}, timeout=60
        ) as client:
            while not stop.is_set():
                answer = await client.put(
                    cluster.url(master) + "/api/v1/config", content=changed_config(original, add)
                )
                if answer.status_code == 200:
                    done += 1
                else:
                    errors += 1
                    print(f"config change refused: {answer.text[:300]}", file=sys.stderr)
                add = not add
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
        return done, errors

    return run


def editor_load(every_s: float) -> Load:
    async def run(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
        assert cluster.workdir is not None
        admin = create_token(cluster.workdir / master, Role.ADMIN, "bench-editor")
        base = cluster.url(master) + "/api/v1/devices"
        done, errors, scale = 0, 0, 2.0
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {admin}"}, timeout=120
        ) as client:
            device = (await client.get(base)).json()["devices"][0]
            group = device["groups"][0]
            tag = dict(group["tags"][0])
            url = f"{base}/{device['name']}/groups/{group['name']}/tags/{tag['name']}"
            while not stop.is_set():
                started = time.monotonic()
                answer = await client.put(url, json={**tag, "scale": scale})
                if answer.status_code == 200:
                    done += 1
                    print(f"editor: edit took {time.monotonic() - started:.2f} s", file=sys.stderr)
                else:
                    errors += 1
                    print(f"editor: edit refused: {answer.text[:300]}", file=sys.stderr)
                scale = 3.0 if scale == 2.0 else 2.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
        return done, errors

    return run


async def burners_load(cluster: DemoCluster, master: str, stop: asyncio.Event) -> tuple[int, int]:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        await stop.wait()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    return len(burners), 0


# ---- one phase --------------------------------------------------------------------------------


async def watch_roles(cluster: DemoCluster, stop: asyncio.Event) -> int:
    """Role changes of either node, polled every 0.5 s."""
    changes, last = 0, dict((n, cluster.role_of(n)) for n in cluster.nodes)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        await cluster.refresh()
        now = {n: cluster.role_of(n) for n in cluster.nodes}
        changes += sum(1 for n in now if now[n] is not None and now[n] != last[n])
        last = {n: now[n] or last[n] for n in now}
    return changes


async def run_phase(
    name: str,
    load: Load,
    cluster: DemoCluster,
    master: str,
    address: str,
    listener: AdvertListener,
    seconds: float,
) -> PhaseResult:
    print(f"phase {name}: {seconds:.0f} s ...", file=sys.stderr, flush=True)
    before = await counters(cluster)
    stop = asyncio.Event()
    loading = asyncio.create_task(load(cluster, master, stop))
    roles = asyncio.create_task(watch_roles(cluster, stop))
    await asyncio.sleep(seconds)
    stop.set()
    done, errors = await loading
    role_changes = await roles
    await asyncio.sleep(2.0)  # what was polled last is published and seen
    after = await counters(cluster)
    await cluster.refresh()
    describe_losses(cluster, before.at, after.at)
    return PhaseResult(
        phase=name,
        seconds=seconds,
        load_done=done,
        load_errors=errors,
        vrrp_transitions=sum(after.transitions[n] - before.transitions[n] for n in after.terms),
        spurious_takeovers=sum(after.spurious[n] - before.spurious[n] for n in after.terms),
        role_changes=role_changes,
        terms_taken=max(after.terms.values()) - max(before.terms.values()),
        adverts=advert_gaps(listener.between(address, before.at, after.at), ADVERT_INTERVAL_S),
        lost=after.lost - before.lost,
        duplicates=after.duplicates - before.duplicates,
        overruns=overruns_between(before.overruns, after.overruns),
        master_kept_role=cluster.master() == master,
        lost_by_stream={
            k: n - before.lost_by_stream.get(k, 0)
            for k, n in after.lost_by_stream.items()
            if n != before.lost_by_stream.get(k, 0)
        },
    )


@contextlib.asynccontextmanager
async def running_pair(
    tags: int, vrrp_port: int, workdir: Path | None = None
) -> AsyncIterator[DemoCluster]:
    cluster = DemoCluster(
        standby="hot",
        workdir=workdir,
        # Ten PLCs of 1,000 tags, each on its own connection (as a plant has them). On one
        # shared connection, 80 requests in turn per 100 ms per node leave the poll path no
        # slack at all: idle polls already took ~96 ms (p90 200 ms) on this 2-core box.
        devices=devices_for(tags, own_links=True),
        plc_host="0.0.0.0",
        load_registers=min(tags, 1000),
        vrrp_port=vrrp_port,
        advert_listeners=(LISTENER,),
    )
    async with cluster:
        if PLC_NICE and cluster.plc is not None and cluster.plc.pid is not None:
            # The simulator stands for the plant's PLCs, which are other machines: it must not
            # lose a CPU contest on this box either (see bench.rest_client for the clients).
            os.setpriority(os.PRIO_PROCESS, cluster.plc.pid, PLC_NICE)
        await cluster.wait_for(cluster.steady, 120.0, "a steady pair")
        yield cluster


async def main_async(args: argparse.Namespace) -> list[PhaseResult]:
    loads: dict[str, Load] = {
        "idle": idle_load,
        "pages": pages_load,
        "rest": rest_load,
        "reconfig": reconfig_load(args.reconfig_every),
        "editor": editor_load(args.reconfig_every),
        "burners": burners_load,
    }
    vrrp_port = shared_udp_port(("127.0.0.2", "127.0.0.3", LISTENER))
    results = []
    with AdvertListener(vrrp_port) as listener:
        async with running_pair(args.tags, vrrp_port, args.workdir) as cluster:
            master = cluster.master()
            assert master is not None and cluster.specs is not None
            address = next(s.address for s in cluster.specs if s.name == master)
            await asyncio.sleep(args.settle)
            for name in args.phases:
                results.append(
                    await run_phase(
                        name, loads[name], cluster, master, address, listener, args.duration
                    )
                )
                await asyncio.sleep(args.settle)
    return results


COLUMNS = (
    "phase", "s", "load done / errors", "VRRP transitions", "spurious takeovers", "role changes",
    "terms taken", "adverts", "max advert gap ms", "gaps > 1.5x", "lost", "duplicates",
    "overruns",
)  # fmt: skip


def table_rows(results: list[PhaseResult]) -> list[list[Any]]:
    return [
        [
            r.phase,
            f"{r.seconds:.0f}",
            f"{r.load_done} / {r.load_errors}",
            r.vrrp_transitions,
            r.spurious_takeovers,
            r.role_changes,
            r.terms_taken,
            r.adverts.adverts,
            r.adverts.max_gap_ms,
            r.adverts.late,
            r.lost,
            r.duplicates,
            r.overruns,
        ]
        for r in results
    ]


def passed(r: PhaseResult) -> bool:
    gap_ok = r.adverts.max_gap_ms is not None and r.adverts.max_gap_ms <= 1500 * ADVERT_INTERVAL_S
    return (
        r.vrrp_transitions == 0
        and r.spurious_takeovers == 0
        and r.role_changes == 0
        and r.terms_taken == 0
        and gap_ok
        and r.lost == 0
        and r.duplicates == 0
        and r.master_kept_role
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=10_000, help="tags, 1,000 per device")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--reconfig-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between phases")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--quick", action="store_true", help="20 s per phase (a smoke run)")
    parser.add_argument("--output", default="load_isolation", help="results/<output>.json")
    parser.add_argument("--workdir", type=Path, help="keep the nodes' logs and data here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.reconfig_every, args.settle = 20.0, 8.0, 2.0
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}: choose from {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(main_async(args))
    title = (
        f"Load isolation: hot standby pair, {args.tags:,} tags every 0.1 s, "
        f"VRRPv3 {ADVERT_INTERVAL_S} s over UDP, {args.duration:.0f} s per phase"
    )
    print(table(title, COLUMNS, table_rows(results)))
    config = {
        "tags": args.tags,
        "advert_interval_s": ADVERT_INTERVAL_S,
        "duration_s": args.duration,
        "reconfig_every_s": args.reconfig_every,
        "pages": PAGES,
        "rest_rate": REST_RATE,
        "burners": BURNERS,
    }
    rows = [{**asdict(r), "passed": passed(r)} for r in results]
    path = write_json(args.output, {"config": config, "results": rows})
    print(f"\nwrote {path}")
    return 0 if all(passed(r) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
