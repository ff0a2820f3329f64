"""Prometheus exposition of a Status snapshot: every metric is derived, none is kept here.

Metrics (all prefixed ``tandem_``; labels in braces):

- ``tandem_info{node}`` gauge, always 1: carries the Tandem node name.
- ``tandem_role{role}`` gauge: 1 for the current role, 0 for the other known roles
  (MASTER, BACKUP, FAULT, SINGLE); an unknown current role gets its own series at 1.
- ``tandem_term`` gauge: the HA fencing term this node holds or last saw.
- ``tandem_uptime_seconds`` gauge: seconds since the runtime started.
- ``tandem_device_connected{device}`` gauge: 1 while the Modbus connection is up.
- ``tandem_devices_connected`` gauge: how many devices are connected.
- ``tandem_devices`` gauge: how many devices are configured.
- ``tandem_device_path_active{device,path}`` gauge: 1 for the path a device is polled through,
  0 for its other paths (a device with one path has one series at 1).
- ``tandem_device_path_connected{device,path}`` gauge: 1 while that path's line is up.
- ``tandem_device_path_switches_total{device}`` counter: changes of the active path.
- ``tandem_group_polls_total{device,group}`` counter: polls completed.
- ``tandem_group_errors_total{device,group}`` counter: polls that produced at least one error.
- ``tandem_group_overruns_total{device,group}`` counter: polls skipped because the previous
  one was still running when the next slot began.
- ``tandem_group_poll_latency_seconds{device,group}`` gauge: duration of the last poll.
- ``tandem_group_last_slot{device,group}`` gauge: slot of the last poll.
- ``tandem_outbox_depth`` gauge: samples committed but not yet acknowledged by the broker.
- ``tandem_outbox_overflow_dropped_total`` counter: samples dropped because the outbox was full.
- ``tandem_outbox_writable`` gauge: 0 from a failed outbox write (disk full, read-only data
  dir) until a write succeeds again.
- ``tandem_outbox_write_errors_total`` counter: outbox write transactions that failed.
- ``tandem_outbox_retry_queue`` gauge: samples held in memory because they could not be
  committed yet.
- ``tandem_outbox_retry_dropped_total`` counter: samples dropped because that queue was full.
- ``tandem_outbox_recovered_total`` counter: corrupt outbox files moved aside at start.
- ``tandem_publisher_connected`` gauge: 1 while connected to the MQTT broker.
- ``tandem_published_total`` counter: messages acknowledged by the broker (PUBACK).
- ``tandem_publish_rate`` gauge: messages per second, as averaged by the runtime.
- ``tandem_values_rate`` gauge: tag values per second, as averaged by the runtime.
- ``tandem_publisher_reconnects_total`` counter: broker reconnections.
- ``tandem_ha_watermark_lag`` gauge: slots between the newest poll and the delivered
  watermark (only when known): how far publishing is behind polling.
- ``tandem_vrrp_priority`` gauge: effective VRRP priority (base plus health weights).
- ``tandem_vrrp_adverts_sent_total`` / ``tandem_vrrp_adverts_received_total`` counters.
- ``tandem_vrrp_adverts_dropped_total{reason}`` counter: packets rejected by the codec or
  a receive check (auth_mismatch, version_mismatch, interval_mismatch, bad_checksum, ...).
- ``tandem_vrrp_transitions_total{reason}`` counter: role changes by reason.
- ``tandem_health_check{check}`` gauge: 1 while a health check (loops, devices, broker) passes.
- ``tandem_publishing`` gauge: 1 while this node publishes (an active master).
- ``tandem_ha_phase{phase}`` gauge: 1 for the current HA phase (standby, barrier, quiet,
  acquiring, active, revalidating, handing_over), 0 for the others.
- ``tandem_vrrp_spurious_takeovers_total`` counter: leaderships lost again before a term was
  taken (a late advert from a live master: no term war).
- ``tandem_broker_messages_dropped_total{reason}`` counter: broker messages the HA layer did
  not use (malformed, out_of_range, unsigned, bad_signature, future_slot, replayed, ...).
- ``tandem_security_events_total`` counter: messages only a forger (or a bug) can produce,
  such as a term naming this node that it never acquired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api.view import KNOWN_ROLES, OutboxInfo, PublisherInfo, Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusCollector(Collector):
    """Reads a fresh Status on every scrape, so metrics can never drift from /api/v1/status."""

    def __init__(self, snapshot: Callable[[], Status]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from status_metrics(self._snapshot())


def status_metrics(status: Status) -> Iterator[Metric]:
    """The metric families for one snapshot; pure, so it is tested without a registry."""
    yield from node_metrics(status)
    yield from device_metrics(status)
    yield from path_metrics(status)
    yield from group_metrics(status)
    yield from outbox_metrics(status.outbox)
    yield from publisher_metrics(status.publisher)
    if status.ha is not None and status.ha.watermark_lag is not None:
        yield GaugeMetricFamily(
            "tandem_ha_watermark_lag",
            "Samples the peer is behind this node",
            value=status.ha.watermark_lag,
        )
    if status.phase is not None or status.ha is not None:
        yield from ha_metrics(status)
    if status.vrrp:
        yield from vrrp_metrics(status.vrrp)
    if status.opcua_server is not None:
        yield GaugeMetricFamily(
            "tandem_opcua_service_level",
            "ServiceLevel of this node's OPC UA server (Part 4: 0 maintenance, 1 no data, "
            "2-199 degraded, 200-255 healthy)",
            value=status.opcua_server.service_level,
        )


def node_metrics(status: Status) -> Iterator[Metric]:
    info = GaugeMetricFamily("tandem_info", "Tandem node identity", labels=["node"])
    info.add_metric([status.node], 1)
    yield info
    # One series per known role, whatever the role's detail: a new term is no new series.
    role = GaugeMetricFamily("tandem_role", "Current role (1 = this role)", labels=["role"])
    roles = list(KNOWN_ROLES)
    if status.role not in roles:
        roles.append(status.role)
    for name in roles:
        role.add_metric([name], 1 if name == status.role else 0)
    yield role
    yield GaugeMetricFamily("tandem_term", "HA fencing term", value=status.term)
    yield GaugeMetricFamily(
        "tandem_uptime_seconds", "Seconds since the runtime started", value=status.uptime_s
    )


def device_metrics(status: Status) -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "tandem_device_connected", "1 while the device connection is up", labels=["device"]
    )
    for device in status.devices:
        connected.add_metric([device.name], 1 if device.connected else 0)
    yield connected
    yield GaugeMetricFamily(
        "tandem_devices_connected",
        "Devices currently connected",
        value=sum(1 for d in status.devices if d.connected),
    )
    yield GaugeMetricFamily("tandem_devices", "Devices configured", value=len(status.devices))


def group_metrics(status: Status) -> Iterator[Metric]:
    labels = ["device", "group"]
    polls = CounterMetricFamily("tandem_group_polls", "Polls completed", labels=labels)
    errors = CounterMetricFamily("tandem_group_errors", "Polls with errors", labels=labels)
    overruns = CounterMetricFamily(
        "tandem_group_overruns", "Polls skipped because the previous one overran", labels=labels
    )
    latency = GaugeMetricFamily(
        "tandem_group_poll_latency_seconds", "Duration of the last poll", labels=labels
    )
    last_slot = GaugeMetricFamily("tandem_group_last_slot", "Slot of the last poll", labels=labels)
    for device in status.devices:
        for group in device.groups:
            key = [device.name, group.name]
            polls.add_metric(key, group.polls)
            errors.add_metric(key, group.errors)
            overruns.add_metric(key, group.overruns)
            if group.last_latency_ms is not None:
                latency.add_metric(key, group.last_latency_ms / 1000.0)
            if group.last_slot is not None:
                last_slot.add_metric(key, group.last_slot)
    yield from (polls, errors, overruns, latency, last_slot)


def outbox_metrics(outbox: OutboxInfo) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tandem_outbox_depth",
        "Samples waiting for broker acknowledgement",
        value=outbox.depth,
    )
    yield CounterMetricFamily(
        "tandem_outbox_overflow_dropped",
        "Samples dropped because the outbox was full",
        value=outbox.overflow_dropped,
    )
    yield from outbox_storage_metrics(outbox)


def publisher_metrics(publisher: PublisherInfo) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tandem_publisher_connected",
        "1 while connected to the MQTT broker",
        value=1 if publisher.connected else 0,
    )
    yield CounterMetricFamily(
        "tandem_published", "Messages acknowledged by the broker", value=publisher.published_total
    )
    yield GaugeMetricFamily(
        "tandem_publish_rate", "Messages published per second", value=publisher.publish_rate
    )
    yield GaugeMetricFamily(
        "tandem_values_rate", "Tag values published per second", value=publisher.values_rate
    )
    yield CounterMetricFamily(
        "tandem_publisher_reconnects", "Broker reconnections", value=publisher.reconnects
    )


def path_metrics(status: Status) -> Iterator[Metric]:
    """Which path each device is polled through, whether each path is up, how often it moved."""
    labels = ["device", "path"]
    active = GaugeMetricFamily(
        "tandem_device_path_active", "1 for the path the device is polled through", labels=labels
    )
    up = GaugeMetricFamily(
        "tandem_device_path_connected", "1 while the path's line is up", labels=labels
    )
    switches = CounterMetricFamily(
        "tandem_device_path_switches", "Changes of the active path", labels=["device"]
    )
    for device in status.devices:
        for path in device.paths:
            active.add_metric([device.name, path.endpoint], 1 if path.active else 0)
            up.add_metric([device.name, path.endpoint], 1 if path.connected else 0)
        switches.add_metric([device.name], device.path_switches)
    yield from (active, up, switches)


def outbox_storage_metrics(outbox: OutboxInfo) -> Iterator[Metric]:
    """Storage faults and recovery of the outbox."""
    yield GaugeMetricFamily(
        "tandem_outbox_writable",
        "1 while outbox writes succeed",
        value=1 if outbox.writable else 0,
    )
    yield CounterMetricFamily(
        "tandem_outbox_write_errors", "Outbox writes that failed", value=outbox.write_errors
    )
    yield GaugeMetricFamily(
        "tandem_outbox_retry_queue",
        "Samples held in memory, not committed yet",
        value=outbox.retry_queue,
    )
    yield CounterMetricFamily(
        "tandem_outbox_retry_dropped",
        "Samples dropped because the in-memory retry queue was full",
        value=outbox.retry_dropped,
    )
    yield CounterMetricFamily(
        "tandem_outbox_recovered",
        "Corrupt outbox files moved aside at start",
        value=outbox.recovered,
    )


PHASES = ("standby", "barrier", "quiet", "acquiring", "active", "revalidating", "handing_over")


def ha_metrics(status: Status) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tandem_publishing", "1 while this node publishes", value=1 if status.publishing else 0
    )
    phase = GaugeMetricFamily(
        "tandem_ha_phase", "Current HA phase (1 = this one)", labels=["phase"]
    )
    for name in PHASES:
        phase.add_metric([name], 1 if name == status.phase else 0)
    yield phase


def vrrp_metrics(vrrp: dict[str, Any]) -> Iterator[Metric]:
    """The failover engine's counters, from the `vrrp` part of the status."""
    if "priority" in vrrp:
        yield GaugeMetricFamily(
            "tandem_vrrp_priority", "Effective VRRP priority", value=vrrp["priority"]
        )
    for key, name, doc in (
        ("adverts_sent", "tandem_vrrp_adverts_sent", "VRRP adverts sent"),
        ("adverts_received", "tandem_vrrp_adverts_received", "VRRP adverts received"),
    ):
        if key in vrrp:
            yield CounterMetricFamily(name, doc, value=vrrp[key])
    drops = CounterMetricFamily(
        "tandem_vrrp_adverts_dropped", "VRRP packets dropped, by reason", labels=["reason"]
    )
    for reason, count in sorted((vrrp.get("drops") or {}).items()):
        drops.add_metric([reason], count)
    yield drops
    transitions = CounterMetricFamily(
        "tandem_vrrp_transitions", "VRRP role changes, by reason", labels=["reason"]
    )
    for reason, count in sorted((vrrp.get("transitions") or {}).items()):
        transitions.add_metric([reason], count)
    yield transitions
    checks = GaugeMetricFamily(
        "tandem_health_check", "Health check result (1 = passing)", labels=["check"]
    )
    for check, ok in sorted((vrrp.get("checks") or {}).items()):
        checks.add_metric([check], 1 if ok else 0)
    yield checks
    yield CounterMetricFamily(
        "tandem_vrrp_spurious_takeovers",
        "Leaderships lost again before a term was taken",
        value=vrrp.get("spurious_takeovers", 0),
    )
    broker = CounterMetricFamily(
        "tandem_broker_messages_dropped",
        "Broker messages not used by the HA layer, by reason",
        labels=["reason"],
    )
    for reason, count in sorted((vrrp.get("broker_drops") or {}).items()):
        broker.add_metric([reason], count)
    yield broker
    yield CounterMetricFamily(
        "tandem_security_events",
        "Messages only a forger or a bug can produce",
        value=vrrp.get("security_events", 0),
    )


def render_metrics(status: Status) -> bytes:
    """Prometheus text exposition for one snapshot, in a private registry.

    A private registry keeps the process-wide default one (and its python_* collectors) out of
    the picture, so two apps in one process, as in the tests, never collide.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status))
    return generate_latest(registry)
