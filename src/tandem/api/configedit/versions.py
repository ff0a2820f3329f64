"""The version routes: the recorded versions, one with its diff, and a restore."""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from typing import Any

from fastapi import Request

from tandem.api.configedit.editor import NotMaster
from tandem.api.configedit.models import Changed, VersionDetail, VersionOut, version_out
from tandem.api.configedit.shared import REFUSALS, VERSIONS, Routes, problems, refused, who
from tandem.config.edit import EditError, EditFailure, EditInvalid
from tandem.security.redact import REDACTED, is_secret_name

# Secret-named keys in YAML or JSON-style text: `password: x`, `"secret": "x"`.
_SECRET_VALUE = re.compile(
    r"""(?P<key>["']?(?P<name>[A-Za-z0-9_]+)["']?[ \t]*:[ \t]*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^,}\s#]+)"""
)


def redact_text(text: str) -> str:
    """The YAML text (or its diff) with the value of every secret-named key replaced."""

    def sub(m: re.Match[str]) -> str:
        if is_secret_name(m.group("name")):
            return f"{m.group('key')}{REDACTED}"
        return m.group(0)

    return _SECRET_VALUE.sub(sub, text)


def install_versions(r: Routes) -> None:
    """The versions (any viewer, secrets redacted) and their restore (admin)."""
    app, editor = r.app, r.editor

    @app.get(VERSIONS, response_model=list[VersionOut], dependencies=r.view)
    async def list_versions() -> list[VersionOut]:
        metas = await asyncio.to_thread(editor.versions.list)
        return [version_out(m) for m in metas]

    @app.get(
        f"{VERSIONS}/{{ident}}",
        response_model=VersionDetail,
        responses=REFUSALS,
        dependencies=r.view,
    )
    async def get_version(ident: int) -> Any:
        version = await asyncio.to_thread(editor.versions.get, ident)
        if version is None:
            return refused(EditError(EditFailure.NOT_FOUND, f"no config version {ident}"))
        return VersionDetail(
            **asdict(version.meta), diff=redact_text(version.diff), text=redact_text(version.text)
        )

    @app.post(
        f"{VERSIONS}/{{ident}}/restore",
        response_model=Changed,
        responses=REFUSALS,
        dependencies=r.admin,
    )
    async def restore_version(ident: int, request: Request) -> Any:
        try:
            meta = await editor.restore(ident, who(request))
        except (EditError, NotMaster) as exc:
            return refused(exc)
        except EditInvalid as exc:
            return problems(exc.problems)
        return Changed(version=version_out(meta))
