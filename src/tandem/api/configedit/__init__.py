"""REST for editing the config: devices, groups, tags, tag CSV, versions and restore.

Every change edits the YAML file (comments kept), is validated by the loader's own rules, goes
live through the node's one apply path (config sync on an HA node, `Hub.reconfigure` on a single
node) and is recorded as a version. A backup that follows a publishing master refuses changes
with 409 naming the master: the master's config reaches it through config sync.

The parts: `node` (what the editor needs from the node), `editor` (the edits, in turn),
`models` (the answers), `shared` (paths and helpers of the routes), one module per group of
routes (`devices`, `groups`, `tags`, `versions`), `openapi` (the request bodies' shapes) and
`routes` (`install`, which registers them all).
"""

from __future__ import annotations

from tandem.api.configedit.devices import CONNECT_TIMEOUT_S, check_paths, endpoints_of
from tandem.api.configedit.editor import ConfigEditor, NotMaster, short_sections
from tandem.api.configedit.models import EditorState, MasterOut, PathCheck, Refused
from tandem.api.configedit.node import (
    ConfigTarget,
    DeviceReader,
    HubReader,
    Master,
    ReadResult,
    SingleTarget,
)
from tandem.api.configedit.openapi import BODY_SCHEMAS, document_bodies
from tandem.api.configedit.routes import install
from tandem.api.configedit.shared import API, DEVICES, VERSIONS
from tandem.api.configedit.tags import _csv_lines
from tandem.api.configedit.versions import redact_text

__all__ = [
    "API",
    "BODY_SCHEMAS",
    "CONNECT_TIMEOUT_S",
    "DEVICES",
    "VERSIONS",
    "ConfigEditor",
    "ConfigTarget",
    "DeviceReader",
    "EditorState",
    "HubReader",
    "Master",
    "MasterOut",
    "NotMaster",
    "PathCheck",
    "ReadResult",
    "Refused",
    "SingleTarget",
    "_csv_lines",
    "check_paths",
    "document_bodies",
    "endpoints_of",
    "install",
    "redact_text",
    "short_sections",
]
