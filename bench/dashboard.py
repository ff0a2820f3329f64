"""Dashboard cost at plant scale: the page's main thread, its first paint, how soon tags show,
what each open page costs the master hub, and whether the master's VRRP adverts stay on time.

Per tag count (``--tags 1000,10000``, 1,000 tags per device, all polled every 100 ms, every
value changing every poll): the demo's loopback pair (two ``tandem run`` nodes, VRRPv3 at
0.1 s over the UDP transport between 127.0.0.2 and 127.0.0.3, hot standby by default, one
PLC simulator, mosquitto) is started, then three windows of ``--window`` seconds are
measured on the master: no page open, one page, three pages (each in its own browser
context, so none is a throttled background tab). Real headless Chromium (Debian's).

* **page busy %**: main-thread busy time of the first page over the window, from the
  DevTools Performance domain (``Performance.getMetrics``: delta ``TaskDuration`` / delta
  ``Timestamp``); **page CPU %** the same with ``ThreadTime``, the CPU the main thread
  used, which unlike wall time does not grow when other processes hold the cores.
* **first paint ms**, **tags visible ms**: since navigation start; "visible" is the first
  tag row with a value in the DOM (a MutationObserver installed before the page loads).
* **hub CPU %**: the master's hub process (utime + stime from /proc) over the window, in %
  of one core; per viewer = (with pages - without) / pages. An HA node runs VRRP and the HA
  core in a warden process and the hub (API included) in a child process; the warden's CPU
  is recorded in the JSON too.
* **advert gaps**: the master also sends its adverts to a listener on 127.0.0.9 (kernel
  receive timestamps); the longest gap between two adverts in the window, and how many gaps
  exceeded 1.5 x the advert interval.

Everything runs on this machine: Chromium competes with the hub for the same cores, which
is harsher than a browser on an operator's PC. Run as root or not; no namespaces needed.

Usage: ``.venv/bin/python -m bench.dashboard [--tags 1000,10000] [--window 15] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are importable from the root
    sys.path.insert(0, str(ROOT))

from playwright.async_api import (  # noqa: E402
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    async_playwright,  # noqa: E402
)

from bench.report import table, write_json  # noqa: E402
from tandem.demo import DemoCluster  # noqa: E402
from tandem.demo.pair import ADVERT_INTERVAL_S, shared_udp_port  # noqa: E402
from tests.integration.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.integration.plc import load_device  # noqa: E402

TAGS_PER_DEVICE = 1_000
INTERVAL_S = 0.1
LISTENER = "127.0.0.9"  # receives the master's adverts; Linux routes all of 127/8 to lo
CLK_TCK = os.sysconf("SC_CLK_TCK")
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("qq")

# Installed before any page script: the moment the first tag row with a value is in the DOM.
TAGS_VISIBLE_SCRIPT = """
(() => {
  const shown = () => {
    const cell = document.querySelector("tbody#tags tr[data-key] td.value");
    return cell !== null && cell.textContent.trim() !== "";
  };
  new MutationObserver((_, observer) => {
    if (window.__tagsVisible === undefined && shown()) {
      window.__tagsVisible = performance.now();
      observer.disconnect();
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
})();
"""


# ---- the master's adverts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdvertGaps:
    adverts: int
    max_gap_ms: float | None
    p99_gap_ms: float | None
    late: int  # gaps longer than 1.5 x the advert interval


def advert_gaps(stamps: list[float], interval_s: float) -> AdvertGaps:
    """Gap statistics of advert arrival times (seconds, sorted)."""
    gaps = sorted((b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False))
    if not gaps:
        return AdvertGaps(len(stamps), None, None, 0)
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    late = sum(1 for g in gaps if g > 1.5 * interval_s * 1000)
    return AdvertGaps(len(stamps), round(gaps[-1], 1), round(p99, 1), late)


class AdvertListener:
    """Records when adverts reach LISTENER (kernel receive stamps, so a busy thread is no error)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LISTENER, port))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.2)
        self.stamps: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advert-listener", daemon=True)

    def __enter__(self) -> AdvertListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, ancillary, _, (src, _) = self._sock.recvmsg(2048, _TIMESPEC.size * 2)
            except TimeoutError:
                continue
            except OSError:
                return
            stamp = time.time()
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, _SO_TIMESTAMPNS):
                    seconds, nanos = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    stamp = seconds + nanos / 1e9
            self.stamps.append((stamp, src))

    def between(self, src: str, start: float, end: float) -> list[float]:
        return sorted(t for t, s in list(self.stamps) if s == src and start <= t <= end)


# ---- pages ------------------------------------------------------------------------------------


@dataclass
class OpenPage:
    context: BrowserContext
    page: Page
    cdp: CDPSession
    first_paint_ms: float | None = None
    tags_visible_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    requests: list[list[Any]] = field(default_factory=list)  # [path, start ms, end ms]

    async def task_seconds(self) -> tuple[float, float, float]:
        """(TaskDuration, ThreadTime, Timestamp) of the page's main thread, in seconds.

        TaskDuration is wall time spent in tasks (what "busy" means to a user, and what grows
        when the machine is loaded); ThreadTime is the CPU time the main thread used.
        """
        metrics = (await self.cdp.send("Performance.getMetrics"))["metrics"]
        values = {m["name"]: m["value"] for m in metrics}
        return values["TaskDuration"], values["ThreadTime"], values["Timestamp"]


async def open_page(
    browser: Browser, url: str, login: tuple[str, str], timeout_s: float = 30.0
) -> OpenPage:
    """A fresh browser context, logged in (over the API, so the page's own load is measured
    cold), on the dashboard at `url`."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    user, password = login
    answer = await context.request.post(
        url.rstrip("/") + "/api/v1/login", data={"username": user, "password": password}
    )
    if not answer.ok:
        raise RuntimeError(f"login as {user} refused: HTTP {answer.status}")
    await context.add_init_script(TAGS_VISIBLE_SCRIPT)
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    opened = OpenPage(context, page, cdp)
    page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
    await page.goto(url)
    # A function, not an expression: the page's CSP forbids eval, which an expression needs.
    await page.wait_for_function(
        "() => window.__tagsVisible !== undefined", timeout=timeout_s * 1000
    )
    opened.tags_visible_ms = round(await page.evaluate("window.__tagsVisible"), 1)
    paint = await page.evaluate(
        "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null"
    )
    opened.first_paint_ms = None if paint is None else round(paint, 1)
    opened.requests = await page.evaluate(
        """() => performance.getEntriesByType("resource").map((e) => [
            e.name.replace(location.origin, ""), Math.round(e.startTime), Math.round(e.responseEnd),
        ])"""
    )
    return opened


# ---- one measured window ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def hub_process(node_pid: int) -> int:
    """The process that serves the API: an HA node's hub child (tandem.ha.hubproc), or the node."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == node_pid and b"tandem.ha.hubproc" in cmdline:
            return int(entry.name)
    return node_pid


@dataclass(frozen=True, slots=True)
class Window:
    pages: int
    hub_cpu_pct: float  # the hub process: API, live view, pollers, outbox, publisher
    warden_cpu_pct: float | None  # VRRP and the HA core, when they run in a process of their own
    page_busy_pct: list[float]  # TaskDuration
    page_cpu_pct: list[float]  # ThreadTime
    adverts: AdvertGaps
    overruns: int  # polls the master's hub missed during the window


@dataclass(frozen=True, slots=True)
class Master:
    """The node measured: its process, its advert source address, and its API."""

    pid: int
    address: str
    cluster: DemoCluster
    name: str

    async def overruns(self) -> int:
        """Polls the master's groups have missed so far: the hub falling behind shows here."""
        status = (await self.cluster.refresh()).get(self.name) or {}
        return sum(g["overruns"] for d in status.get("devices", []) for g in d["groups"])


async def measure(
    pages: list[OpenPage], master: Master, listener: AdvertListener, seconds: float
) -> Window:
    hub = hub_process(master.pid)
    pids = [hub] if hub == master.pid else [hub, master.pid]
    tasks0 = [await p.task_seconds() for p in pages]
    overruns0 = await master.overruns()
    cpu0, wall0, t0 = [cpu_seconds(p) for p in pids], time.monotonic(), time.time()
    await asyncio.sleep(seconds)
    cpu1, wall1, t1 = [cpu_seconds(p) for p in pids], time.monotonic(), time.time()
    overruns1 = await master.overruns()
    tasks1 = [await p.task_seconds() for p in pages]
    pairs = list(zip(tasks0, tasks1, strict=True))
    pct = [round(100 * (b - a) / (wall1 - wall0), 1) for a, b in zip(cpu0, cpu1, strict=True)]
    return Window(
        pages=len(pages),
        hub_cpu_pct=pct[0],
        warden_cpu_pct=pct[1] if len(pct) > 1 else None,
        page_busy_pct=[round(100 * (b[0] - a[0]) / (b[2] - a[2]), 1) for a, b in pairs],
        page_cpu_pct=[round(100 * (b[1] - a[1]) / (b[2] - a[2]), 1) for a, b in pairs],
        adverts=advert_gaps(listener.between(master.address, t0, t1), ADVERT_INTERVAL_S),
        overruns=overruns1 - overruns0,
    )


# ---- one tag count ----------------------------------------------------------------------------


def devices_for(tags: int, own_links: bool = False) -> Callable[[int], list[dict[str, Any]]]:
    """Devices of TAGS_PER_DEVICE tags on the simulator. By default they share its address,
    so one TCP connection (a gateway's) carries them all, one request at a time; with
    `own_links` each is a PLC of its own at 127.0.1.<n> (the simulator listening on 0.0.0.0)."""
    count = max(1, tags // TAGS_PER_DEVICE)
    per_device = min(tags, TAGS_PER_DEVICE)

    def host(i: int) -> str:
        return f"127.0.1.{i}" if own_links else "127.0.0.1"

    return lambda port: [
        load_device(f"plc{i}", port, per_device, interval=INTERVAL_S, host=host(i))
        for i in range(1, count + 1)
    ]


@contextlib.asynccontextmanager
async def running_pair(tags: int, standby: str, vrrp_port: int) -> AsyncIterator[DemoCluster]:
    cluster = DemoCluster(
        standby="cold" if standby == "cold" else "hot",
        devices=devices_for(tags),
        load_registers=min(tags, TAGS_PER_DEVICE),
        vrrp_port=vrrp_port,
        advert_listeners=(LISTENER,),
    )
    async with cluster:
        await cluster.wait_for(cluster.steady, 90.0, "a steady pair")
        yield cluster


async def run_case(browser: Browser, tags: int, args: argparse.Namespace) -> dict[str, Any]:
    vrrp_port = shared_udp_port(("127.0.0.2", "127.0.0.3", LISTENER))
    with AdvertListener(vrrp_port) as listener:
        async with running_pair(tags, args.standby, vrrp_port) as cluster:
            name = cluster.master()
            assert name is not None and cluster.specs is not None
            pid = cluster.nodes[name].pid
            assert pid is not None
            address = next(s.address for s in cluster.specs if s.name == name)
            master = Master(pid, address, cluster, name)
            url = cluster.url(name) + "/"
            await asyncio.sleep(args.settle)
            windows = [await measure([], master, listener, args.window)]
            pages = [await open_page(browser, url, cluster.login)]
            await asyncio.sleep(args.settle)
            windows.append(await measure(pages, master, listener, args.window))
            pages += [await open_page(browser, url, cluster.login) for _ in range(2)]
            await asyncio.sleep(args.settle)
            windows.append(await measure(pages, master, listener, args.window))
            errors = [e for p in pages for e in p.errors]
            first = pages[0]
            for p in pages:
                await p.context.close()
            await cluster.refresh()
            still_master = cluster.master() == name
    return summarize(tags, windows, first, errors, still_master)


def summarize(
    tags: int, windows: list[Window], first: OpenPage, errors: list[str], still_master: bool
) -> dict[str, Any]:
    idle, one, three = windows
    return {
        "tags": tags,
        "page_busy_pct": one.page_busy_pct[0],
        "page_cpu_pct": one.page_cpu_pct[0],
        "page_busy_pct_3_pages": three.page_busy_pct,
        "page_cpu_pct_3_pages": three.page_cpu_pct,
        "first_paint_ms": first.first_paint_ms,
        "tags_visible_ms": first.tags_visible_ms,
        "hub_cpu_pct_idle": idle.hub_cpu_pct,
        "hub_cpu_pct_1_page": one.hub_cpu_pct,
        "hub_cpu_pct_3_pages": three.hub_cpu_pct,
        "hub_cpu_per_viewer_1": round(one.hub_cpu_pct - idle.hub_cpu_pct, 1),
        "hub_cpu_per_viewer_3": round((three.hub_cpu_pct - idle.hub_cpu_pct) / 3, 1),
        "warden_cpu_pct": [w.warden_cpu_pct for w in windows],
        "adverts": {str(w.pages): asdict(w.adverts) for w in windows},
        "overruns": {str(w.pages): w.overruns for w in windows},
        "first_page_requests": first.requests,
        "master_kept_role": still_master,
        "page_errors": errors,
    }


# ---- output -----------------------------------------------------------------------------------

COLUMNS = (
    "tags", "page busy %", "page CPU %", "first paint ms", "tags visible ms", "hub CPU % idle",
    "hub CPU +%/viewer (1 page)", "hub CPU +%/viewer (3 pages)",
    "advert max gap ms (0/1/3 pages)", "gaps > 1.5x (0/1/3)", "hub overruns (0/1/3)",
)  # fmt: skip


def table_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in results:
        adverts = [r["adverts"][k] for k in ("0", "1", "3")]
        rows.append(
            [
                r["tags"],
                r["page_busy_pct"],
                r["page_cpu_pct"],
                r["first_paint_ms"],
                r["tags_visible_ms"],
                r["hub_cpu_pct_idle"],
                r["hub_cpu_per_viewer_1"],
                r["hub_cpu_per_viewer_3"],
                " / ".join(
                    "-" if a["max_gap_ms"] is None else f"{a['max_gap_ms']:.0f}" for a in adverts
                ),
                " / ".join(str(a["late"]) for a in adverts),
                " / ".join(str(r["overruns"][k]) for k in ("0", "1", "3")),
            ]
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", default="1000,10000", help="comma-separated tag counts")
    parser.add_argument("--window", type=float, default=15.0, help="seconds per measured window")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each window")
    parser.add_argument("--standby", choices=("hot", "cold"), default="hot")
    parser.add_argument("--quick", action="store_true", help="5 s windows, 1 s settle (smoke)")
    parser.add_argument("--output", default="dashboard", help="results/<output>.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.window, args.settle = 5.0, 1.0
    args.tag_counts = [int(t) for t in args.tags.split(",") if t.strip()]
    return args


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for tags in args.tag_counts:
                print(f"measuring {tags:,} tags ...", file=sys.stderr, flush=True)
                results.append(await run_case(browser, tags, args))
        finally:
            await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(main_async(args))
    title = (
        f"Dashboard at scale: {args.standby} standby pair, polls every {INTERVAL_S} s, "
        f"VRRPv3 {ADVERT_INTERVAL_S} s over UDP, {args.window:.0f} s windows"
    )
    print(table(title, COLUMNS, table_rows(results)))
    config = {
        "tags_per_device": TAGS_PER_DEVICE,
        "interval_s": INTERVAL_S,
        "advert_interval_s": ADVERT_INTERVAL_S,
        "standby": args.standby,
        "window_s": args.window,
        "settle_s": args.settle,
    }
    path = write_json(args.output, {"config": config, "results": results})
    print(f"\nwrote {path}")
    return 0 if all(r["master_kept_role"] and not r["page_errors"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
