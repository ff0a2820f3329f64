"""The dashboard's static files: served from memory, revalidated by ETag, nothing outside."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response

from tandem.api.app import STATIC_DIR
from tandem.api.assets import StaticAssets


def app_for(directory: Path) -> FastAPI:
    assets = StaticAssets(directory)
    app = FastAPI()

    @app.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        return assets.response(name, request)

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_assets_dashboard_files_served_with_type_and_etag() -> None:
    async with client(app_for(STATIC_DIR)) as c:
        js = await c.get("/static/tags.js")
        css = await c.get("/static/style.css")
        again = await c.get("/static/tags.js", headers={"If-None-Match": js.headers["etag"]})
    assert js.status_code == 200 and js.content == (STATIC_DIR / "tags.js").read_bytes()
    assert js.headers["content-type"].startswith("text/javascript")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert js.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.content == b""


async def test_assets_unknown_or_outside_names_are_404(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("ok")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.js").write_text("hidden")
    async with client(app_for(tmp_path)) as c:
        answers = [
            (await c.get(path)).status_code
            for path in ("/static/nope.js", "/static/sub", "/static/..%2Fa.js", "/static/sub/b.js")
        ]
        ok = await c.get("/static/a.js")
    assert answers == [404, 404, 404, 404]
    assert ok.text == "ok"


async def test_assets_changed_file_served_anew(tmp_path: Path) -> None:
    path = tmp_path / "a.js"
    path.write_text("one")
    async with client(app_for(tmp_path)) as c:
        first = await c.get("/static/a.js")
        path.write_text("two")
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        second = await c.get("/static/a.js", headers={"If-None-Match": first.headers["etag"]})
    assert (first.text, second.status_code, second.text) == ("one", 200, "two")
    assert second.headers["etag"] != first.headers["etag"]
