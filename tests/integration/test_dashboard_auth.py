"""Logins in a real Chromium: wrong password, a viewer cannot switch over, an operator can.

The API server is the real one (uvicorn in this loop, the security middleware in front);
the hub behind it is scripted and records the switchovers that reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tandem.api.app import bound_port, create_app, serve
from tandem.api.auth import Security
from tandem.config.hub import TandemConfig
from tandem.security.roles import Role
from tandem.security.users import UserStore
from tests.integration.test_dashboard_browser import ScriptedView, log_in

pytestmark = pytest.mark.slow

PASSWORD = "a browser test password"


class SwitchableView(ScriptedView):
    """The scripted hub, with a switchover that works and is counted."""

    def __init__(self) -> None:
        super().__init__(node="edge-a")
        self.switchovers = 0

    async def switchover(self) -> dict[str, Any]:
        self.switchovers += 1
        return {"ok": True, "to": "edge-b", "watermarks": {}}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, SwitchableView]]:
    view = SwitchableView()
    cfg = TandemConfig(node="edge-a", data_dir=tmp_path / "data")
    users = UserStore(cfg.data_dir)
    users.add("vera", Role.VIEWER, PASSWORD)
    users.add("otto", Role.OPERATOR, PASSWORD)
    app = create_app(view, security=Security.from_config(cfg))
    ready = asyncio.Event()
    script = asyncio.create_task(view.run(), name="scripted-hub")
    server = asyncio.create_task(serve(app, "127.0.0.1", 0, ready=ready), name="api")
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield f"http://127.0.0.1:{bound_port(app)}", view
    finally:
        for task in (server, script):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def api_status(page: Page, method: str, path: str) -> int:
    """What the API answers the page's own fetch (the page's CSRF header included)."""
    return int(
        await page.evaluate(
            "async ([m, p]) => (await fetch(p, {method: m, redirect: 'manual'})).status",
            [method, path],
        )
    )


async def test_dashboard_login_roles_and_logout(
    page: Page, served: tuple[str, SwitchableView]
) -> None:
    url, view = served
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Anonymous: sent to the login page; a wrong password is refused there.
    await page.goto(url)
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.get_by_test_id("login-user").fill("vera")
    await page.get_by_test_id("login-password").fill("not the password")
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("login-error")).to_have_text(re.compile("Wrong user"))
    await expect(page).to_have_url(re.compile(r"/login$"))

    # A viewer sees the dashboard, but the switch-over control is disabled and the API refuses.
    await page.get_by_test_id("login-password").fill(PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("session-user")).to_have_text("vera (viewer)")
    await expect(page.locator("#node")).to_have_text("edge-a")
    await expect(page.get_by_test_id("switchover")).to_be_disabled()
    assert await api_status(page, "POST", "/api/v1/switchover") == 403
    assert await api_status(page, "GET", "/api/v1/status") == 200
    assert view.switchovers == 0

    # Log out: the session is gone for the API too.
    await page.get_by_test_id("logout").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    assert await api_status(page, "GET", "/api/v1/status") == 401

    # An operator can switch over from the page.
    await page.goto(url)
    await log_in(page, "otto", PASSWORD)
    await expect(page.get_by_test_id("session-user")).to_have_text("otto (operator)")
    switch = page.get_by_test_id("switchover")
    await expect(switch).to_be_enabled()
    await switch.click()
    await expect(page.get_by_test_id("session-msg")).to_have_text(
        re.compile("switchover done: edge-b")
    )
    assert view.switchovers == 1

    await page.get_by_test_id("logout").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    assert await api_status(page, "POST", "/api/v1/switchover") == 401
    assert view.switchovers == 1
    assert errors == []
