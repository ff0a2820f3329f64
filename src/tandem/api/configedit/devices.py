"""The device routes, and the connection test (open a connection on every path of a device)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

from fastapi import Request

from tandem.api.auth import needs
from tandem.api.configedit.models import Changed, ConnectionTest, DeviceList, Item, PathCheck
from tandem.api.configedit.shared import (
    DEVICE,
    DEVICES,
    REFUSALS,
    JsonObject,
    Routes,
    find,
    refused,
)
from tandem.config.edit import Edit, EditError, EditKind, Scope
from tandem.security.redact import redact
from tandem.security.roles import Access

CONNECT_TIMEOUT_S = 3.0
_OPC_URL = re.compile(r"^opc\.tcp://(?P<host>\[[^\]]+\]|[^:/\s]+)(?::(?P<port>\d{1,5}))?")


def install_devices(r: Routes) -> None:
    """List, add, read, replace and delete devices."""
    app, editor, view, admin = r.app, r.editor, r.view, r.admin

    @app.get(DEVICES, response_model=DeviceList, dependencies=view)
    async def list_devices() -> DeviceList:
        data = await editor.data()
        devices = [redact(d) for d in data.get("devices") or [] if isinstance(d, dict)]
        return DeviceList(state=editor.state(), devices=devices)

    @app.post(DEVICES, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def add_device(request: Request, body: JsonObject) -> Any:
        name = body.get("name")
        return await r.changed(Edit(EditKind.ADD, Scope.of(), body), request, f"add device {name}")

    @app.get(DEVICE, response_model=Item, responses=REFUSALS, dependencies=view)
    async def get_device(device: str) -> Any:
        return await r.read(lambda data: Item(item=redact(find(data, device))))

    @app.put(DEVICE, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def put_device(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await r.changed(
            Edit(EditKind.REPLACE, scope, body), request, f"edit device {device}"
        )

    @app.delete(DEVICE, response_model=Changed, responses=REFUSALS, dependencies=admin)
    async def delete_device(device: str, request: Request) -> Any:
        scope = Scope.of(device)
        return await r.changed(
            Edit(EditKind.DELETE, scope), request, f"delete device {device}", show=False
        )


def install_device_actions(r: Routes) -> None:
    """Duplicate a device; test its connections (an operator may)."""
    app, editor = r.app, r.editor

    @app.post(
        f"{DEVICE}/duplicate", response_model=Changed, responses=REFUSALS, dependencies=r.admin
    )
    async def duplicate_device(device: str, request: Request, body: JsonObject) -> Any:
        scope = Scope.of(device)
        return await r.changed(
            Edit(EditKind.DUPLICATE, scope, body),
            request,
            f"duplicate device {device} as {body.get('name')}",
        )

    @app.post(
        f"{DEVICE}/test",
        response_model=ConnectionTest,
        responses=REFUSALS,
        dependencies=[needs(Access.OPERATOR)],
    )
    async def test_connection(device: str) -> Any:
        try:
            found = find(await editor.data(), device)
        except EditError as exc:
            return refused(exc)
        return ConnectionTest(device=device, paths=await check_paths(found))


def endpoints_of(device: dict[str, Any]) -> list[tuple[str, int] | str]:
    """Where a device is reached: (host, port) for TCP, a serial port's path otherwise."""
    if device.get("protocol") == "opcua":
        m = _OPC_URL.match(str(device.get("endpoint", "")))
        if m is None:
            return []
        return [(m.group("host").strip("[]"), int(m.group("port") or 4840))]
    paths = device.get("paths")
    if isinstance(paths, list):
        return [
            (str(p.get("host")), int(p.get("port", 502)))
            for p in paths
            if isinstance(p, dict) and "host" in p
        ]
    serial = device.get("serial")
    if isinstance(serial, dict) and isinstance(serial.get("port"), str):
        return [serial["port"]]
    if "host" in device:
        return [(str(device["host"]), int(device.get("port", 502)))]
    return []


async def check_paths(device: dict[str, Any]) -> list[PathCheck]:
    """Open (and close) a connection on every path of the device; nothing is read or written."""
    timeout = device.get("timeout")
    limit = min(float(timeout), CONNECT_TIMEOUT_S) if isinstance(timeout, int | float) else 1.0
    out: list[PathCheck] = []
    for endpoint in endpoints_of(device):
        if isinstance(endpoint, str):
            exists = await asyncio.to_thread(Path(endpoint).exists)
            out.append(
                PathCheck(endpoint=endpoint, ok=exists, error=None if exists else "no such port")
            )
            continue
        host, port = endpoint
        label = f"{host}:{port}"
        started = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
        except (OSError, TimeoutError) as exc:
            out.append(PathCheck(endpoint=label, ok=False, error=str(exc) or type(exc).__name__))
            continue
        latency = (time.monotonic() - started) * 1000
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        out.append(PathCheck(endpoint=label, ok=True, latency_ms=round(latency, 2)))
    return out
