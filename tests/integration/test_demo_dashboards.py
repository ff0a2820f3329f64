"""Both nodes' dashboards during the demo's failover, in real Chromium, with screenshots."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tandem.demo import DemoCluster, DemoTimings
from tests.integration.test_dashboard_browser import log_in

pytestmark = pytest.mark.slow

TIMINGS = DemoTimings.for_mode(quick=True)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[DemoCluster]:
    async with DemoCluster(standby="hot", workdir=tmp_path / "demo") as running:
        yield running


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    try:
        yield ctx
    finally:
        await ctx.close()


async def _shoot(page: Page, path: Path, shots: list[Path]) -> None:
    await page.screenshot(path=str(path), full_page=True)
    shots.append(path)


def _publish(shots: list[Path]) -> None:
    """Copy the screenshots where a person (or CI artifact upload) asked for them."""
    target = os.environ.get("TANDEM_SCREENSHOTS_DIR")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for shot in shots:
        shutil.copy2(shot, Path(target) / shot.name)


async def test_demo_dashboards_kill9_backup_page_shows_takeover_in_timeline(
    cluster: DemoCluster, context: BrowserContext, tmp_path: Path
) -> None:
    a, b = cluster.names
    await cluster.wait_for(cluster.steady, TIMINGS.takeover_timeout_s * 2, "a steady pair")
    page_a, page_b = await context.new_page(), await context.new_page()
    problems_b: list[str] = []
    page_b.on("pageerror", lambda exc: problems_b.append(f"page error: {exc}"))
    await page_a.goto(cluster.url(a) + "/")
    await log_in(page_a, *cluster.login)
    await page_b.goto(cluster.url(b) + "/")
    await log_in(page_b, *cluster.login)
    await expect(page_a.locator("#role")).to_have_text("MASTER")
    await expect(page_b.locator("#role")).to_have_text("BACKUP")
    await expect(page_b.locator("#live")).to_have_attribute("data-state", "live")
    await expect(page_b.locator("#ha")).to_be_visible()
    shots: list[Path] = []
    await _shoot(page_a, tmp_path / "1-steady-node-a.png", shots)
    await _shoot(page_b, tmp_path / "1-steady-node-b.png", shots)

    cluster.nodes[a].signal(signal.SIGKILL)
    takeover = page_b.locator('#timeline li[data-kind="role"]', has_text="became MASTER")
    await expect(takeover.first).to_be_visible(timeout=TIMINGS.takeover_timeout_s * 1000)
    await expect(page_b.locator("#role")).to_have_text("MASTER")
    # The killed node's page cannot hear from it any more: its banner is greyed, not MASTER.
    await expect(page_a.locator("#live")).not_to_have_attribute("data-state", "live")
    await expect(page_a.locator("#banner")).to_have_attribute("data-stale", "true")
    await expect(page_a.locator("#role")).to_have_text("MASTER (no contact)")
    await page_b.wait_for_timeout(1000)  # a second of publishing by the new master on screen
    await _shoot(page_a, tmp_path / "2-after-kill9-node-a.png", shots)
    await _shoot(page_b, tmp_path / "2-after-kill9-node-b.png", shots)

    cluster.nodes[a].start()
    await cluster.wait_for(
        lambda: cluster.role_of(a) == "MASTER" and cluster.role_of(b) == "BACKUP",
        TIMINGS.takeover_timeout_s * 2,
        f"{a} to take the role back",
    )
    await page_a.reload()
    await log_in(page_a, *cluster.login)  # logins live in memory: a restarted node forgot them
    await expect(page_a.locator("#role")).to_have_text("MASTER")
    await expect(page_b.locator("#role")).to_have_text("BACKUP")
    switchback = page_b.locator('#timeline li[data-kind="role"]', has_text="became BACKUP")
    await expect(switchback.first).to_be_visible()
    await page_a.wait_for_timeout(1000)
    await _shoot(page_a, tmp_path / "3-switchback-node-a.png", shots)
    await _shoot(page_b, tmp_path / "3-switchback-node-b.png", shots)
    _publish(shots)

    assert all(shot.stat().st_size > 10_000 for shot in shots)
    assert problems_b == []
    text = await takeover.first.inner_text()
    assert re.search(r"became MASTER \(term \d+\)", text), text
    statuses = await cluster.refresh()
    overruns = {
        name: [g["overruns"] for d in (st or {}).get("devices", []) for g in d["groups"]]
        for name, st in statuses.items()
    }
    missing = {k: s.missing() for k, s in cluster.audit.streams.items() if s.lost}
    dups = {k: s.duplicate_slots for k, s in cluster.audit.streams.items() if s.duplicates}
    near = [
        (round(a.at, 3), a.delivered.slot, a.delivered.source_node, a.delivered.term)
        for a in cluster.audit.arrivals
        if any(abs(a.delivered.slot - m) <= 3 for ms in missing.values() for m in ms)
    ]
    assert (cluster.audit.lost, cluster.audit.duplicates) == (0, 0), (missing, dups, overruns, near)
