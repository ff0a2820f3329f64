"""The API's view of the hub's parts: poller status snapshots as API models."""

from __future__ import annotations

from tandem.api.view import DeviceInfo, GroupInfo, PathInfo, PublisherInfo
from tandem.hub.modbus import DeviceStatus
from tandem.hub.mqtt import PublisherStatus


def device_info(status: DeviceStatus) -> DeviceInfo:
    """The API's view of one poller's status."""
    return DeviceInfo(
        name=status.name,
        connected=status.connected,
        last_error=status.last_error,
        active_path=status.active_path,
        paths=[
            PathInfo(endpoint=p.endpoint, connected=p.connected, active=p.active, healthy=p.healthy)
            for p in status.paths
        ],
        path_switches=status.path_switches,
        groups=[
            GroupInfo(
                name=g.name,
                interval=g.interval,
                last_poll_ms=g.last_poll_ms,
                last_slot=g.last_slot,
                polls=g.polls,
                errors=g.errors,
                overruns=g.overruns,
                last_latency_ms=g.last_latency_ms,
            )
            for g in status.groups
        ],
    )


def publisher_info(pub: PublisherStatus) -> PublisherInfo:
    return PublisherInfo(
        connected=pub.connected,
        published_total=pub.published_total,
        publish_rate=pub.publish_rate,
        values_rate=pub.values_rate,
        last_error=pub.last_error,
        reconnects=pub.reconnects,
    )


__all__ = ["device_info", "publisher_info"]
