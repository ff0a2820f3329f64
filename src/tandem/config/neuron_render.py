"""The imported config as YAML a plant engineer can read: one tag per line, each with the
Neuron address it came from.

Hand-rendered for the comments. Strings are JSON strings without ASCII escaping (valid YAML
double-quoted scalars; escaping characters beyond the BMP would come back as two lone
surrogates), and every float keeps a dot, which YAML 1.1 needs to read ``1e-05`` as a number.
The importer loads the text back and compares it with what it built before using it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceComments:
    """Where a device came from, and each tag's Neuron address, group by group."""

    device: str
    tags: list[list[str]]


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return text
    return json.dumps(str(value), ensure_ascii=False)


def flow(value: Any) -> str:
    """A value in YAML flow style; mapping keys are Tandem's own field names."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return scalar(value)


def _comment(text: str) -> str:
    """One comment line; a newline in a Neuron name cannot end the comment."""
    return "# " + " ".join(text.split())


def _mqtt(mqtt: Mapping[str, Any]) -> list[str]:
    if not mqtt:
        return []
    lines = [_comment("the broker Neuron's MQTT app published to"), "mqtt:"]
    lines += [f"  {key}: {flow(value)}" for key, value in mqtt.items()]
    return [*lines, ""]


def _devices(
    devices: Sequence[Mapping[str, Any]], comments: Mapping[str, DeviceComments]
) -> list[str]:
    if not devices:
        return ["devices: []"]
    lines = ["devices:"]
    for device in devices:
        notes = comments.get(device["name"])
        if notes is not None:
            lines.append("  " + _comment(notes.device))
        first = True
        for key, value in device.items():
            if key == "groups":
                continue
            lines.append(f"  {'- ' if first else '  '}{key}: {flow(value)}")
            first = False
        lines.append("    groups:")
        for gi, group in enumerate(device["groups"]):
            lines.append(f"      - name: {scalar(group['name'])}")
            lines.append(f"        interval: {scalar(group['interval'])}")
            lines.append("        tags:")
            addresses = notes.tags[gi] if notes is not None else []
            for ti, tag in enumerate(group["tags"]):
                where = f"  {_comment(addresses[ti])}" if ti < len(addresses) else ""
                lines.append(f"          - {flow(tag)}{where}")
    return lines


def render_hub_block(
    mqtt: Mapping[str, Any],
    devices: Sequence[Mapping[str, Any]],
    comments: Mapping[str, DeviceComments],
) -> str:
    """The mqtt and devices sections alone, to sit inside another generated config."""
    return "\n".join([*_mqtt(mqtt), *_devices(devices, comments)]) + "\n"


def render_config(source: str, node: str, data_dir: str, hub_block: str) -> str:
    """The whole config: who and where, then the hub block (render_hub_block)."""
    head = [
        _comment(f"Tandem native config imported from {source} (a Neuron / NeuronEX export)."),
        "# Each mapping is explained on stderr; each tag keeps its Neuron address as a comment.",
        "# Check it with: tandem config validate <this file>",
        f"node: {scalar(node)}",
        f"data_dir: {scalar(data_dir)}",
        "",
    ]
    return "\n".join(head) + "\n" + hub_block
