"""One Neuron Modbus tag -> one Tandem tag: address syntax, type codes, byte orders, attributes,
decimal/bias/precision. Pure: no I/O, every outcome a value.

The byte orders follow what Neuron's source does (plugins/modbus/modbus_req.c decodes, then
src/adapter/driver/driver.c applies the tag's #suffix), on a little-endian host, which is
every NeuronEX build. That matches Neuron's documentation tables; the comments in
include/neuron/tag.h say the opposite for #L/#B (16 and 64 bit) and for the 32-bit
suffixes, and are not what the code does. Orders are written as the wire bytes of the
registers in the order that forms the big-endian value: "4321" means the last byte read
is the most significant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tandem.config.neuron_export import Reason, Tag

# include/neuron/type.h (neu_type_e)
INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT, DOUBLE, BIT, BOOL, STRING = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
)  # fmt: skip
TYPE_NAMES: dict[int, str] = {
    1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32", 7: "INT64",
    8: "UINT64", 9: "FLOAT", 10: "DOUBLE", 11: "BIT", 12: "BOOL", 13: "STRING", 14: "BYTES",
    15: "ERROR", 16: "WORD", 17: "DWORD", 18: "LWORD", 19: "PTR", 20: "TIME",
    21: "DATA_AND_TIME", 22: "ARRAY_CHAR", 23: "ARRAY_INT8", 24: "ARRAY_UINT8",
    25: "ARRAY_INT16", 26: "ARRAY_UINT16", 27: "ARRAY_INT32", 28: "ARRAY_UINT32",
    29: "ARRAY_INT64", 30: "ARRAY_UINT64", 31: "ARRAY_FLOAT", 32: "ARRAY_DOUBLE",
    33: "ARRAY_BOOL", 34: "ARRAY_STRING", 40: "CUSTOM",
}  # fmt: skip
ARRAY_TYPES = frozenset(range(22, 35))
TANDEM_TYPES: dict[int, str] = {
    INT16: "int16", UINT16: "uint16", INT32: "int32", UINT32: "uint32", INT64: "int64",
    UINT64: "uint64", FLOAT: "float32", DOUBLE: "float64",
}  # fmt: skip
NUMBER_CODES = frozenset(TANDEM_TYPES)

# include/neuron/tag.h (neu_attribute_e); STATIC is 8 in the releases that have static tags.
ATTR_READ, ATTR_WRITE, ATTR_SUBSCRIBE, ATTR_STATIC = 1, 2, 4, 8

# Neuron's area digits (plugins/modbus/modbus_point.c) -> Tandem's tables.
AREAS: dict[str, str] = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}
READ_ONLY = frozenset({"discrete", "input"})

# The node's "endianess" (4 bytes) and "endianess_64" (8 bytes) settings, by value.
NODE_ORDER_32: dict[int, str] = {1: "1234", 2: "2143", 3: "4321", 4: "3412"}
NODE_ORDER_64: dict[int, str] = {
    1: "12345678",
    2: "21436587",
    3: "87654321",
    4: "78563412",
    5: "34127856",
    6: "56781234",
}
# A tag's own #suffix wins over the node setting (driver.c after modbus_req.c).
SUFFIX_16: dict[str, str] = {"": "12", "#L": "12", "#B": "21"}
SUFFIX_32: dict[str, str] = {"#LL": "1234", "#LB": "2143", "#BB": "4321", "#BL": "3412"}
SUFFIX_64: dict[str, str] = {
    "#L": "12345678", "#LL": "12345678", "#B": "87654321", "#BB": "87654321",
    "#LB": "21436587", "#BL": "78563412", "#WS": "34127856", "#WR": "56781234",
}  # fmt: skip
# Each order as Tandem says it: word order (within a 32-bit half), byte order, dword order.
ORDER_FIELDS: dict[str, dict[str, str]] = {
    "12": {},
    "21": {"byte_order": "little"},
    "1234": {},
    "2143": {"byte_order": "little"},
    "4321": {"word_order": "little", "byte_order": "little"},
    "3412": {"word_order": "little"},
    "12345678": {},
    "21436587": {"byte_order": "little"},
    "87654321": {"word_order": "little", "byte_order": "little"},
    "78563412": {"word_order": "little"},
    "34127856": {"word_order": "little", "dword_order": "big"},
    "56781234": {"dword_order": "little"},
}
# String layouts (.LEN[H|L|D|E]); no letter is H in the source (tag.c), though the
# documentation's example table calls it L.
STRING_LAYOUTS: dict[str, dict[str, str]] = {
    "H": {},
    "L": {"byte_order": "little"},
    "D": {"string_bytes": "low"},
    "E": {"string_bytes": "high"},
}
MAX_STRING_LEN = 127  # modbus_point.c
MAX_REGISTERS = 125  # one read (Modbus Application Protocol v1.1b3, 6.3)

_ADDRESS = re.compile(r"^(?P<unit>\d{1,3})!(?P<area>\d)(?P<register>\d{1,10})(?P<suffix>.*)$")
_BIT_SUFFIX = re.compile(r"^\.(?P<bit>\d{1,2})$")
_STRING_SUFFIX = re.compile(r"^\.(?P<length>\d{1,3})(?P<layout>[HLDE]?)$")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """What a Modbus node says about all its tags."""

    address_base: int = 1
    endianess: int = 1
    endianess_64: int = 1


@dataclass(frozen=True, slots=True)
class MappedTag:
    """A Tandem tag (its YAML fields) for one unit, and the rules that produced it."""

    unit: int
    fields: dict[str, Any]
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    field: str
    message: str


def _register(raw: int, base: int) -> int:
    """Neuron's start address (modbus_point.c): 65536 and base-1 address 0 are clamped."""
    if raw == 65536:
        return 65535
    if raw == 0 and base == 1:
        return 0
    return raw - base


def map_tag(tag: Tag, node: NodeSettings) -> MappedTag | Refusal:
    """The Tandem tag for one Neuron tag, or why there is none."""
    if tag.attribute & ATTR_STATIC:
        return Refusal(
            Reason.STATIC, "attribute", "a static tag (a fixed value, not read): no equivalent"
        )
    kind = _check_type(tag.type)
    if isinstance(kind, Refusal):
        return kind
    match = _ADDRESS.match(tag.address)
    if match is None:
        return Refusal(
            Reason.ADDRESS, "address", f"{tag.address!r} is not SLAVE!AREAADDRESS[suffix]"
        )
    unit, register = int(match["unit"]), int(match["register"])
    area = AREAS.get(match["area"])
    if unit > 255 or area is None or register > 65536:
        return Refusal(
            Reason.ADDRESS,
            "address",
            f"{tag.address!r}: slave 0..255, area 0, 1, 3 or 4, address up to 65536",
        )
    fields: dict[str, Any] = {"name": tag.name, "area": area}
    fields["address"] = _register(register, node.address_base)
    rules = [f"area {match['area']} -> {area}, register = address - {node.address_base}"]
    shaped = _shape(tag, area, match["suffix"], node, fields, rules)
    if isinstance(shaped, Refusal):
        return shaped
    access = _access(tag, area, fields, rules)
    if isinstance(access, Refusal):
        return access
    scaled = _scaling(tag, fields, rules)
    if isinstance(scaled, Refusal):
        return scaled
    return MappedTag(unit, fields, tuple(rules))


def _check_type(code: int) -> None | Refusal:
    if code in TANDEM_TYPES or code in (BIT, STRING):
        return None
    name = TYPE_NAMES.get(code)
    if name is None:
        return Refusal(Reason.UNKNOWN_TYPE, "type", f"type {code} is not a Neuron type")
    if code in ARRAY_TYPES:
        return Refusal(Reason.ARRAY, "type", f"{name} ({code}): Tandem has no array types")
    return Refusal(
        Reason.TYPE,
        "type",
        f"{name} ({code}) is not a Modbus tag type Tandem reads (Neuron's Modbus plugin "
        "offers INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT, DOUBLE, BIT, STRING)",
    )


def _shape(
    tag: Tag, area: str, suffix: str, node: NodeSettings, fields: dict[str, Any], rules: list[str]
) -> None | Refusal:
    """Type, length, bit and byte order: from the type code and the address suffix."""
    name = TYPE_NAMES[tag.type]
    if area in ("coil", "discrete"):
        if tag.type != BIT:
            return Refusal(Reason.TYPE, "type", f"a {area} holds bits: only BIT, not {name}")
        if suffix:
            return Refusal(Reason.ADDRESS, "address", f"a {area} address takes no {suffix!r}")
        fields["type"] = "bool"
        rules.append(f"BIT in a {area} -> type bool (published as true/false, Neuron sends 1/0)")
        return None
    if tag.type == BIT:
        found = _BIT_SUFFIX.match(suffix)
        if found is None or int(found["bit"]) > 15:
            return Refusal(Reason.ADDRESS, "address", "a BIT in a register needs .0 to .15")
        fields.update(type="bit", bit=int(found["bit"]))
        rules.append(".N on a register -> type bit, bit N (0 = least significant)")
        return None
    if tag.type == STRING:
        return _string(suffix, fields, rules)
    return _number(tag.type, suffix, node, fields, rules)


def _string(suffix: str, fields: dict[str, Any], rules: list[str]) -> None | Refusal:
    found = _STRING_SUFFIX.match(suffix)
    if found is None or not 1 <= int(found["length"]) <= MAX_STRING_LEN:
        return Refusal(
            Reason.ADDRESS, "address", f"a STRING needs .LEN[H|L|D|E], LEN 1..{MAX_STRING_LEN}"
        )
    length, layout = int(found["length"]), found["layout"] or "H"
    one_per_register = layout in ("D", "E")
    registers = length if one_per_register else (length + 1) // 2
    if registers > MAX_REGISTERS:
        return Refusal(
            Reason.TANDEM,
            "address",
            f"{length} characters of layout {layout} take {registers} registers; one read "
            f"carries {MAX_REGISTERS}",
        )
    fields.update(type="string", length=registers, **STRING_LAYOUTS[layout])
    given = "" if found["layout"] else " (no letter: H, as Neuron's source reads it)"
    rules.append(f"STRING layout {layout}{given} -> {_STRING_RULES[layout]}")
    return None


_STRING_RULES = {
    "H": "two characters per register, high byte first",
    "L": "two characters per register, low byte first (byte_order little)",
    "D": "one character per register, in the low byte (string_bytes low)",
    "E": "one character per register, in the high byte (string_bytes high)",
}


def _number(
    code: int, suffix: str, node: NodeSettings, fields: dict[str, Any], rules: list[str]
) -> None | Refusal:
    fields["type"] = TANDEM_TYPES[code]
    width = 2 if code in (INT16, UINT16) else 4 if code in (INT32, UINT32, FLOAT) else 8
    table = {2: SUFFIX_16, 4: SUFFIX_32, 8: SUFFIX_64}[width]
    if suffix in table:
        order, source = table[suffix], suffix or "no suffix"
    elif suffix == "" and width == 4:
        order, source = NODE_ORDER_32[node.endianess], f"endianess {node.endianess}"
    elif suffix == "" and width == 8:
        order, source = NODE_ORDER_64[node.endianess_64], f"endianess_64 {node.endianess_64}"
    else:
        allowed = ", ".join(sorted(s for s in table if s)) or "none"
        return Refusal(
            Reason.ADDRESS,
            "address",
            f"{suffix!r} is no byte order for {TYPE_NAMES[code]} (allowed: {allowed})",
        )
    fields.update(ORDER_FIELDS[order])
    spelled = ", ".join(f"{k} {v}" for k, v in ORDER_FIELDS[order].items()) or "the defaults"
    rules.append(f"{TYPE_NAMES[code]} with {source} (bytes {','.join(order)}) -> {spelled}")
    return None


def _access(tag: Tag, area: str, fields: dict[str, Any], rules: list[str]) -> None | Refusal:
    attribute = tag.attribute
    if attribute > 15 or not attribute & (ATTR_READ | ATTR_WRITE | ATTR_SUBSCRIBE):
        return Refusal(Reason.ATTRIBUTE, "attribute", f"{attribute} is not read/write/subscribe")
    reads = bool(attribute & (ATTR_READ | ATTR_SUBSCRIBE))
    writes = bool(attribute & ATTR_WRITE)
    if writes and area in READ_ONLY:
        return Refusal(Reason.ATTRIBUTE, "attribute", f"the {area} table cannot be written")
    if writes and fields["type"] == "bit":
        return Refusal(Reason.ATTRIBUTE, "attribute", "Neuron does not write bits of registers")
    if writes:
        fields["access"] = "read_write" if reads else "write"
        rules.append(f"attribute {attribute} -> access {fields['access']}")
    if attribute & ATTR_SUBSCRIBE:
        rules.append("subscribe (Neuron reports a value when it changes) -> published every poll")
    return None


def _scaling(tag: Tag, fields: dict[str, Any], rules: list[str]) -> None | Refusal:
    """value x decimal + bias, when either is non-zero (driver.c); precision for reals."""
    numeric = tag.type in NUMBER_CODES
    if tag.bias != 0 and not numeric:
        return Refusal(Reason.FIELD, "bias", "bias applies to numbers only (Neuron refuses it)")
    if tag.precision > 17:
        return Refusal(Reason.FIELD, "precision", "precision is 0..17")
    scaled = numeric and (tag.decimal != 0 or tag.bias != 0)
    if scaled:
        if tag.decimal not in (0, 1):
            fields["scale"] = tag.decimal
        if tag.bias != 0:
            fields["offset"] = tag.bias
        rules.append("decimal/bias -> value = raw x scale (decimal, 1 when 0) + offset (bias)")
    elif tag.decimal != 0:
        rules.append("decimal on a BIT or STRING: Neuron ignores it, so it is left out")
    real = tag.type in (FLOAT, DOUBLE) or scaled
    if tag.precision and real:
        fields["precision"] = tag.precision
        rules.append("precision N -> precision N (rounded to N decimal places, as Neuron prints)")
    elif tag.precision:
        rules.append("precision on a whole number: Neuron prints it whole, so it is left out")
    elif real:
        rules.append(
            "precision 0 on a real: Neuron prints 15 significant digits (and rounds floats for "
            "display); Tandem publishes the value itself"
        )
    return None
