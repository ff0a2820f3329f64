"""The configuration reference (docs/configuration.md), generated from the pydantic models."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tandem.config.hub import TandemConfig

# Where the models carry no description, these say what the field is for. They belong in
# hub.py's Field(description=...) eventually; kept here so the reference is complete today.
_FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "node": "this node's name; used in MQTT topics, logs and the dashboard",
    "data_dir": "where the outbox and node state are kept (default .tandem/<node>)",
    "devices": "southbound devices to poll; may be empty while a node is brought up",
    "ha": "two-node high availability; without it the node runs alone",
    "api.host": "address the REST API, metrics and dashboard listen on",
    "api.port": "TCP port of the API (0 = any free port)",
    "mqtt.host": "MQTT broker host",
    "mqtt.port": "MQTT broker port",
    "mqtt.topic": "publish topic; may use {node}, {group} and {source_node}",
    "mqtt.qos": "MQTT quality of service for published samples",
    "mqtt.client_id": "MQTT client id (default: derived from the node)",
    "mqtt.username": "broker user name",
    "mqtt.password": "broker password",
    "mqtt.tls": "TLS to the broker; omit for plain TCP",
    "mqtt.tls.ca_file": "CA bundle that signs the broker's certificate",
    "mqtt.tls.cert_file": "client certificate for mutual TLS",
    "mqtt.tls.key_file": "client key for mutual TLS",
    "mqtt.tls.insecure": "skip hostname verification (testing only)",
    "mqtt.inflight": "QoS 1/2 messages awaiting acknowledgement at once",
    "mqtt.keepalive": "MQTT keepalive, seconds",
    "outbox.max_rows": "samples kept while the broker is unreachable",
    "outbox.overflow": "which samples to drop when the outbox is full",
    "devices[].name": "device name, unique; used in topics",
    "devices[].host": "device address",
    "devices[].port": "Modbus TCP port",
    "devices[].unit": "Modbus unit (slave) id",
    "devices[].timeout": "seconds to wait for a response",
    "devices[].reconnect_min": "first reconnect delay, seconds",
    "devices[].reconnect_max": "longest reconnect delay, seconds",
    "devices[].groups": "tags polled together",
    "devices[].groups[].name": "group name, unique within the device",
    "devices[].groups[].tags": "the values read in this group",
    "devices[].groups[].tags[].name": "tag name, unique within the group",
    "devices[].groups[].tags[].area": "Modbus table the value lives in",
    "devices[].groups[].tags[].address": "first register (or coil), 0-based",
    "devices[].groups[].tags[].type": "how the registers become a value",
    "devices[].groups[].tags[].bit": "bit within the register, for type bit",
    "devices[].groups[].tags[].length": "registers a string occupies",
    "devices[].groups[].tags[].word_order": "order of 16-bit words in multi-register values",
    "devices[].groups[].tags[].byte_order": "order of bytes within each register",
    "devices[].groups[].tags[].scale": "value = raw * scale + offset",
    "devices[].groups[].tags[].offset": "value = raw * scale + offset",
    "ha.cluster": "name of the pair; both nodes must agree",
    "ha.priority": "VRRP priority; the higher healthy node becomes master",
    "ha.standby": "hot: the backup polls and buffers too; warm and cold poll only while master",
    "ha.recovery": "whether the returning preferred node takes the role back by itself",
    "ha.secret": "peer-link shared secret (or use secret_file)",
    "ha.secret_file": "file holding the peer-link secret",
    "ha.require_same_config": "refuse to pair when the peer's config differs",
    "ha.vrrp": "the election on the wire",
    "ha.health": "how hub health lowers the priority",
    "ha.hooks": "scripts run on role changes",
    "ha.vrrp.transport": "raw: VRRP (IP protocol 112) like keepalived; udp: adverts over UDP",
    "ha.vrrp.vrid": "virtual router id; both nodes must match",
    "ha.vrrp.version": "VRRP version (2: RFC 3768, 3: RFC 5798)",
    "ha.vrrp.unicast_src_ip": "source address of unicast adverts",
    "ha.vrrp.unicast_peers": "peers to send adverts to; empty means multicast (raw only)",
    "ha.vrrp.udp_port": "port for the udp transport",
    "ha.vrrp.vips": "virtual addresses the master holds",
    "ha.hooks.notify_master": "run on becoming master",
    "ha.hooks.notify_backup": "run on becoming backup",
    "ha.hooks.notify_fault": "run on entering fault",
    "ha.hooks.notify_stop": "run when the node stops",
    "ha.hooks.notify": "run on every change with keepalived's arguments",
    "ha.hooks.timeout": "seconds a hook may run before it is killed",
}
_FALLBACK_DEFAULTS: dict[str, str] = {"data_dir": "`.tandem/<node>`"}
_FALLBACK_SECTION_DOCS: dict[str, str] = {
    "api": "The REST API, Prometheus metrics and dashboard.",
    "mqtt": "The MQTT broker samples are published to.",
    "mqtt.tls": "TLS settings for the broker connection.",
    "outbox": "The on-disk buffer between poller and publisher.",
}
_CONSTRAINT_ATTRS = (
    ("ge", ">= {}"),
    ("gt", "> {}"),
    ("le", "<= {}"),
    ("lt", "< {}"),
    ("min_length", "min length {}"),
    ("max_length", "max length {}"),
    ("pattern", "pattern `{}`"),
)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def type_name(annotation: Any) -> str:
    """A reader's name for a field type (no typing-module noise)."""
    origin = get_origin(annotation)
    if origin is Annotated:  # a discriminated union (devices by protocol) or a tagged member
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        if _models_in(item):
            return "list of sections"
        return f"list of {type_name(item)}"
    names = {
        type(None): "null",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        IPv4Address: "IPv4 address",
        IPv4Interface: "IPv4 address/prefix",
    }
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return str(annotation)


def _default_text(path: str, info: FieldInfo) -> str:
    if path in _FALLBACK_DEFAULTS:
        return _FALLBACK_DEFAULTS[path]
    if info.is_required():
        return "required"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "section defaults"
    if value is None:
        return "not set"
    return f"`{json.dumps(value, default=str)}`"


def _constraints(info: FieldInfo) -> str:
    found: list[str] = []
    for meta in info.metadata:
        for attr, template in _CONSTRAINT_ATTRS:
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(template.format(value))
    return ", ".join(found)


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """One field of the native config as the reference shows it."""

    path: str
    type: str
    default: str
    constraints: str
    description: str


def _is_list(annotation: Any) -> bool:
    """A list, or an optional list (``list[X] | None``)."""
    if get_origin(annotation) is list:
        return True
    return get_origin(annotation) in (Union, types.UnionType) and any(
        get_origin(arg) is list for arg in get_args(annotation)
    )


def _variant_label(model: type[BaseModel]) -> str:
    """How the reference tells union members apart: by their ``protocol``, if they have one."""
    info = model.model_fields.get("protocol")
    if info is None or get_origin(info.annotation) is not Literal:
        return ""
    return f" (protocol: {get_args(info.annotation)[0]})"


def _sections(
    model: type[BaseModel],
    prefix: str,
    label: str = "",
    seen: dict[str, set[type[BaseModel]]] | None = None,
) -> Iterator[tuple[str, type[BaseModel], list[ReferenceRow]]]:
    """Each section once; members of a union get a label, a section they share is shown once."""
    seen = {} if seen is None else seen
    rows: list[ReferenceRow] = []
    nested: list[tuple[str, type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        description = info.description or _FALLBACK_DESCRIPTIONS.get(path, "")
        rows.append(
            ReferenceRow(
                path,
                type_name(info.annotation),
                _default_text(path, info),
                _constraints(info),
                description,
            )
        )
        subs = _models_in(info.annotation)
        for sub in subs:
            suffix = "[]" if _is_list(info.annotation) else ""
            nested.append((f"{path}{suffix}", sub, _variant_label(sub) if len(subs) > 1 else label))
    yield prefix.rstrip(".") + label, model, rows
    for path, sub, sub_label in nested:
        models = seen.setdefault(path, set())
        if sub in models:
            continue
        # Only a path that means different sections in different members needs its label.
        shown = sub_label if models or _variant_label(sub) else ""
        models.add(sub)
        yield from _sections(sub, f"{path}.", shown, seen)


def reference_rows() -> list[tuple[str, str, list[ReferenceRow]]]:
    """Every section of TandemConfig: its path, its purpose and its fields."""
    sections = []
    for path, model, rows in _sections(TandemConfig, ""):
        doc = (model.__dict__.get("__doc__") or "").strip().splitlines()
        purpose = doc[0] if doc else _FALLBACK_SECTION_DOCS.get(path.replace("[]", ""), "")
        sections.append((path, purpose, rows))
    return sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if "\\|" not in text else text


def render_reference() -> str:
    """The Markdown configuration reference (docs/configuration.md is this, committed)."""
    out = [
        "# Tandem configuration reference",
        "",
        "<!-- Generated by `tandem config reference > docs/configuration.md`; do not edit. -->",
        "",
        "Every key of the native YAML config, generated from the pydantic models in",
        "`src/tandem/config/hub.py`. Unknown keys are rejected. `[]` marks a list of sections.",
        "Check a file with `tandem config validate FILE`. Devices, groups and tags can also be",
        "edited in the dashboard's Configuration tab or over REST, by the same rules, with the",
        "file's comments kept ([dashboard.md](dashboard.md#the-configuration-tab)).",
        "",
    ]
    for path, purpose, rows in reference_rows():
        out += [f"## `{path}`" if path else "## Top level", ""]
        if purpose:
            out += [purpose, ""]
        out += [
            "| Key | Type | Default | Constraints | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            out.append(
                f"| `{row.path}` | {_cell(row.type)} | {_cell(row.default)} | "
                f"{_cell(row.constraints)} | {_cell(row.description)} |"
            )
        out.append("")
    return "\n".join(out)
