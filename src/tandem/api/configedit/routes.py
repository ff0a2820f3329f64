"""The config editing routes on the node's API, registered group by group."""

from __future__ import annotations

from fastapi import FastAPI

from tandem.api.auth import needs
from tandem.api.configedit.devices import install_device_actions, install_devices
from tandem.api.configedit.editor import ConfigEditor
from tandem.api.configedit.groups import install_group_actions, install_groups
from tandem.api.configedit.models import EditorState
from tandem.api.configedit.openapi import document_bodies
from tandem.api.configedit.shared import API, Routes
from tandem.api.configedit.tags import install_tag, install_tags, install_tags_csv
from tandem.api.configedit.versions import install_versions
from tandem.security.roles import Access


def install(app: FastAPI, editor: ConfigEditor) -> None:
    """The config editing routes on the node's API (reads: viewer; changes: admin)."""
    security = getattr(app.state, "security", None)
    limit = security.limits.max_config_body if security is not None else None
    r = Routes(
        app,
        editor,
        view=[needs(Access.VIEWER)],
        admin=[needs(Access.ADMIN, max_body=limit)],
    )
    document_bodies(app)

    @app.get(f"{API}/config/editor", response_model=EditorState, dependencies=r.view)
    async def editor_state() -> EditorState:
        return editor.state()

    # In this order, as /openapi.json lists them.
    install_devices(r)
    install_device_actions(r)
    install_groups(r)
    install_group_actions(r)
    install_tags(r)
    install_tags_csv(r)
    install_tag(r)
    install_versions(r)
