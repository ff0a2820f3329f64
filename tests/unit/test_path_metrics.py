"""Prometheus series for redundant device paths, derived from the status like every metric."""

from __future__ import annotations

from tandem.api.metrics import render_metrics
from tandem.api.view import DeviceInfo, PathInfo, Status


def test_path_metrics_active_connected_and_switches_per_device() -> None:
    status = Status(
        node="edge-a",
        role="SINGLE",
        devices=[
            DeviceInfo(
                name="plc1",
                connected=True,
                active_path="10.0.2.10:502",
                paths=[
                    PathInfo(endpoint="10.0.1.10:502", connected=False, active=False),
                    PathInfo(endpoint="10.0.2.10:502", connected=True, active=True),
                ],
                path_switches=3,
            ),
            DeviceInfo(
                name="meter",
                connected=True,
                active_path="/dev/ttyUSB0",
                paths=[PathInfo(endpoint="/dev/ttyUSB0", connected=True, active=True)],
            ),
        ],
    )
    text = render_metrics(status).decode()
    assert 'tandem_device_path_active{device="plc1",path="10.0.2.10:502"} 1.0' in text
    assert 'tandem_device_path_active{device="plc1",path="10.0.1.10:502"} 0.0' in text
    assert 'tandem_device_path_connected{device="plc1",path="10.0.1.10:502"} 0.0' in text
    assert 'tandem_device_path_switches_total{device="plc1"} 3.0' in text
    assert 'tandem_device_path_active{device="meter",path="/dev/ttyUSB0"} 1.0' in text
    assert 'tandem_device_path_switches_total{device="meter"} 0.0' in text
