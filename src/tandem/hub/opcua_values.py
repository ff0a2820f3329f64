"""OPC UA values at the boundary: server DataValues checked into tag values or per-tag errors.

Pure functions, shared by the southbound client (a DataValue from a server becomes a value or
an error code) and the northbound server (a Tandem tag type becomes a variable's DataType, a
Tandem error becomes a StatusCode). Nothing a server sends can raise out of `check_value`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from tandem.config.hub import OpcUaTagType, TagConfig
from tandem.hub.codec import (
    ERR_DECODE,
    ERR_DISCONNECTED,
    ERR_IO,
    ERR_MODBUS_EXCEPTION_BASE,
    ERR_TIMEOUT,
    ERR_TYPE,
)
from tandem.hub.model import Value

VT = ua.VariantType

# Variant types a tag of each Tandem type accepts: its own and every narrower one that widens
# to it without loss. Anything else (another type, an array, a null) is a type mismatch.
ACCEPTED_VARIANTS: dict[str, frozenset[ua.VariantType]] = {
    "bool": frozenset({VT.Boolean}),
    "int8": frozenset({VT.SByte}),
    "uint8": frozenset({VT.Byte}),
    "int16": frozenset({VT.SByte, VT.Byte, VT.Int16}),
    "uint16": frozenset({VT.Byte, VT.UInt16}),
    "int32": frozenset({VT.SByte, VT.Byte, VT.Int16, VT.UInt16, VT.Int32}),
    "uint32": frozenset({VT.Byte, VT.UInt16, VT.UInt32}),
    "int64": frozenset({VT.SByte, VT.Byte, VT.Int16, VT.UInt16, VT.Int32, VT.UInt32, VT.Int64}),
    "uint64": frozenset({VT.Byte, VT.UInt16, VT.UInt32, VT.UInt64}),
    "float32": frozenset({VT.Float}),
    "float64": frozenset({VT.Float, VT.Double}),
    "string": frozenset({VT.String}),
}
# The variable type the northbound server gives a tag of each Tandem type.
VARIANT_OF: dict[str, ua.VariantType] = {
    "bool": VT.Boolean,
    "int8": VT.SByte,
    "uint8": VT.Byte,
    "int16": VT.Int16,
    "uint16": VT.UInt16,
    "int32": VT.Int32,
    "uint32": VT.UInt32,
    "int64": VT.Int64,
    "uint64": VT.UInt64,
    "float32": VT.Float,
    "float64": VT.Double,
    "string": VT.String,
}
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}

# Part 4, 7.39.1: the top two bits of a StatusCode are its severity; the low 16 bits are
# info bits and flags that say nothing about whether the value is usable.
SEVERITY_MASK = 0xC000_0000
SEVERITY_UNCERTAIN = 0x4000_0000
CODE_MASK = 0xFFFF_0000


def status_error(code: int) -> int:
    """The per-tag error for a non-Good StatusCode: the code without its info bits."""
    return code & CODE_MASK or StatusCodes.Bad


def is_good(code: int) -> bool:
    return code & SEVERITY_MASK == 0


def is_uncertain(code: int) -> bool:
    return code & SEVERITY_MASK == SEVERITY_UNCERTAIN


@dataclass(frozen=True, slots=True)
class Checked:
    """One DataValue after the boundary: a value, or an error code and why."""

    value: Value | None = None
    error: int | None = None
    reason: str = ""


def _status_of(data_value: Any) -> int:
    status = getattr(data_value, "StatusCode", None)
    if status is None:
        return 0  # Part 4, 7.7: an omitted StatusCode is Good
    code = getattr(status, "value", status)
    return code if isinstance(code, int) and 0 <= code <= 0xFFFF_FFFF else StatusCodes.Bad


def check_value(
    tandem_type: OpcUaTagType, data_value: Any, *, max_length: int, accept_uncertain: bool
) -> Checked:
    """A DataValue from a server as a tag value, or the per-tag error it earns.

    Hostile until checked: a Bad status, a type other than the tag's, an array, a null, a
    NaN or infinite float, a string longer than ``max_length`` are errors, never exceptions.
    """
    code = _status_of(data_value)
    if not (is_good(code) or (accept_uncertain and is_uncertain(code))):
        return Checked(error=status_error(code), reason=f"status 0x{code:08X}")
    variant = getattr(data_value, "Value", None)
    if not isinstance(variant, ua.Variant):
        return Checked(error=ERR_TYPE, reason="no value")
    if variant.is_array or variant.Dimensions or isinstance(variant.Value, list | tuple):
        return Checked(error=ERR_TYPE, reason="an array")
    if variant.VariantType not in ACCEPTED_VARIANTS[tandem_type]:
        return Checked(error=ERR_TYPE, reason=f"a {variant.VariantType.name}")
    return _check_python(tandem_type, variant.Value, max_length)


def _check_python(tandem_type: str, value: Any, max_length: int) -> Checked:
    if tandem_type == "bool":
        return Checked(value=value) if isinstance(value, bool) else _mismatch(value)
    if tandem_type in INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            return _mismatch(value)
        low, high = INT_RANGES[tandem_type]
        if not low <= value <= high:
            return Checked(error=ERR_DECODE, reason=f"{value} out of range")
        return Checked(value=value)
    if tandem_type in ("float32", "float64"):
        if not isinstance(value, float):
            return _mismatch(value)
        if not math.isfinite(value):
            return Checked(error=ERR_DECODE, reason=f"{value} cannot be published")
        return Checked(value=value)
    if not isinstance(value, str):
        return _mismatch(value)
    if len(value) > max_length:
        return Checked(error=ERR_DECODE, reason=f"a string of {len(value)} characters")
    return Checked(value=value)


def _mismatch(value: Any) -> Checked:
    return Checked(error=ERR_TYPE, reason=f"a Python {type(value).__name__}")


# --- northbound: Tandem tags and errors as OPC UA variables --------------------------------


def modbus_tag_type(tag: TagConfig) -> OpcUaTagType:
    """The Tandem type a Modbus tag's values have: scaled numbers are floats."""
    if tag.area in ("coil", "discrete") or tag.type in ("bool", "bit"):
        return "bool"
    if tag.type == "string":
        return "string"
    if tag.scale != 1.0 or tag.offset != 0.0:
        return "float64"
    kind: OpcUaTagType = tag.type  # type: ignore[assignment]  # the remaining TagTypes
    return kind


def north_variant(tandem_type: OpcUaTagType, value: Value) -> ua.Variant | None:
    """A stored value as a Variant of its variable's type; None if it does not fit."""
    checked = _check_python(tandem_type, value, max_length=2**31)
    if checked.error is not None:
        return None
    return ua.Variant(value, VARIANT_OF[tandem_type])


# Tandem's own codes (hub/codec.py) as the closest Part 4 StatusCodes; Modbus exceptions by
# their meaning (Modbus Application Protocol v1.1b3, 7).
_STATUS_OF_ERROR: dict[int, int] = {
    ERR_DISCONNECTED: StatusCodes.BadNotConnected,
    ERR_TIMEOUT: StatusCodes.BadTimeout,
    ERR_IO: StatusCodes.BadCommunicationError,
    ERR_DECODE: StatusCodes.BadDecodingError,
    ERR_TYPE: StatusCodes.BadTypeMismatch,
    ERR_MODBUS_EXCEPTION_BASE + 1: StatusCodes.BadNotSupported,
    ERR_MODBUS_EXCEPTION_BASE + 2: StatusCodes.BadOutOfRange,
    ERR_MODBUS_EXCEPTION_BASE + 3: StatusCodes.BadOutOfRange,
    ERR_MODBUS_EXCEPTION_BASE + 4: StatusCodes.BadDeviceFailure,
    ERR_MODBUS_EXCEPTION_BASE + 6: StatusCodes.BadResourceUnavailable,
    ERR_MODBUS_EXCEPTION_BASE + 10: StatusCodes.BadNoCommunication,
    ERR_MODBUS_EXCEPTION_BASE + 11: StatusCodes.BadNoCommunication,
}


def error_status(error: int) -> int:
    """The StatusCode a northbound client sees for a tag with this Tandem error."""
    if error >= SEVERITY_UNCERTAIN:
        return error & CODE_MASK  # it came from an OPC UA server: pass it on as it was
    return _STATUS_OF_ERROR.get(error, StatusCodes.BadDeviceFailure)
