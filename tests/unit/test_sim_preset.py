"""Simulator presets: known contents in the static part of the map, and what is refused."""

from __future__ import annotations

import pytest

from tandem.sim.plc import build_device, load_preset


def test_load_preset_reads_tables_and_addresses() -> None:
    preset = load_preset('{"holding": {"40": [1, 2]}, "coil": {"8": [1, 0]}}')
    assert preset == {"holding": {40: [1, 2]}, "coil": {8: [1, 0]}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "top level"),
        ('{"outputs": {"1": [1]}}', "one of"),
        ('{"holding": {"x": [1]}}', "address"),
        ('{"holding": {"40": [1.5]}}', "integers"),
        ('{"holding": {"40": [true]}}', "integers"),
        ('{"holding": {"40": 5}}', "list"),
        ("[" * 100_000, "nested"),
    ],
)
def test_load_preset_malformed_raises_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_preset(text)


@pytest.mark.parametrize(
    "preset",
    [
        {"holding": {0: [1]}},  # the counter
        {"holding": {98: [1, 2, 3]}},  # runs into the load registers
        {"input": {2: [1, 2, 3]}},
        {"coil": {7: [1]}},
        {"discrete": {0: [1]}},
        {"holding": {40: [65536]}},
        {"coil": {8: [2]}},
    ],
)
def test_build_device_preset_over_time_driven_map_rejected(preset: dict) -> None:
    with pytest.raises(ValueError, match="preset"):
        build_device(preset=preset)


def test_build_device_preset_beyond_holding_99_extends_the_table_without_load_registers() -> None:
    device = build_device(load_registers=0, preset={"holding": {200: [7, 8]}})
    holding = device.simdata[2][0]  # type: ignore[index]
    assert holding.values[200:202] == [7, 8]
