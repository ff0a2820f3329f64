"""simulate-plc options: unit lists and late units are parsed or refused with a clear message."""

from __future__ import annotations

import pytest
import typer

from tandem.cli_simulate import slow_units, unit_list


def test_unit_list_ranges_and_singles_expand_in_order() -> None:
    assert unit_list("1-3,7") == [1, 2, 3, 7]
    assert unit_list("") == []


@pytest.mark.parametrize("text", ["a", "1-x", "0", "248", "3-300"])
def test_unit_list_bad_text_is_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        unit_list(text)


def test_slow_units_milliseconds_become_seconds() -> None:
    assert slow_units(["2:1500", "3:20"]) == {2: 1.5, 3: 0.02}


@pytest.mark.parametrize("spec", ["2", "x:10", "2:fast"])
def test_slow_units_bad_spec_names_the_format(spec: str) -> None:
    with pytest.raises(typer.BadParameter, match="UNIT:MS"):
        slow_units([spec])
