"""The dashboard's static files, held in memory and answered from the event loop.

Starlette's StaticFiles reads every file in a worker thread. In a hub whose event-loop thread
is busy polling thousands of tags, each hand-over between the two waits for the GIL (a 5 ms
switch interval), and the page's half-dozen files took 0.1-0.6 s each under load, before the
first tag could show. These files are few and small (~90 KB): they are read once, and again
only when their modification time changes (an upgrade, or an edit in a development checkout).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

# The browser asks again each time (no-cache) but gets 304 while the file is unchanged.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    etag: str
    media_type: str
    mtime_ns: int


class StaticAssets:
    """The files directly in one directory; anything else is 404, so no path can escape it.

    An ASGI app to mount (like StaticFiles, so the security middleware treats it the same), and
    `response()` for a route that serves one of its files (the dashboard page).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._assets: dict[str, _Asset] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                self._load(path)

    def _load(self, path: Path) -> _Asset:
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith("javascript"):
            media_type += "; charset=utf-8"
        asset = _Asset(
            body=body,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            media_type=media_type,
            mtime_ns=path.stat().st_mtime_ns,
        )
        self._assets[path.name] = asset
        return asset

    def _current(self, name: str) -> _Asset | None:
        asset = self._assets.get(name)
        if asset is None:
            return None
        path = self.directory / name
        try:
            if path.stat().st_mtime_ns != asset.mtime_ns:
                asset = self._load(path)
        except OSError:
            return asset  # gone from disk: keep answering what was loaded
        return asset

    def response(self, name: str, request: Request) -> Response:
        asset = self._current(name)
        if asset is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        headers = {"ETag": asset.etag, "Cache-Control": CACHE_CONTROL}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.method not in ("GET", "HEAD"):
            response = Response("Method Not Allowed", status_code=405, media_type="text/plain")
        else:
            response = self.response(_mounted_path(scope).lstrip("/"), request)
        await response(scope, receive, send)


def _mounted_path(scope: Scope) -> str:
    """The request path below the mount point (Starlette keeps the full path in "path")."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path
