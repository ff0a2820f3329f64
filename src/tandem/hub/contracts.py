"""What the hub is made of, as contracts: the role gate, pollers, publishers, the HA hooks;
and the factory of the real pollers.

Fakes in unit tests and the real parts (DevicePoller, OpcUaPoller, MqttPublisher, HubSide)
meet here, so the hub depends on these shapes only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tandem.api.view import HaInfo
from tandem.config.hub import DeviceConfig, OpcUaDevice
from tandem.hub.modbus import (
    DeviceListener,
    DevicePoller,
    DeviceStatus,
    LinkPool,
    PollScheduler,
)
from tandem.hub.model import Sample
from tandem.hub.mqtt import PublisherStatus
from tandem.hub.outbox import Outbox


@dataclass(slots=True)
class RoleGate:
    """What this node may do right now; the HA layer sets it, the single node leaves it open."""

    role: str = "SINGLE"
    polling: bool = True
    publishing: bool = True
    term: int = 0
    phase: str | None = None

    @classmethod
    def initial(cls, standby: str | None) -> RoleGate:
        """The gate at start: open on a single node (no standby mode); closed on an HA node,
        whose HA layer opens what its role allows (a cold standby does not even poll)."""
        if standby is None:
            return cls()
        return cls(role="INIT", polling=standby != "cold", publishing=False)


class Poller(Protocol):
    """What the hub needs from a device poller (DevicePoller, or a fake in unit tests)."""

    paused: bool  # a warm standby's pollers stay connected but do not poll

    def status(self) -> DeviceStatus: ...

    def resume(self, next_slots: Mapping[str, int]) -> None: ...

    async def run(self) -> None: ...


class Publisher(Protocol):
    """What the hub needs from the publisher (MqttPublisher, or a fake in unit tests)."""

    def status(self) -> PublisherStatus: ...

    def notify(self) -> None: ...

    async def run(self) -> None: ...


PollerFactory = Callable[[DeviceConfig, str, Callable[[Sample], None]], Poller]
PublisherFactory = Callable[[Outbox, Callable[[], bool]], Publisher]


class HaHooks(Protocol):
    """What an HA layer adds to a hub, given at construction; a single node has none.

    The data path stays one way: the HA layer decides what is admitted (late slots of
    delivered streams are dropped before the append), hears what was stored, and wraps the
    publisher (term, signature and lease at send time). It never reaches into the pollers.
    """

    standby: str

    def make_publisher(self, outbox: Outbox, may_publish: Callable[[], bool]) -> Publisher: ...

    def admit(self, sample: Sample) -> bool: ...

    def stored(self, samples: list[Sample]) -> None: ...

    def ha_info(self) -> HaInfo | None: ...

    def vrrp_info(self) -> dict[str, Any] | None: ...

    async def switchover(self) -> dict[str, Any]: ...


def make_poller(
    device: DeviceConfig,
    source_node: str,
    emit: Callable[[Sample], None],
    links: LinkPool,
    on_event: DeviceListener,
    scheduler: PollScheduler,
) -> Poller:
    """The poller for a device's protocol (asyncua is imported only when a device needs it)."""
    if isinstance(device, OpcUaDevice):
        from tandem.hub.opcua_client import OpcUaPoller

        return OpcUaPoller(
            device, source_node=source_node, emit=emit, on_event=on_event, scheduler=scheduler
        )
    return DevicePoller(
        device,
        source_node=source_node,
        emit=emit,
        links=links,
        on_event=on_event,
        scheduler=scheduler,
    )


__all__ = [
    "HaHooks",
    "Poller",
    "PollerFactory",
    "Publisher",
    "PublisherFactory",
    "RoleGate",
    "make_poller",
]
