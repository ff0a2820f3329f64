"""`tandem demo`: start the pair, then the live view or the unattended scenario."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.demo.cluster import DemoCluster
from tandem.demo.pair import LOOPBACK, StandbyMode
from tandem.demo.scenario import (
    DemoTimings,
    anomaly_report,
    run_failover_scenario,
    scenario_exit_code,
)
from tandem.demo.view import AuditTotals, render_summary, results_table
from tandem.errors import TandemError
from tandem.signals import interrupt_on_sigint

INTERACTIVE_RESTART_S = 5.0  # how long a node killed by hand stays down in interactive mode
CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    scenario: str | None = None
    quick: bool = False
    standby: StandbyMode = "hot"
    workdir: Path | None = None
    no_color: bool = False


def run_demo(options: DemoOptions) -> int:
    """Blocking entry for `tandem demo`: 0 on success, 1 on a failed scenario or start."""
    from rich.console import Console

    console = Console(no_color=options.no_color, highlight=False, width=None)
    if not console.is_terminal:
        console.width = 160  # a pipe would otherwise wrap the results table at 80 columns
    interrupt_on_sigint()
    try:
        return asyncio.run(_main(options, console))
    except KeyboardInterrupt:
        console.print("stopped")
        return 130


async def _main(options: DemoOptions, console: Any) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (a test's timeout) and SIGHUP (the terminal closed) are treated like Ctrl-C:
    # clean up, then exit.
    for sig in CLEANUP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    try:
        async with DemoCluster(standby=options.standby, workdir=options.workdir) as cluster:
            console.print(f"work dir: {cluster.workdir}")
            plc_pid = cluster.plc.pid if cluster.plc else None
            broker_pid = cluster.broker.pid if cluster.broker else None
            console.print(f"PLC simulator: {LOOPBACK}:{cluster.plc_port} (pid {plc_pid})")
            console.print(f"MQTT broker:   {LOOPBACK}:{cluster.broker_port} (pid {broker_pid})")
            for name in cluster.names:
                console.print(f"dashboard {name}: {cluster.url(name)}/")
            user, password = cluster.login
            console.print(f"log in as {user} / {password} (operator: may switch over)")
            if options.scenario is None:
                await _interactive(cluster, console)
                return 0
            if options.scenario != "failover":
                console.print(f"unknown scenario {options.scenario!r} (known: failover)")
                return 2
            return await _scenario(cluster, console, options)
    except TandemError as exc:
        console.print(f"tandem demo: {exc}")
        return 1
    except asyncio.CancelledError:
        console.print("stopped; everything the demo started is gone")
        return 130
    finally:
        for sig in CLEANUP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _interactive(cluster: DemoCluster, console: Any) -> None:
    from rich.live import Live

    hint = (
        "Ctrl-C stops everything. Try: kill -9 <master pid>, or "
        f"tandem switchover --url {cluster.url(cluster.names[0])} "
        f"--token-file {cluster.token_file(cluster.names[0])}"
    )
    down_since: dict[str, float] = {}
    note = ""
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        while True:
            # A node that died (killed by hand) comes back after a while, so the switchback
            # can be watched too, as in the unattended scenario.
            now = time.monotonic()
            for name, proc in cluster.nodes.items():
                if proc.running:
                    down_since.pop(name, None)
                elif now - down_since.setdefault(name, now) >= INTERACTIVE_RESTART_S:
                    proc.start()
                    down_since.pop(name, None)
                    note = f"{time.strftime('%H:%M:%S')} the demo restarted {name}"
            snap = await cluster.snapshot(f"{hint}\n{note}" if note else hint)
            live.update(render_summary(snap))
            # A demo may run for hours: keep the arrivals the view needs, not all of them.
            if len(cluster.audit.arrivals) > 5000:
                del cluster.audit.arrivals[:-1000]
            await asyncio.sleep(0.25)


async def _scenario(cluster: DemoCluster, console: Any, options: DemoOptions) -> int:
    timings = DemoTimings.for_mode(options.quick)
    started = time.monotonic()
    if console.is_terminal:
        from rich.live import Live

        state = {"step": "starting"}
        live = Live(console=console, refresh_per_second=4)

        async def refresh_view() -> None:
            while True:
                live.update(render_summary(await cluster.snapshot(state["step"])))
                await asyncio.sleep(0.25)

        def progress(message: str) -> None:
            state["step"] = message
            live.console.log(message)

        with live:
            viewer = asyncio.create_task(refresh_view(), name="demo-view")
            try:
                results = await run_failover_scenario(cluster, timings, progress)
            finally:
                viewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await viewer
    else:

        def progress(message: str) -> None:
            console.print(f"[{time.monotonic() - started:5.1f} s] {message}")

        results = await run_failover_scenario(cluster, timings, progress)
    console.print(results_table(results, options.standby))
    totals = AuditTotals.of(cluster.audit)
    console.print(
        f"subscriber totals: {totals.messages} messages, {totals.lost} lost, "
        f"{totals.duplicates} duplicates, {totals.out_of_order} out of order"
    )
    for line in anomaly_report(cluster.audit):
        console.print(line)
    code = scenario_exit_code(results, options.standby)
    if options.standby == "cold":
        gaps = [r.lost for r in results]
        console.print(f"cold standby: the backup polls only once master; gaps {gaps} samples")
    console.print("RESULT: " + ("PASS" if code == 0 else "FAIL"))
    return code
