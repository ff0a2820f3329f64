"""The failover engine as a process: keepalived.conf in, VRRP instances running until a signal.

This is the composition root of `tandem keepalived`: it turns the parsed config into drivers,
transports, VIP control, track scripts and notify hooks, runs them in one TaskGroup and shuts
them down in order (priority-0 resign, VIPs removed, notify_stop awaited) on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tandem.config.keepalived import KeepalivedConfig, to_instance_config
from tandem.health.script import CheckResult, ScriptCheck
from tandem.hooks import NotifyConfig
from tandem.net.driver import VrrpDriver
from tandem.net.instance import open_instance
from tandem.net.raw import interface_address
from tandem.vrrp.priority import CheckState, effective

log = logging.getLogger(__name__)

TransportKind = Literal["raw", "udp"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine reaches its peers; raw protocol 112 unless the network forbids it."""

    transport: TransportKind = "raw"
    udp_port: int = 5112
    manage_vips: bool = True
    stats_file: Path = Path("/tmp/tandem-keepalived.json")


class TrackedPriority:
    """Keeps the latest result of every check an instance tracks and recomputes its priority."""

    def __init__(self, driver: VrrpDriver, base: int, weights: dict[str, int]) -> None:
        self.driver = driver
        self.base = base
        self.states = {
            name: CheckState(name=name, ok=None, weight=w) for name, w in weights.items()
        }

    def initial(self) -> None:
        if self.states:
            self.driver.checks_changed(effective(self.base, self.states.values()))

    def update(self, result: CheckResult) -> None:
        old = self.states.get(result.name)
        if old is None:
            return
        self.states[result.name] = CheckState(name=old.name, ok=result.ok, weight=old.weight)
        self.driver.checks_changed(effective(self.base, self.states.values()))


def engine_stats(drivers: list[VrrpDriver]) -> dict[str, object]:
    """A snapshot of every instance, like keepalived's data/stats dumps, as JSON-able data."""
    return {
        d.config.name: {
            "state": d.state.value,
            "priority": d.machine.effective_priority,
            "master": str(d.machine.master_address) if d.machine.master_address else None,
            "adverts_sent": d.stats.adverts_sent,
            "adverts_received": d.stats.adverts_received,
            "drops": dict(d.stats.drops),
            "mismatched_peers": dict(d.stats.mismatched_peers),
            "transitions": [
                {"old": t.old.value, "new": t.new.value, "reason": t.reason.value}
                for t in d.stats.transitions
            ],
            "transition_counts": dict(d.stats.transition_counts),
        }
        for d in drivers
    }


def write_stats(path: Path, drivers: list[VrrpDriver]) -> None:
    """Write the snapshot atomically, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(engine_stats(drivers), indent=2))
    os.replace(tmp, path)


async def run_engine(cfg: KeepalivedConfig, options: EngineOptions = EngineOptions()) -> int:
    """Run every instance of a keepalived config until SIGTERM/SIGINT; 0 on a clean stop.

    SIGUSR1 writes a JSON snapshot (states, priorities, adverts, drops by reason, transitions)
    to `options.stats_file`, as keepalived writes its data file.
    """
    drivers: list[VrrpDriver] = []
    trackers: dict[str, list[TrackedPriority]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for inst in cfg.instances:
            local = inst.unicast_src_ip or interface_address(inst.interface)
            icfg = to_instance_config(inst, cfg, local)
            driver = await open_instance(
                stack,
                icfg,
                transport=options.transport,
                interface=inst.interface,
                udp_port=options.udp_port,
                notify=NotifyConfig(
                    instance=inst.name,
                    notify_master=inst.notify_master,
                    notify_backup=inst.notify_backup,
                    notify_fault=inst.notify_fault,
                    notify_stop=inst.notify_stop,
                    notify=inst.notify,
                    fifo=cfg.globals.notify_fifo,
                ),
                manage_vips=options.manage_vips,
            )
            weights = {
                t.name: cfg.scripts[t.name].weight
                if t.weight_override is None
                else t.weight_override
                for t in inst.track_scripts
            }
            tracker = TrackedPriority(driver, icfg.priority, weights)
            tracker.initial()
            for name in weights:
                trackers.setdefault(name, []).append(tracker)
            drivers.append(driver)

        def fan_out(name: str) -> Callable[[CheckResult], None]:
            def update(result: CheckResult) -> None:
                for tracker in trackers[name]:
                    tracker.update(result)

            return update

        checks = [
            ScriptCheck(
                s.name,
                s.command,
                interval=s.interval,
                timeout=s.timeout,
                rise=s.rise,
                fall=s.fall,
                weight=s.weight,
                user=s.user,
                on_change=fan_out(s.name),
            )
            for s in cfg.scripts.values()
            if s.name in trackers
        ]

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [d.stop() for d in drivers])
        loop.add_signal_handler(signal.SIGUSR1, write_stats, options.stats_file, drivers)
        try:
            async with asyncio.TaskGroup() as tg:
                check_tasks = [tg.create_task(c.run(), name=f"check-{c.name}") for c in checks]
                await asyncio.gather(
                    *(tg.create_task(d.run(), name=f"vrrp-{d.config.name}") for d in drivers)
                )
                for task in check_tasks:
                    task.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
        write_stats(options.stats_file, drivers)
    log.info("stopped cleanly")
    return 0
