"""The OPC UA value boundary: DataValues from a server become values or per-tag errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from tandem.config.hub import TagConfig
from tandem.hub.codec import ERR_DECODE, ERR_DISCONNECTED, ERR_TIMEOUT, ERR_TYPE
from tandem.hub.opcua_values import (
    ACCEPTED_VARIANTS,
    Checked,
    check_value,
    error_status,
    modbus_tag_type,
    north_variant,
    status_error,
)

VT = ua.VariantType
SC = ua.StatusCodes


def dv(value: Any, vt: ua.VariantType | None = None, status: int = 0) -> ua.DataValue:
    variant = ua.Variant(value, vt) if vt is not None else ua.Variant(value)
    return ua.DataValue(variant, StatusCode=ua.StatusCode(status))


def check(kind: str, data_value: Any, uncertain: bool = False) -> Checked:
    return check_value(kind, data_value, max_length=16, accept_uncertain=uncertain)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value", "vt"),
    [
        ("bool", True, VT.Boolean),
        ("int8", -5, VT.SByte),
        ("uint8", 200, VT.Byte),
        ("int16", -1234, VT.Int16),
        ("int16", 100, VT.Byte),
        ("uint16", 65535, VT.UInt16),
        ("int32", -70000, VT.Int32),
        ("int32", 65535, VT.UInt16),
        ("uint32", 4_000_000_000, VT.UInt32),
        ("int64", -(2**40), VT.Int64),
        ("int64", 4_000_000_000, VT.UInt32),
        ("uint64", 2**63, VT.UInt64),
        ("float32", 1.5, VT.Float),
        ("float64", 1.5, VT.Float),
        ("float64", -2.25, VT.Double),
        ("string", "TANDEM", VT.String),
    ],
)
def test_opcua_values_matching_types_are_values(kind: str, value: Any, vt: ua.VariantType) -> None:
    assert check(kind, dv(value, vt)) == Checked(value=value)


@pytest.mark.parametrize(
    ("kind", "value", "vt"),
    [
        ("int16", 5, VT.Int32),  # could lose range
        ("uint16", -1, VT.SByte),  # sign
        ("float32", 1.5, VT.Double),  # precision
        ("int32", 1.0, VT.Double),
        ("bool", 1, VT.Byte),
        ("string", b"bytes", VT.ByteString),
        ("float64", "1.5", VT.String),
    ],
)
def test_opcua_values_other_types_are_type_errors(
    kind: str, value: Any, vt: ua.VariantType
) -> None:
    result = check(kind, dv(value, vt))
    assert result.error == ERR_TYPE and result.value is None


def test_opcua_values_arrays_and_nulls_are_type_errors() -> None:
    assert check("float64", dv([1.0, 2.0], VT.Double)).error == ERR_TYPE
    assert check("int16", dv(None)).error == ERR_TYPE
    assert check("int16", ua.DataValue()).error == ERR_TYPE
    assert check("int16", None).error == ERR_TYPE
    assert check("int16", object()).error == ERR_TYPE


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_opcua_values_non_finite_floats_are_decode_errors(value: float) -> None:
    assert check("float64", dv(value, VT.Double)).error == ERR_DECODE


def test_opcua_values_long_strings_are_decode_errors() -> None:
    assert check("string", dv("x" * 16, VT.String)).value == "x" * 16
    assert check("string", dv("x" * 17, VT.String)).error == ERR_DECODE


def test_opcua_values_bad_status_is_the_code_without_info_bits() -> None:
    code = SC.BadSensorFailure | 0x0400  # an info bit set
    result = check("float64", dv(1.0, VT.Double, code))
    assert result.error == SC.BadSensorFailure


def test_opcua_values_uncertain_is_an_error_unless_accepted() -> None:
    uncertain = SC.UncertainLastUsableValue
    assert check("float64", dv(1.0, VT.Double, uncertain)).error == uncertain
    assert check("float64", dv(1.0, VT.Double, uncertain), uncertain=True).value == 1.0


def test_opcua_values_good_with_info_bits_is_a_value() -> None:
    assert check("int16", dv(3, VT.Int16, SC.GoodClamped)).value == 3


def test_opcua_values_status_error_of_plain_bad_keeps_bad() -> None:
    assert status_error(0x8000_0000) == SC.Bad
    assert status_error(0x8000_FFFF) == SC.Bad


@given(
    kind=st.sampled_from(sorted(ACCEPTED_VARIANTS)),
    status=st.integers(min_value=0, max_value=2**32 - 1),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.lists(st.integers(), max_size=3),
    ),
    vt=st.sampled_from(list(VT)),
)
def test_opcua_values_anything_from_a_server_never_raises(
    kind: str, status: int, value: Any, vt: ua.VariantType
) -> None:
    try:
        data_value = ua.DataValue(ua.Variant(value, vt), StatusCode=ua.StatusCode(status))
    except Exception:  # asyncua refuses to build it: a server could still send it raw
        data_value = ua.DataValue(StatusCode=ua.StatusCode(status))
        object.__setattr__(data_value, "Value", ua.Variant())
        object.__setattr__(data_value.Value, "Value", value)
        object.__setattr__(data_value.Value, "VariantType", vt)
    result = check(kind, data_value)
    assert (result.value is None) != (result.error is None)
    if result.value is not None:
        assert north_variant(kind, result.value) is not None  # type: ignore[arg-type]


def test_opcua_values_modbus_tags_map_to_their_value_types() -> None:
    assert modbus_tag_type(TagConfig(name="a", address=0, type="int16")) == "int16"
    assert modbus_tag_type(TagConfig(name="a", address=0, type="bit", bit=3)) == "bool"
    assert modbus_tag_type(TagConfig(name="a", area="coil", address=0, type="bool")) == "bool"
    assert modbus_tag_type(TagConfig(name="a", address=0, type="string", length=2)) == "string"
    assert modbus_tag_type(TagConfig(name="a", address=0, type="uint16", scale=0.1)) == "float64"
    assert modbus_tag_type(TagConfig(name="a", address=0, type="float32")) == "float32"


def test_opcua_values_tandem_errors_map_to_status_codes() -> None:
    assert error_status(ERR_DISCONNECTED) == SC.BadNotConnected
    assert error_status(ERR_TIMEOUT) == SC.BadTimeout
    assert error_status(ERR_TYPE) == SC.BadTypeMismatch
    assert error_status(2002) == SC.BadOutOfRange
    assert error_status(2099) == SC.BadDeviceFailure
    assert error_status(SC.BadSensorFailure) == SC.BadSensorFailure


def test_opcua_values_north_variant_refuses_what_does_not_fit() -> None:
    assert north_variant("int16", 70000) is None
    assert north_variant("float64", 1) is None
    variant = north_variant("uint16", 7)
    assert variant is not None and variant.VariantType == VT.UInt16
