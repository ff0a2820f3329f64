"""The dashboard at plant scale in real Chromium: a real `tandem run` with 10,000 tags.

Ten devices of 1,000 tags each (r0..r999) on two PLC simulators; every value changes with
every poll. The page must find a tag by search and filter, order tags naturally, keep only
the visible rows in the DOM and get only their updates, and show a device going down in an
error-filtered view.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect

from tandem.security.roles import Role
from tandem.security.users import UserStore
from tests.integration.broker import Broker
from tests.integration.plc import PlcProcess, load_device, running_plc
from tests.integration.test_dashboard_browser import DASHBOARD_PASSWORD, DASHBOARD_USER, log_in
from tests.integration.test_hub_e2e import LISTENING, NodeProcess, running_node, write_config

pytestmark = pytest.mark.slow

DEVICES = 10
TAGS_PER_DEVICE = 1_000
TOTAL = DEVICES * TAGS_PER_DEVICE
# Slower than the 100 ms of the benchmark: the suite shares the machine; the page's work
# does not depend on the poll rate (at most four updates a second per row).
INTERVAL_S = 0.5
START_TIMEOUT_S = 60.0
# The spare device (plc10) is on a simulator of its own, so the last test can take it away.
SPARE = f"plc{DEVICES}"

# Counts what the event stream carries, before the page sees it.
COUNT_ROWS_SCRIPT = """
window.__rowsEvents = [];
const Native = window.EventSource;
window.EventSource = function (url, init) {
  const source = new Native(url, init);
  source.addEventListener("rows", (m) => {
    const data = JSON.parse(m.data);
    window.__rowsEvents.push({ rows: data.rows.length, at: performance.now() });
  });
  return source;
};
window.EventSource.prototype = Native.prototype;
"""


@dataclass(frozen=True, slots=True)
class ScaleNode:
    url: str
    spare_plc: PlcProcess
    node: NodeProcess


def _wait_listening(node: NodeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            pytest.fail(f"tandem run exited:\n{node.log_text()}")
        found = LISTENING.findall(node.log_text())
        if found:
            node.port = int(found[-1])
            return
        time.sleep(0.1)
    pytest.fail(f"tandem run not listening within {timeout} s:\n{node.log_text()}")


def _wait_all_polled(node: NodeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        devices = node.status()["devices"]
        if all(d["connected"] and d["groups"][0]["polls"] > 0 for d in devices):
            return
        time.sleep(0.2)
    pytest.fail(f"not every device polled within {timeout} s:\n{node.log_text()[-3000:]}")


@pytest.fixture(scope="module")
def scale_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleNode]:
    tmp = tmp_path_factory.mktemp("scale")
    with (
        running_plc(load_registers=TAGS_PER_DEVICE) as main_plc,
        running_plc(load_registers=TAGS_PER_DEVICE) as spare_plc,
        Broker(tmp) as broker,
    ):
        devices = [
            load_device(
                f"plc{i}",
                spare_plc.port if i == DEVICES else main_plc.port,
                TAGS_PER_DEVICE,
                interval=INTERVAL_S,
            )
            for i in range(1, DEVICES + 1)
        ]
        config = write_config(
            tmp / "node.yaml",
            data_dir=tmp / "data",
            broker_port=broker.port,
            devices=devices,
            node="scale",
        )
        UserStore(tmp / "data").add(DASHBOARD_USER, Role.VIEWER, DASHBOARD_PASSWORD)
        with running_node(config, tmp / "node.log") as node:
            _wait_listening(node, START_TIMEOUT_S)
            _wait_all_polled(node, START_TIMEOUT_S)
            yield ScaleNode(node.url, spare_plc, node)
            node.terminate()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    await context.add_init_script(COUNT_ROWS_SCRIPT)
    problems: list[str] = []
    try:
        tab = await context.new_page()
        tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        yield tab
    finally:
        await context.close()
    assert problems == []


async def open_dashboard(page: Page, node: ScaleNode) -> None:
    await page.goto(node.url)
    await log_in(page, DASHBOARD_USER, DASHBOARD_PASSWORD)
    await expect(page.locator("#tag-count")).to_have_text(f"{TOTAL:,}")


async def row_keys(page: Page) -> list[str]:
    """The keys of the rows in the DOM right now, top to bottom."""
    keys: list[str] = await page.eval_on_selector_all(
        "tbody#tags tr[data-key]", "rows => rows.map(r => r.dataset.key)"
    )
    return keys


async def test_tag_table_search_and_filters_find_one_tag_among_10000(
    page: Page, scale_node: ScaleNode
) -> None:
    await open_dashboard(page, scale_node)

    await page.locator("#tag-search").fill("plc7 r777")
    await expect(page.locator("#tag-count")).to_have_text(f"1 of {TOTAL:,}")
    await expect(page.locator("tbody#tags tr[data-key]")).to_have_count(1)
    row = page.locator('tbody#tags tr[data-key="plc7/fast/r777"]')
    await expect(row.locator("td.value")).to_have_text(re.compile(r"^\d+$"))

    await page.locator("#tag-search").fill("r77")  # r77 and r770..r779 on every device
    await expect(page.locator("#tag-count")).to_have_text(f"{11 * DEVICES} of {TOTAL:,}")
    await page.locator("#tag-device").select_option("plc3")
    await expect(page.locator("#tag-count")).to_have_text(f"11 of {TOTAL:,}")
    assert await row_keys(page) == [f"plc3/fast/r{n}" for n in (77, *range(770, 780))]

    await page.locator("#tag-search").fill("")
    await page.locator("#tag-group").select_option("fast")
    await expect(page.locator("#tag-count")).to_have_text(f"{TAGS_PER_DEVICE:,} of {TOTAL:,}")


async def test_tag_table_natural_sort_virtual_scroll_and_live_rows(
    page: Page, scale_node: ScaleNode
) -> None:
    await open_dashboard(page, scale_node)
    keys = await row_keys(page)
    # Natural order: r2 before r10, plc2 before plc10; only the visible rows exist.
    assert keys[:12] == [f"plc1/fast/r{i}" for i in range(12)]
    assert 10 < len(keys) < 150, len(keys)

    # Every value changes every poll: visible values move, and the stream carries only
    # the rows the page shows, never the 10,000.
    value = page.locator('tbody#tags tr[data-key="plc1/fast/r3"] td.value')
    first = await value.inner_text()
    await expect(value).not_to_have_text(first, timeout=10_000)
    sizes = await page.evaluate("window.__rowsEvents.map(e => e.rows)")
    assert sizes and max(sizes) <= 200, sizes

    # Scroll to the very end: the last tag of the last device, in natural order.
    await page.locator("#tag-scroll").evaluate("el => el.scrollTo(0, el.scrollHeight)")
    last = page.locator(f'tbody#tags tr[data-key="{SPARE}/fast/r{TAGS_PER_DEVICE - 1}"]')
    await expect(last).to_be_visible()
    assert await page.locator("tbody#tags tr[data-key]").count() < 150

    # Sort by tag, descending: r999 of every device first, devices in natural order.
    await page.locator('#tag-head th[data-sort="tag"]').click()
    await page.locator('#tag-head th[data-sort="tag"]').click()
    await expect(page.locator("#tag-head th[data-sort=tag]")).to_have_attribute(
        "aria-sort", "descending"
    )
    await expect(page.locator("tbody#tags tr[data-key]").first).to_have_attribute(
        "data-key", "plc10/fast/r999"
    )
    keys = await row_keys(page)
    assert keys[:3] == ["plc10/fast/r999", "plc9/fast/r999", "plc8/fast/r999"]


async def test_tag_table_device_down_shows_in_error_filter(
    page: Page, scale_node: ScaleNode
) -> None:
    await open_dashboard(page, scale_node)
    await page.locator("#tag-error").select_option("error")
    await expect(page.locator("#tag-count")).to_have_text(f"0 of {TOTAL:,}")
    await expect(page.locator("#tags-empty")).to_be_visible()

    scale_node.spare_plc.stop()

    # The page asked for errors only: the node re-matches that view as the device fails.
    await expect(page.locator("#tag-count")).to_have_text(
        f"{TAGS_PER_DEVICE:,} of {TOTAL:,}", timeout=30_000
    )
    first = page.locator("tbody#tags tr[data-key]").first
    await expect(first).to_have_attribute("data-key", f"{SPARE}/fast/r0")
    await expect(first.locator("td.error")).to_have_text("1001")
    await expect(page.locator(f'#devices [data-device="{SPARE}"]')).to_have_attribute(
        "data-connected", "false"
    )
