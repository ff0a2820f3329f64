"""The dashboard browser tests, pointed at a real `tandem run` whose PLC goes away mid-test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tandem.security.roles import Role
from tandem.security.users import UserStore
from tests.integration.broker import Broker
from tests.integration.plc import start_plc
from tests.integration.test_dashboard_browser import (  # noqa: F401 - fixtures and tests reused
    DASHBOARD_PASSWORD,
    DASHBOARD_USER,
    DashboardExpect,
    page,
    test_dashboard_light_scheme_renders_role_banner,
    test_dashboard_live_hub_shows_values_device_loss_and_timeline,
)
from tests.integration.test_hub_e2e import counter_device, running_node, write_config

pytestmark = pytest.mark.slow

# Long enough for the page to load and see the counter move before the device goes down.
PLC_DOWN_AFTER_S = 6.0


@pytest.fixture
def dashboard_expect() -> DashboardExpect:
    return DashboardExpect(
        node="dash-node", role="SINGLE", tag="counter", device="plc1", down_within_s=30.0
    )


@pytest.fixture
async def dashboard_url(dashboard_expect: DashboardExpect, tmp_path: Path) -> AsyncIterator[str]:
    plc = start_plc()
    try:
        with Broker(tmp_path) as broker:
            config = write_config(
                tmp_path / "node.yaml",
                data_dir=tmp_path / "data",
                broker_port=broker.port,
                devices=[counter_device(plc.port, name=dashboard_expect.device, interval=0.2)],
                node=dashboard_expect.node,
            )
            UserStore(tmp_path / "data").add(DASHBOARD_USER, Role.VIEWER, DASHBOARD_PASSWORD)
            with running_node(config, tmp_path / "node.log") as node:
                await node.wait_ready()

                async def take_plc_down() -> None:
                    await asyncio.sleep(PLC_DOWN_AFTER_S)
                    await asyncio.to_thread(plc.stop)

                outage = asyncio.create_task(take_plc_down(), name="plc-down")
                try:
                    yield node.url
                finally:
                    outage.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await outage
                    node.terminate()
    finally:
        plc.stop()
