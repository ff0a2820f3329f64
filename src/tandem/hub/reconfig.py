"""Which pollers a live config change keeps, replaces and adds: a pure plan over two configs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tandem.config.hub import DeviceConfig


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """Per new device (by index): the old device's index it comes from, if any.

    `keep`: unchanged devices, whose pollers run on without a gap. `replaced`: same name,
    changed settings, whose new pollers continue the old ones' slots. Old devices in neither
    are gone.
    """

    origin: tuple[int | None, ...]
    keep: dict[int, int]  # new index -> old index
    replaced: dict[int, int]  # new index -> old index


def plan_devices(old: Sequence[DeviceConfig], new: Sequence[DeviceConfig]) -> DevicePlan:
    old_index = {device.name: i for i, device in enumerate(old)}
    origin = tuple(old_index.get(device.name) for device in new)
    keep: dict[int, int] = {}
    replaced: dict[int, int] = {}
    for new_i, old_i in enumerate(origin):
        if old_i is None:
            continue
        if old[old_i] == new[new_i]:
            keep[new_i] = old_i
        else:
            replaced[new_i] = old_i
    return DevicePlan(origin, keep, replaced)


__all__ = ["DevicePlan", "plan_devices"]
