"""Config editing on a real HA pair on loopback: the master takes changes, the backup follows.

REST: a change on the master reaches the backup through config sync (measured), the backup
answers 409 naming the master. Chromium: an admin adds a device (the simulator), a group and
tags on the master's Configuration tab, live values appear, the backup's read-only page shows
the new config; the master is killed with -9, a tag is edited on the new master and an older
version restored there.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from pymodbus.client import AsyncModbusTcpClient

from tandem.config.hub import load_config
from tandem.security.roles import Role
from tandem.security.tokens import create_token
from tandem.security.users import UserStore
from tests.integration.broker import Broker
from tests.integration.plc import start_plc
from tests.integration.test_config_sync import (
    node_doc,
    pair_plan,
    started_pair,
    write_yaml,
)
from tests.integration.test_dashboard_browser import log_in
from tests.integration.test_hub_e2e import NodeProcess
from tests.netns.ha_cluster import SECRET, HaCluster, TandemNode, loopback_cluster

pytestmark = pytest.mark.slow

ADMIN, PASSWORD = "ada", "a config editing test password"
SYNC_TARGET_S = 1.0  # the design target, printed next to the measurement
SYNC_BOUND_S = 2.5  # what the tests assert: generous, the machine is shared
# With 1 s adverts and no push the backup hears of a change after ~0.9 s; with the push after
# ~0.02 s. Well above the push, well below the advert: only the push passes.
PUSH_BOUND_S = 0.6
FAILOVER_S = 15.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    cluster = loopback_cluster(tmp_path_factory.mktemp("config-pair"))
    try:
        for node in cluster.nodes:
            UserStore(load_config(node.config).data_dir).add(ADMIN, Role.ADMIN, PASSWORD)
        cluster.start()
        yield cluster
    finally:
        cluster.close()


_tokens = itertools.count(1)


def admin_client(node: TandemNode) -> httpx.AsyncClient:
    name = f"pair-admin-{next(_tokens)}"
    token = create_token(load_config(node.config).data_dir, Role.ADMIN, name)
    return httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def tag_names(client: httpx.AsyncClient, device: str, group: str) -> list[str]:
    response = await client.get(f"/api/v1/devices/{device}/groups/{group}/tags")
    if response.status_code != 200:
        return []
    return [t["name"] for t in response.json()["tags"]]


async def test_config_pair_change_on_master_reaches_backup_and_backup_refuses_writes(
    pair: HaCluster,
) -> None:
    async with admin_client(pair.a) as master, admin_client(pair.b) as backup:
        state = (await backup.get("/api/v1/config/editor")).json()
        assert state["writable"] is False, state
        assert state["master"]["node"] == pair.a.name
        assert state["master"]["url"] == pair.a.url

        refused = await backup.post(
            "/api/v1/devices/plc1/groups/fast/tags", json={"name": "r20", "address": 20}
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["reason"] == "backup"
        assert refused.json()["master"]["node"] == pair.a.name
        for method, path, body in (
            ("DELETE", "/api/v1/devices/plc1", None),
            ("PUT", "/api/v1/devices/plc1/groups/fast/tags.csv", b"name,address\nx,9\n"),
            ("POST", "/api/v1/config/versions/1/restore", None),
        ):
            also = await backup.request(method, path, content=body)
            assert also.status_code == 409, f"{method} {path}: {also.text}"
            assert also.json()["master"]["url"] == pair.a.url

        changed = await master.post(
            "/api/v1/devices/plc1/groups/fast/tags", json={"name": "r20", "address": 20}
        )
        assert changed.status_code == 200, changed.text
        started = time.monotonic()
        while "r20" not in await tag_names(backup, "plc1", "fast"):
            assert time.monotonic() - started < SYNC_BOUND_S, "the backup never got r20"
            await asyncio.sleep(0.02)
        took = time.monotonic() - started
        print(
            f"config change on the master visible on the backup after {took:.3f} s "
            f"(target {SYNC_TARGET_S} s)"
        )
        # The backup runs it, too: its status lists the new tag's group unchanged, and the
        # file on the backup is left alone (the synced copy is what it runs).
        assert "r20" not in pair.b.config.read_text()

        # A whole-file PUT /api/v1/config is a version too, with who sent it.
        text = pair.a.config.read_text() + "# put whole\n"
        put = await master.put(
            "/api/v1/config", content=text.encode(), headers={"Content-Type": "text/yaml"}
        )
        assert put.status_code == 200, put.text
        newest = (await master.get("/api/v1/config/versions")).json()[0]
        assert newest["action"] == "PUT /api/v1/config"
        assert newest["who"].startswith("pair-admin-")
        detail = (await master.get(f"/api/v1/config/versions/{newest['id']}")).json()
        assert "+# put whole" in detail["diff"]
        assert SECRET not in detail["text"] and SECRET not in detail["diff"]


async def test_config_pair_slow_adverts_change_still_reaches_backup_within_target(
    tmp_path: Path,
) -> None:
    """With 1 s adverts the state stream would wait up to a second; the change pushes it."""
    plan = pair_plan()
    plc = start_plc()
    try:
        with Broker(tmp_path) as broker:
            docs = {}
            for name in ("node-a", "node-b"):
                doc = node_doc(tmp_path, name, plan, broker_port=broker.port, plc_port=plc.port)
                doc["ha"]["vrrp"]["advert_interval"] = 1.0
                docs[name] = write_yaml(tmp_path / f"{name}.yaml", doc)
            async with started_pair(docs["node-a"], docs["node-b"], tmp_path) as (a, b):
                took = []
                for i in range(3):
                    took.append(await _timed_change(a, b, f"s{i}", 10 + i))
    finally:
        plc.stop()
    print(
        f"config change -> backup with 1 s adverts: {', '.join(f'{t:.3f}' for t in took)} s "
        f"(target {SYNC_TARGET_S} s)"
    )
    assert max(took) < PUSH_BOUND_S


async def _timed_change(a: NodeProcess, b: NodeProcess, tag: str, address: int) -> float:
    def client(node: NodeProcess) -> httpx.AsyncClient:
        token = create_token(load_config(node.config).data_dir, Role.ADMIN, f"adm-{tag}")
        return httpx.AsyncClient(
            base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    async with client(a) as master, client(b) as backup:
        body = {"name": tag, "address": address}
        changed = await master.post("/api/v1/devices/plc1/groups/fast/tags", json=body)
        assert changed.status_code == 200, changed.text
        started = time.monotonic()
        while tag not in await tag_names(backup, "plc1", "fast"):
            assert time.monotonic() - started < SYNC_BOUND_S * 2, f"the backup never got {tag}"
            await asyncio.sleep(0.01)
        return time.monotonic() - started


async def fill(page: Page, testid: str, value: str) -> None:
    await page.get_by_test_id(testid).fill(value)


async def open_config(browser: Browser, node: TandemNode) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    # Confirmations are accepted, prompts answered with what they propose.
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(dialog.default_value)))
    await page.goto(f"{node.url}/")
    await log_in(page, ADMIN, PASSWORD)
    await page.get_by_test_id("tab-config").click()
    await expect(page.get_by_test_id("config-page")).to_be_visible()
    return page


async def test_config_pair_browser_edit_sync_failover_and_restore(
    pair: HaCluster, browser: Browser
) -> None:
    plc = pair.plc
    master = await open_config(browser, pair.a)
    backup = await open_config(browser, pair.b)
    await expect(master.get_by_test_id("config-state")).to_have_attribute("data-writable", "true")
    await expect(backup.get_by_test_id("config-state")).to_have_attribute("data-writable", "false")
    await expect(backup.get_by_test_id("master-link")).to_have_attribute(
        "href", f"{pair.a.url}/#config"
    )
    await expect(backup.get_by_test_id("save-device")).to_be_disabled()

    # A device: the simulator again, under a new name, with its first group and tag.
    await master.get_by_test_id("add-device").click()
    await fill(master, "device-name", "press")
    await fill(master, "device-host", plc.host)
    await fill(master, "device-port", str(plc.port))
    await fill(master, "device-timeout", "0.5")
    await fill(master, "new-group-name", "main")
    await fill(master, "new-group-interval", "0.2")
    await fill(master, "new-tag-name", "count")
    await fill(master, "new-tag-address", "0")
    await master.get_by_test_id("save-device").click()
    await expect(master.get_by_test_id("config-msg")).to_contain_text("device press created")
    created = time.monotonic()
    await expect(backup.get_by_test_id("config-device-press")).to_be_visible(timeout=5000)
    seen = time.monotonic() - created
    print(f"new device on the backup's page after {seen:.3f} s (target {SYNC_TARGET_S} s)")
    assert seen < SYNC_BOUND_S

    # A field problem is shown at its field, and nothing changes.
    await fill(master, "new-name", "bad")
    await fill(master, "new-address", "70000")
    await master.get_by_test_id("add-tag").click()
    await expect(master.get_by_test_id("error-address")).to_contain_text("65535")

    # A second group with its first tag, then one more tag added in the table.
    await fill(master, "group-name", "slow")
    await fill(master, "group-interval", "0.5")
    await fill(master, "group-tag-name", "level")
    await fill(master, "group-tag-address", "3")
    await master.get_by_test_id("add-group").click()
    await expect(master.get_by_test_id("config-msg")).to_contain_text("group slow added")
    await fill(master, "new-name", "wave")
    await fill(master, "new-address", "6")
    await master.get_by_test_id("new-type").select_option("float32")
    await master.get_by_test_id("add-tag").click()
    try:
        await expect(master.get_by_test_id("config-msg")).to_contain_text("tag wave added")
    except AssertionError:
        print(await master.get_by_test_id("config-tags").inner_html())
        raise
    await expect(master.get_by_test_id("tag-row-wave")).to_be_visible()

    # Duplicate: the copy lands right after the original (wave is float32 at 6: the copy at 8).
    await master.get_by_test_id("duplicate-tag-wave").click()
    await expect(master.get_by_test_id("tag-row-wave-copy")).to_be_visible()
    await expect(master.get_by_test_id("tag-wave-copy-address")).to_have_value("8")

    # A CSV import with a bad line is refused naming line and column; a good one replaces.
    bad_csv = b"name,address,type\nwave,6,float32\nlevel,three,uint16\n"
    await master.get_by_test_id("import-csv").set_input_files(
        files=[{"name": "slow.csv", "mimeType": "text/csv", "buffer": bad_csv}]
    )
    await expect(master.get_by_test_id("tags-errors")).to_contain_text("line 3, address")
    good_csv = b"name,address,type\nwave,6,float32\nlevel,3,uint16\nflag,5,uint16\n"
    await master.get_by_test_id("import-csv").set_input_files(
        files=[{"name": "slow2.csv", "mimeType": "text/csv", "buffer": good_csv}]
    )
    await expect(master.get_by_test_id("config-msg")).to_contain_text("slow2.csv imported")
    await expect(master.get_by_test_id("tag-row-flag")).to_be_visible()

    # Read now shows values at once; the dashboard's live table has them too.
    await master.get_by_test_id("read-now").click()
    await expect(master.get_by_test_id("tag-wave-value")).to_have_text(re.compile(r"^-?\d"))
    await master.get_by_test_id("tab-dashboard").click()
    live = master.locator('tbody#tags tr[data-device="press"][data-tag="count"] td.value')
    await expect(live.first).to_have_text(re.compile(r"^\d"), timeout=15000)

    await expect(backup.get_by_test_id("config-device-press")).to_be_visible()
    await backup.get_by_test_id("config-device-press").get_by_role("button").click()
    await expect(backup.get_by_test_id("config-group-slow")).to_be_visible(timeout=5000)

    # The master dies; the backup takes over and its page becomes editable.
    pair.a.kill()
    await asyncio.to_thread(pair.wait_role, pair.b, "MASTER", FAILOVER_S)
    await expect(backup.get_by_test_id("config-state")).to_have_attribute(
        "data-writable", "true", timeout=10000
    )
    await backup.get_by_test_id("config-group-main").get_by_role("button").click()
    await fill(backup, "tag-count-scale", "2")
    await backup.get_by_test_id("save-tag-count").click()
    await expect(backup.get_by_test_id("config-msg")).to_contain_text("tag count saved")
    async with admin_client(pair.b) as client:
        tag = (await client.get("/api/v1/devices/press/groups/main/tags/count")).json()
        assert tag["item"]["scale"] == 2
        versions = (await client.get("/api/v1/config/versions")).json()
    # The first version on this node is the config it ran before the edit (synced from A).
    oldest = versions[-1]
    assert oldest["who"] == "file", versions
    await backup.get_by_test_id(f"diff-{versions[0]['id']}").click()
    await expect(backup.get_by_test_id("config-diff")).to_contain_text("scale: 2")
    await backup.get_by_test_id(f"restore-{oldest['id']}").click()
    await expect(backup.get_by_test_id("config-msg")).to_contain_text(
        f"version {oldest['id']} restored"
    )
    async with admin_client(pair.b) as client:
        tag = (await client.get("/api/v1/devices/press/groups/main/tags/count")).json()
        assert tag["item"].get("scale", 1.0) == 1.0
        versions_after = (await client.get("/api/v1/config/versions")).json()
    assert versions_after[0]["action"] == f"restore of version {oldest['id']}"
    await expect(backup.get_by_test_id("tag-count-scale")).not_to_have_value("2")
    text: Any = pair.b.config.read_text()
    assert "press" in text

    # The new master takes a setpoint: a tag made writable here, written from the dashboard,
    # read back from the simulator.
    await backup.get_by_test_id("config-group-slow").get_by_role("button").click()
    await backup.get_by_test_id("tag-flag-access").select_option("read_write")
    await backup.get_by_test_id("save-tag-flag").click()
    await expect(backup.get_by_test_id("config-msg")).to_contain_text("tag flag saved")
    await backup.get_by_test_id("tab-dashboard").click()
    row = backup.locator('#tags tr[data-key="press/slow/flag"]')
    await expect(row.get_by_test_id("write-btn")).to_be_visible(timeout=15000)
    await row.get_by_test_id("write-btn").click()
    await backup.get_by_test_id("write-value").fill("55")
    await backup.get_by_test_id("write-send").click()
    await expect(backup.get_by_test_id("write-result")).to_have_text("written (55)")
    async with AsyncModbusTcpClient(plc.host, port=plc.port) as client:
        reply = await client.read_holding_registers(5, count=1)
    assert list(reply.registers) == [55]
