"""The failover engine as a process: keepalived.conf in, VRRP instances running until a signal.

This is the composition root of `tandem keepalived`: it turns the parsed config into drivers,
transports, VIP control, track scripts and notify hooks, runs them in one TaskGroup and shuts
them down in order (priority-0 resign, VIPs removed, notify_stop awaited) on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Literal

from tandem.config.keepalived import KeepalivedConfig, VrrpInstance, to_instance_config
from tandem.health.script import CheckResult, ScriptCheck
from tandem.hooks import NotifyConfig, NotifyRunner
from tandem.net.driver import VrrpDriver
from tandem.vrrp.priority import CheckState, effective

log = logging.getLogger(__name__)

TransportKind = Literal["raw", "udp"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine reaches its peers; raw protocol 112 unless the network forbids it."""

    transport: TransportKind = "raw"
    udp_port: int = 5112
    manage_vips: bool = True


class InterfaceVips:
    """Adds and removes an instance's VIPs on its interface, announcing them with gratuitous ARP."""

    def __init__(self, interface: str) -> None:
        from tandem.net.vip import VipManager

        self.interface = interface
        self._manager = VipManager(interface)

    def add(self, vips: Sequence[IPv4Interface]) -> None:
        self._manager.add(vips)

    def remove(self, vips: Sequence[IPv4Interface]) -> None:
        self._manager.remove(vips)

    def gratuitous_arp(self, vips: Sequence[IPv4Interface]) -> None:
        from tandem.net.vip import send_gratuitous_arp

        try:
            send_gratuitous_arp(self.interface, [v.ip for v in vips], count=1)
        except OSError as exc:
            log.warning("gratuitous ARP on %s failed: %s", self.interface, exc)


def interface_address(interface: str) -> IPv4Address:
    """keepalived's default unicast_src_ip: the interface's first IPv4 address."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=interface)
        if not links:
            raise OSError(f"interface {interface!r} does not exist")
        for msg in ipr.get_addr(family=2, index=links[0]):
            return IPv4Address(msg.get_attr("IFA_ADDRESS"))
    raise OSError(f"interface {interface!r} has no IPv4 address")


def _make_transport(inst: VrrpInstance, local: IPv4Address, options: EngineOptions) -> object:
    if options.transport == "udp":
        from tandem.net.udp import UdpTransport

        peers = [(str(p), options.udp_port) for p in inst.unicast_peers]
        return UdpTransport((str(local), options.udp_port), peers)
    from tandem.net.raw import RawTransport

    return RawTransport(
        inst.interface,
        local_address=local,
        multicast=not inst.unicast_peers,
        vrid_filter={inst.vrid},
    )


class TrackedPriority:
    """Keeps the latest result of every check an instance tracks and recomputes its priority."""

    def __init__(self, driver: VrrpDriver, base: int, weights: dict[str, int]) -> None:
        self.driver = driver
        self.base = base
        self.states = {name: CheckState(name=name, ok=None, weight=w) for name, w in weights.items()}

    def initial(self) -> None:
        if self.states:
            self.driver.checks_changed(effective(self.base, self.states.values()))

    def update(self, result: CheckResult) -> None:
        old = self.states.get(result.name)
        if old is None:
            return
        self.states[result.name] = CheckState(name=old.name, ok=result.ok, weight=old.weight)
        self.driver.checks_changed(effective(self.base, self.states.values()))


async def run_engine(cfg: KeepalivedConfig, options: EngineOptions = EngineOptions()) -> int:
    """Run every instance of a keepalived config until SIGTERM/SIGINT; 0 on a clean stop."""
    drivers: list[VrrpDriver] = []
    trackers: dict[str, list[TrackedPriority]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for inst in cfg.instances:
            local = inst.unicast_src_ip or interface_address(inst.interface)
            icfg = to_instance_config(inst, cfg, local)
            transport = await stack.enter_async_context(_make_transport(inst, local, options))
            notifier = await stack.enter_async_context(
                NotifyRunner(
                    NotifyConfig(
                        instance=inst.name,
                        notify_master=inst.notify_master,
                        notify_backup=inst.notify_backup,
                        notify_fault=inst.notify_fault,
                        notify_stop=inst.notify_stop,
                        notify=inst.notify,
                        fifo=cfg.globals.notify_fifo,
                    )
                )
            )
            vips = InterfaceVips(inst.interface) if options.manage_vips and icfg.vips else None
            driver = VrrpDriver(icfg, transport, vips=vips, notifier=notifier)
            weights = {
                t.name: t.weight_override
                if t.weight_override is not None
                else cfg.scripts[t.name].weight
                for t in inst.track_scripts
            }
            tracker = TrackedPriority(driver, icfg.priority, weights)
            tracker.initial()
            for name in weights:
                trackers.setdefault(name, []).append(tracker)
            drivers.append(driver)

        checks = [
            ScriptCheck(
                s.name,
                s.command,
                interval=s.interval,
                timeout=s.timeout,
                rise=s.rise,
                fall=s.fall,
                weight=s.weight,
                on_change=lambda r, ts=trackers[s.name]: [t.update(r) for t in ts],
            )
            for s in cfg.scripts.values()
            if s.name in trackers
        ]

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [d.stop() for d in drivers])
        try:
            async with asyncio.TaskGroup() as tg:
                check_tasks = [tg.create_task(c.run(), name=f"check-{c.name}") for c in checks]
                driver_tasks = [tg.create_task(d.run(), name=f"vrrp-{d.config.name}") for d in drivers]
                await asyncio.gather(*driver_tasks)
                for t in check_tasks:
                    t.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("stopped cleanly")
    return 0
