"""Prometheus metrics of the API's own defences.

- ``tandem_api_refused_total{reason}`` counter: requests refused, by Refusal (no_credential,
  bad_credential, forbidden, csrf_token, cross_origin, bad_host, body_too_large, streams_full,
  login_failed, login_throttled, ...).
- ``tandem_api_sessions`` gauge: dashboard logins currently open.
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


def render_security_metrics(security: Security) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SecurityCollector(security))
    return generate_latest(registry)
