"""Opening one VRRP instance: its transport, virtual IPs, notify hooks and driver, in order.

Shared by `tandem keepalived` and the HA node so both run an instance the same way; every
resource is entered on the caller's exit stack and released in reverse order on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from ipaddress import IPv4Interface
from typing import Any, Literal

from tandem.hooks import NotifyConfig, NotifyRunner
from tandem.net.driver import VrrpDriver
from tandem.net.raw import RawTransport
from tandem.net.udp import UdpTransport
from tandem.net.vip import VipManager, VipPlacement
from tandem.vrrp.types import InstanceConfig, Transition


async def open_instance(
    stack: contextlib.AsyncExitStack,
    config: InstanceConfig,
    *,
    transport: Literal["raw", "udp"],
    interface: str | None,
    udp_port: int,
    notify: NotifyConfig,
    manage_vips: bool = True,
    on_transition: Callable[[Transition], None] | None = None,
    vip_placements: Mapping[IPv4Interface, VipPlacement] | None = None,
) -> VrrpDriver:
    """A ready driver for `config`; raw protocol 112 on `interface`, or UDP on `udp_port`.

    `vip_placements` puts single VIPs on another interface, or with a label, broadcast or
    scope (keepalived's virtual_ipaddress options); the others go on `interface`.
    """
    if transport == "udp":
        peers = [(str(p), udp_port) for p in config.unicast_peers]
        wire: Any = UdpTransport(
            (str(config.local_address), udp_port), peers, vrid_filter={config.vrid}
        )
    else:
        wire = RawTransport(
            interface or "",
            local_address=config.local_address,
            multicast=not config.unicast_peers,
            vrid_filter={config.vrid},
        )
    wire = await stack.enter_async_context(wire)
    vips = (
        stack.enter_context(VipManager(interface, placements=vip_placements))
        if manage_vips and config.vips and interface
        else None
    )
    notifier = await stack.enter_async_context(NotifyRunner(notify))
    return VrrpDriver(config, wire, vips=vips, notifier=notifier, on_transition=on_transition)
