"""The request bodies of the config edit routes in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from tandem.api.configedit.shared import DEVICE, DEVICES, GROUP, GROUPS, TAG, TAGS
from tandem.config.hub import (
    DeviceConfig,
    GroupConfig,
    OpcUaGroupConfig,
    OpcUaTagConfig,
    TagConfig,
)

# The bodies are read as plain JSON objects (the whole config is validated, not the body
# alone), so the document is told their shape: the config's own models.
BODY_SCHEMAS: dict[str, Any] = {
    "DeviceBody": DeviceConfig,
    "GroupBody": GroupConfig | OpcUaGroupConfig,
    "TagBody": TagConfig | OpcUaTagConfig,
}
_BODY_OF = {
    DEVICES: "DeviceBody",
    DEVICE: "DeviceBody",
    GROUPS: "GroupBody",
    GROUP: "GroupBody",
    TAGS: "TagBody",
    TAG: "TagBody",
}


def document_bodies(app: FastAPI) -> None:
    """Name the config models as the request bodies of the edit routes in /openapi.json."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "config_bodies_documented", False):
            return original()
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, kind in BODY_SCHEMAS.items():
            adapter: TypeAdapter[Any] = TypeAdapter(kind)
            body = adapter.json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in body.pop("$defs", {}).items():
                components.setdefault(def_name, definition)
            components[name] = body
        for path, name in _BODY_OF.items():
            for method, operation in schema.get("paths", {}).get(path, {}).items():
                if method in ("post", "put") and "requestBody" in operation:
                    operation["requestBody"]["content"] = {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    }
        app.state.config_bodies_documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
