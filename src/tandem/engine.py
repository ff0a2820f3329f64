"""The failover engine as a process: keepalived.conf in, VRRP instances running until a signal.

This is the composition root of `tandem keepalived`: it turns the parsed config into drivers,
transports, VIP control, track scripts, tracked interfaces and notify hooks, runs them in one
TaskGroup and shuts them down in order (priority-0 resign, VIPs removed, notify_stop awaited)
on SIGTERM/SIGINT.
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
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Literal

from tandem.config.keepalived import KeepalivedConfig, VrrpInstance, to_instance_config
from tandem.health.script import CheckResult, ScriptCheck
from tandem.health.scriptplan import ScriptPlan, plan_scripts
from tandem.hooks import NotifyConfig
from tandem.net.driver import VrrpDriver
from tandem.net.instance import open_instance
from tandem.net.link import LinkWatcher
from tandem.net.raw import interface_address
from tandem.net.vip import VipPlacement
from tandem.vrrp.priority import CheckState, effective

log = logging.getLogger(__name__)

TransportKind = Literal["raw", "udp"]
INTERFACE_CHECK = "interface "  # prefix of a tracked interface's name among the checks


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine reaches its peers; raw protocol 112 unless the network forbids it."""

    transport: TransportKind = "raw"
    udp_port: int = 5112
    manage_vips: bool = True
    stats_file: Path = Path("/tmp/tandem-keepalived.json")


class TrackedPriority:
    """Keeps the latest result of every check an instance tracks and recomputes its priority.

    Checks are track scripts by name and tracked interfaces as "interface NAME"; both follow
    keepalived's weight rules (weight 0: down or failing means FAULT).
    """

    def __init__(self, driver: VrrpDriver, base: int, weights: dict[str, int]) -> None:
        self.driver = driver
        self.base = base
        self.states = {
            name: CheckState(name=name, ok=None, weight=w) for name, w in weights.items()
        }

    def initial(self) -> None:
        if self.states:
            self.driver.checks_changed(effective(self.base, self.states.values()))

    def seed(self, name: str, ok: bool | None) -> None:
        """Set a starting state without telling the driver (initial() does, once)."""
        old = self.states.get(name)
        if old is not None:
            self.states[name] = CheckState(name=old.name, ok=ok, weight=old.weight)

    def set(self, name: str, ok: bool | None) -> None:
        old = self.states.get(name)
        if old is None:
            return
        self.states[name] = CheckState(name=old.name, ok=ok, weight=old.weight)
        self.driver.checks_changed(effective(self.base, self.states.values()))

    def update(self, result: CheckResult) -> None:
        self.set(result.name, result.ok)


def tracked_interfaces(inst: VrrpInstance) -> dict[str, int]:
    """keepalived's interface tracking for one instance, as {interface: weight}.

    Its own interface (unless dont_track_primary), every track_interface (weight 0 unless
    given) and the interface of every VIP placed elsewhere with `dev` (unless no_track) go to
    FAULT when down; a weighted track_interface changes the priority instead.
    """
    tracked: dict[str, int] = {}
    if not inst.dont_track_primary:
        tracked[inst.interface] = 0
    for vip in inst.virtual_addresses:
        dev = vip.dev or inst.interface
        if vip.track and not (inst.dont_track_primary and dev == inst.interface):
            tracked.setdefault(dev, 0)
    for entry in inst.track_interfaces:
        tracked[entry.name] = entry.weight_override or 0
    return tracked


def vip_placements(inst: VrrpInstance) -> dict[IPv4Interface, VipPlacement]:
    """The VIPs that need more than "add it to the instance's interface"."""
    return {
        vip.address: VipPlacement(vip.dev or inst.interface, vip.label, vip.broadcast, vip.scope)
        for vip in inst.virtual_addresses
        if vip.dev or vip.label or vip.broadcast or vip.scope is not None
    }


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


def _notify_config(inst: VrrpInstance, cfg: KeepalivedConfig, plan: ScriptPlan) -> NotifyConfig:
    """Only the notify scripts the plan lets run, each as its user."""
    allowed = plan.notify.get(inst.name, {})
    commands = {key: cmd for key, cmd in inst.notify_commands().items() if key in allowed}
    return NotifyConfig(
        instance=inst.name,
        fifo=cfg.globals.notify_fifo,
        users=dict(allowed),
        fifo_owner=plan.fifo_owner,
        **commands,  # type: ignore[arg-type]
    )


@dataclass(slots=True)
class _Engine:
    """What run_engine builds, so each building step stays small."""

    cfg: KeepalivedConfig
    options: EngineOptions
    plan: ScriptPlan
    drivers: list[VrrpDriver]
    script_trackers: dict[str, list[TrackedPriority]]
    interface_trackers: dict[str, list[TrackedPriority]]

    async def open_instance(self, stack: contextlib.AsyncExitStack, inst: VrrpInstance) -> None:
        local = inst.unicast_src_ip or interface_address(inst.interface)
        icfg = to_instance_config(inst, self.cfg, local)
        driver = await open_instance(
            stack,
            icfg,
            transport=self.options.transport,
            interface=inst.interface,
            udp_port=self.options.udp_port,
            notify=_notify_config(inst, self.cfg, self.plan),
            manage_vips=self.options.manage_vips,
            vip_placements=vip_placements(inst),
        )
        # keepalived drops a disabled script from the instances that track it.
        weights = {
            t.name: self.cfg.scripts[t.name].weight
            if t.weight_override is None
            else t.weight_override
            for t in inst.track_scripts
            if t.name in self.plan.checks
        }
        interfaces = tracked_interfaces(inst) if self.options.transport == "raw" else {}
        weights.update({INTERFACE_CHECK + name: w for name, w in interfaces.items()})
        tracker = TrackedPriority(driver, icfg.priority, weights)
        for name in weights:
            if name.startswith(INTERFACE_CHECK):
                self.interface_trackers.setdefault(name.removeprefix(INTERFACE_CHECK), []).append(
                    tracker
                )
            else:
                self.script_trackers.setdefault(name, []).append(tracker)
        self.drivers.append(driver)

    def checks(self) -> list[ScriptCheck]:
        def fan_out(name: str) -> Callable[[CheckResult], None]:
            def update(result: CheckResult) -> None:
                for tracker in self.script_trackers[name]:
                    tracker.update(result)

            return update

        return [
            ScriptCheck(
                s.name,
                s.command,
                interval=s.interval,
                timeout=s.timeout,
                rise=s.rise,
                fall=s.fall,
                weight=s.weight,
                user=self.plan.checks[s.name],
                on_change=fan_out(s.name),
            )
            for s in self.cfg.scripts.values()
            if s.name in self.script_trackers
        ]

    def link_changed(self, name: str, up: bool) -> None:
        for tracker in self.interface_trackers.get(name, ()):
            tracker.set(INTERFACE_CHECK + name, up)

    def start_trackers(self, watcher: LinkWatcher | None) -> None:
        """Seed the interfaces' states from the watcher's first look, then apply every tracker."""
        if watcher is not None:
            for name, up in watcher.states.items():
                for tracker in self.interface_trackers.get(name, ()):
                    tracker.seed(INTERFACE_CHECK + name, up)
        everyone = [*self.script_trackers.values(), *self.interface_trackers.values()]
        for tracker in {id(t): t for group in everyone for t in group}.values():
            tracker.initial()


def log_plan(plan: ScriptPlan) -> None:
    for problem in plan.errors:
        log.error("%s", problem)
    for problem in plan.warnings:
        log.warning("%s", problem)


async def _run_tasks(engine: _Engine, watcher: LinkWatcher | None) -> None:
    drivers = engine.drivers
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for driver in drivers:
            driver.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    loop.add_signal_handler(signal.SIGUSR1, write_stats, engine.options.stats_file, drivers)
    try:
        async with asyncio.TaskGroup() as tg:
            helpers = [tg.create_task(c.run(), name=f"check-{c.name}") for c in engine.checks()]
            if watcher is not None:
                helpers.append(tg.create_task(watcher.run(), name="link-watcher"))
            await asyncio.gather(
                *(tg.create_task(d.run(), name=f"vrrp-{d.config.name}") for d in drivers)
            )
            for task in helpers:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(sig)


async def run_engine(cfg: KeepalivedConfig, options: EngineOptions = EngineOptions()) -> int:
    """Run every instance of a keepalived config until SIGTERM/SIGINT; 0 on a clean stop.

    SIGUSR1 writes a JSON snapshot (states, priorities, adverts, drops by reason, transitions)
    to `options.stats_file`, as keepalived writes its data file.
    """
    plan = plan_scripts(cfg)
    log_plan(plan)
    engine = _Engine(cfg, options, plan, [], {}, {})
    async with contextlib.AsyncExitStack() as stack:
        for inst in cfg.instances:
            await engine.open_instance(stack, inst)
        watcher: LinkWatcher | None = None
        if engine.interface_trackers:
            watcher = await stack.enter_async_context(
                LinkWatcher(engine.interface_trackers, engine.link_changed)
            )
        engine.start_trackers(watcher)
        await _run_tasks(engine, watcher)
        write_stats(options.stats_file, engine.drivers)
    log.info("stopped cleanly")
    return 0
