"""Prometheus metrics of the API's own defences.

- ``tandem_api_refused_total{reason}`` counter: requests refused, by Refusal (no_credential,
  bad_credential, forbidden, csrf_token, cross_origin, bad_host, body_too_large, streams_full,
  login_failed, login_throttled, ...).
- ``tandem_api_sessions`` gauge: dashboard logins currently open.
- ``tandem_api_loop_seconds_total`` counter: event-loop time the API's requests used (what
  the loop share bounds); ``tandem_api_queued_total`` and ``tandem_api_queue_seconds_total``
  counters: requests that waited for their share, and how long in all;
  ``tandem_api_queue_length`` gauge: waiting now. Refused ones count as ``reason="busy"``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api.auth import Refusal, Security


class _SecurityCollector(Collector):
    def __init__(self, security: Security) -> None:
        self._security = security

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "tandem_api_refused", "API requests refused, by reason", labels=["reason"]
        )
        for reason in Refusal:
            refused.add_metric([reason.value], self._security.refusals.get(reason, 0))
        yield refused
        yield GaugeMetricFamily(
            "tandem_api_sessions", "dashboard logins open", value=len(self._security.sessions)
        )
        governor = self._security.governor
        if governor is None:
            return
        stats = governor.stats
        yield CounterMetricFamily(
            "tandem_api_loop_seconds", "event-loop time used by API requests", stats.spent_s
        )
        yield CounterMetricFamily(
            "tandem_api_queued", "API requests that waited for their share", stats.waited
        )
        yield CounterMetricFamily(
            "tandem_api_queue_seconds", "time API requests waited, in all", stats.waited_s
        )
        yield GaugeMetricFamily(
            "tandem_api_queue_length", "API requests waiting now", value=governor.waiting
        )


def render_security_metrics(security: Security) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SecurityCollector(security))
    return generate_latest(registry)
