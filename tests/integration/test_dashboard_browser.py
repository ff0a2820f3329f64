"""The dashboard in a real Chromium against the real API server, fed by a scripted hub.

Swapping in a real hub: override `dashboard_url` (base URL of a running API) and
`dashboard_expect` (names to look for). The hub must change the value of `expect.tag` while
running and take `expect.device` down within `expect.down_within_s` of the page opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tandem.api.app import bound_port, create_app, serve
from tandem.api.auth import Security
from tandem.api.live import LiveFeed
from tandem.api.tagindex import TagCatalog, TagEntry, TagKind
from tandem.api.view import (
    DeviceInfo,
    GroupInfo,
    HaInfo,
    Health,
    LiveEvent,
    OutboxInfo,
    PathInfo,
    PublisherInfo,
    Status,
    TagValue,
    TimelineEvent,
)
from tandem.config.hub import TandemConfig
from tandem.hub.model import Sample
from tandem.security.roles import Role
from tandem.security.users import UserStore

pytestmark = pytest.mark.slow

DEVICE_DOWN_CODE = 1001  # tag error code for "device disconnected"


@dataclass(frozen=True, slots=True)
class DashboardExpect:
    """What the page under test should show, by name."""

    node: str
    role: str
    tag: str  # a tag whose value keeps changing
    device: str  # a device that goes down during the test
    down_within_s: float
    # A device with redundant paths, polled through the second (None: the hub has no such one).
    redundant_device: str | None = None


# ---- a scripted hub: values move, one device drops after a few seconds ----


def _now_ms() -> int:
    return int(time.time() * 1000)


SCRIPTED_TAGS = [
    TagEntry("plc1", "fast", "temperature"),
    TagEntry("plc1", "fast", "counter"),
    TagEntry("plc1", "fast", "running", TagKind.BOOL),
    TagEntry("plc2", "slow", "pressure"),
]


@dataclass
class ScriptedView:
    """A HubView whose data moves on a script, to drive the page without a PLC or broker.

    The samples go through the real live feed, as the hub's do: only the transport from a
    PLC is scripted.
    """

    node: str = "edge-a"
    down_after_s: float = 3.0
    period_s: float = 0.2
    started: float = field(default_factory=time.monotonic)
    plc1_up: bool = True
    polls: int = 0
    published: int = 0
    events: list[TimelineEvent] = field(default_factory=list)
    watched_since: float | None = None
    live: LiveFeed = field(init=False)

    def __post_init__(self) -> None:
        intervals = {("plc1", "fast"): self.period_s, ("plc2", "slow"): self.period_s * 5}
        self.live = LiveFeed(self.status, TagCatalog(SCRIPTED_TAGS, intervals))

    def health(self) -> Health:
        return Health(ok=self.plc1_up, checks={"plc1": self.plc1_up, "plc2": True})

    def status(self) -> Status:
        group = GroupInfo(
            name="fast",
            interval=self.period_s,
            last_poll_ms=_now_ms(),
            last_slot=self.polls,
            polls=self.polls,
            errors=0 if self.plc1_up else self.polls // 10,
            last_latency_ms=3.2,
        )
        return Status(
            node=self.node,
            role="MASTER",
            term=3,
            standby_mode="hot",
            uptime_s=time.monotonic() - self.started,
            devices=[
                DeviceInfo(
                    name="plc1",
                    connected=self.plc1_up,
                    last_error=None if self.plc1_up else "connection refused",
                    groups=[group],
                ),
                DeviceInfo(
                    name="plc2",
                    connected=True,
                    groups=[GroupInfo(name="slow", interval=1.0, polls=self.polls // 5)],
                    active_path="10.0.2.10:502",
                    paths=[
                        PathInfo(endpoint="10.0.1.10:502", connected=False, active=False),
                        PathInfo(endpoint="10.0.2.10:502", connected=True, active=True),
                    ],
                    path_switches=1,
                ),
            ],
            outbox=OutboxInfo(depth=0 if self.plc1_up else 12, overflow_dropped=0),
            publisher=PublisherInfo(
                connected=True,
                published_total=self.published,
                publish_rate=1 / self.period_s,
                values_rate=4 / self.period_s,
            ),
            ha=HaInfo(
                peer="edge-b",
                peer_state="BACKUP",
                watermark_lag=0,
                config_version="a1b2c3",
                peer_config_version="a1b2c3",
            ),
        )

    def tags(self) -> list[TagValue]:
        return self.live.tags()

    def tags_json(self) -> bytes:
        return self.live.tags_json()

    def timeline(self, limit: int) -> list[TimelineEvent]:
        return list(reversed(self.events))[:limit]

    def subscribe(self) -> AsyncIterator[LiveEvent]:
        return self.live.subscribe()

    async def switchover(self) -> dict[str, Any]:
        raise NotImplementedError("the scripted hub has no peer")

    def _note(self, kind: str, message: str, **detail: Any) -> None:
        event = TimelineEvent(ts_ms=_now_ms(), kind=kind, message=message, detail=detail)  # type: ignore[arg-type]
        self.events.append(event)
        self.live.push(LiveEvent("timeline", event))

    def step(self) -> None:
        """One poll of every group: new values, and the scripted device failure."""
        self.polls += 1
        self.published += 2
        now = _now_ms()
        t = time.monotonic() - self.started
        # The outage is timed from the first page that watches, however slow the browser
        # was to start: the page must see values move before the device goes.
        if self.watched_since is None and self.live.subscribers:
            self.watched_since = time.monotonic()
        watched_s = 0.0 if self.watched_since is None else time.monotonic() - self.watched_since
        if self.plc1_up and watched_s >= self.down_after_s:
            self.plc1_up = False
            self._note("device", "plc1 disconnected: connection refused", device="plc1")
            self.live.push(LiveEvent("status", self.status()))
        plc1 = {
            "temperature": round(21.0 + 2.5 * math.sin(t / 2.0), 3),
            "counter": self.polls,
            "running": self.polls % 20 < 15,
        }
        values = plc1 if self.plc1_up else {}
        errors = {} if self.plc1_up else dict.fromkeys(plc1, DEVICE_DOWN_CODE)
        self.live.note_values(
            Sample("plc1", "fast", self.polls, now, values, errors, seq=self.polls)
        )
        if self.polls % 5 == 1:
            pressure = {"pressure": round(4.2 + 0.3 * math.cos(t), 3)}
            slot = self.polls // 5
            self.live.note_values(Sample("plc2", "slow", slot, now, pressure, {}, seq=slot))

    async def run(self) -> None:
        self._note("role", "became MASTER (term 3): startup", reason="startup")
        self._note("broker", "connected to 127.0.0.1:1883")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.live.run())
            while True:
                self.step()
                await asyncio.sleep(self.period_s)


# ---- fixtures (override these two to point the test at a real hub) ----


async def log_in(page: Page, user: str, password: str) -> None:
    """On the login page the dashboard sends an anonymous visitor to, log in."""
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.get_by_test_id("login-user").fill(user)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await expect(page).not_to_have_url(re.compile(r"/login$"))


@pytest.fixture
def dashboard_expect() -> DashboardExpect:
    return DashboardExpect(
        node="edge-a",
        role="MASTER",
        tag="counter",
        device="plc1",
        down_within_s=15.0,
        redundant_device="plc2",
    )


DASHBOARD_USER, DASHBOARD_PASSWORD = "viewer", "dashboard test password"


@pytest.fixture
async def dashboard_url(dashboard_expect: DashboardExpect, tmp_path: Path) -> AsyncIterator[str]:
    """The scripted hub's API; it knows a viewer DASHBOARD_USER / DASHBOARD_PASSWORD."""
    cfg = TandemConfig(node=dashboard_expect.node, data_dir=tmp_path / "data")
    UserStore(cfg.data_dir).add(DASHBOARD_USER, Role.VIEWER, DASHBOARD_PASSWORD)
    # The device drops later than the bare script's 3 s: logging in comes first.
    view = ScriptedView(node=dashboard_expect.node, down_after_s=6.0)
    app = create_app(view, title="Tandem (scripted)", security=Security.from_config(cfg))
    ready = asyncio.Event()
    script = asyncio.create_task(view.run(), name="scripted-hub")
    server = asyncio.create_task(serve(app, "127.0.0.1", 0, ready=ready), name="api")
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield f"http://127.0.0.1:{bound_port(app)}"
    finally:
        for task in (server, script):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900}, color_scheme="dark"
    )
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def test_dashboard_live_hub_shows_values_device_loss_and_timeline(
    page: Page, dashboard_url: str, dashboard_expect: DashboardExpect, tmp_path: Path
) -> None:
    expect_ = dashboard_expect
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )

    await page.goto(dashboard_url)
    await log_in(page, DASHBOARD_USER, DASHBOARD_PASSWORD)
    await expect(page.locator("#node")).to_have_text(expect_.node)
    await expect(page.locator("#role")).to_have_text(expect_.role)
    await expect(page.locator("#term")).to_have_text(re.compile(r"^\d+$"))
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")

    value = page.locator(f'tbody#tags tr[data-tag="{expect_.tag}"] td.value').first
    await expect(value).to_have_text(re.compile(r"\S"))
    first = await value.inner_text()
    await expect(value).not_to_have_text(first, timeout=10_000)

    # Pick a tag to chart: the row is marked and the trend names it.
    await page.locator(f'tbody#tags tr[data-tag="{expect_.tag}"]').first.click()
    await expect(page.locator(f'tbody#tags tr[data-tag="{expect_.tag}"]').first).to_have_class(
        re.compile(r"\bselected\b")
    )
    chips = page.locator("#trend-tags li")
    await expect(chips).to_have_count(1)
    await expect(chips.first).to_have_attribute("data-key", re.compile(f"/{expect_.tag}$"))

    # A device with redundant paths says which one it is polled through.
    if expect_.redundant_device is not None:
        path = page.locator(f'[data-device="{expect_.redundant_device}"] .device-path')
        await expect(path).to_have_text("via 10.0.2.10:502")
        await expect(path).to_have_attribute("title", re.compile(r"10\.0\.1\.10:502 down"))

    down = page.locator(f'[data-device="{expect_.device}"][data-connected="false"]')
    await expect(down).to_be_visible(timeout=expect_.down_within_s * 1000)
    device_events = page.locator("#timeline li", has_text=expect_.device)
    await expect(device_events.first).to_be_visible()
    await expect(device_events.first).to_have_attribute("data-kind", "device")

    # The chart has really been drawn: some canvas pixels are not transparent.
    painted = await page.evaluate(
        """() => {
            const c = document.querySelector('#trend canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            return n;
        }"""
    )
    assert painted > 500

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []


async def test_dashboard_light_scheme_renders_role_banner(
    browser: Browser, dashboard_url: str, dashboard_expect: DashboardExpect, tmp_path: Path
) -> None:
    context = await browser.new_context(
        viewport={"width": 1100, "height": 800}, color_scheme="light"
    )
    try:
        page = await context.new_page()
        await page.goto(dashboard_url)
        await log_in(page, DASHBOARD_USER, DASHBOARD_PASSWORD)
        role = page.locator("#role")
        await expect(role).to_have_text(dashboard_expect.role)
        colour = await role.evaluate("e => getComputedStyle(e).backgroundColor")
        background = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        await page.screenshot(path=str(tmp_path / "dashboard-light.png"), full_page=True)
    finally:
        await context.close()
    r, g, b = (int(x) for x in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    dominant = {"MASTER": g, "BACKUP": b, "FAULT": r}.get(dashboard_expect.role)
    if dominant is not None:  # the role's colour (green, blue, red) dominates the badge
        assert dominant == max(r, g, b) and sorted((r, g, b))[1] < dominant
    assert background != "rgb(15, 18, 22)"  # not the dark theme's background
