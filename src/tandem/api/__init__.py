"""REST API, server-sent events, Prometheus metrics and the dashboard."""
