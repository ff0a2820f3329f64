"""The OPC UA simulator's --bad option: NAME=STATUS by name or number, anything else refused."""

from __future__ import annotations

import pytest
from asyncua import ua

from tandem.sim.opcua import pinned_statuses, status_code


def test_opcua_sim_bad_status_by_name_or_number_pinned() -> None:
    pinned = pinned_statuses(["Sine=BadSensorFailure", "Level=0x80340000"])
    assert pinned == {"Sine": ua.StatusCodes.BadSensorFailure, "Level": 0x80340000}


@pytest.mark.parametrize("item", ["Nope=BadSensorFailure", "Sine", "Sine=", "Sine=NotAStatus"])
def test_opcua_sim_bad_status_unknown_refused_with_the_item(item: str) -> None:
    with pytest.raises(ValueError, match="--bad"):
        pinned_statuses([item])


def test_opcua_sim_status_code_parses_names_and_numbers() -> None:
    assert status_code("BadTimeout") == ua.StatusCodes.BadTimeout
    assert status_code("2150891520") == 0x80340000
