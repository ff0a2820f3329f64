"""Importing a Neuron/NeuronEX site: its exported drivers, groups and tags become Tandem
devices, its MQTT app the mqtt section, each mapping explained as a note.

Reading the export is neuron_export (the hostile-input boundary), one tag is neuron_tags, the
MQTT app and subscriptions neuron_north; this module builds devices (one per Neuron node and
unit id), runs Tandem's own config checks on them, and renders the commented YAML.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.config.hub import (
    NAME_PATTERN,
    PROTOCOLS,
    TagConfig,
    TandemConfig,
    cross_field_problems,
    parse_device,
)
from tandem.config.migrate import DEFAULT_DATA_DIR, Note
from tandem.config.neuron_export import (
    MAX_EXPORT_BYTES,
    Driver,
    ExportUnreadable,
    Group,
    Origin,
    Printable,
    Problem,
    Reason,
    read_export,
)
from tandem.config.neuron_north import North, map_north, topic_template
from tandem.config.neuron_render import DeviceComments, render_config, render_hub_block
from tandem.config.neuron_tags import NodeSettings, Refusal, map_tag
from tandem.config.yamlload import LocatedDocument
from tandem.errors import ConfigError, ConfigProblem

DEFAULT_NODE = "tandem"
MODBUS_TCP, MODBUS_RTU, MODBUS_RTU_OVER_TCP = "modbus tcp", "modbus rtu", "modbus rtu over tcp"
# include/neuron/connection and plugins/modbus/modbus-rtu.json: serial settings by code.
BAUD = {0: 115200, 1: 57600, 2: 38400, 3: 19200, 4: 9600, 5: 4800, 6: 2400, 7: 1800,
        8: 1200, 9: 600, 10: 300, 11: 200, 12: 150}  # fmt: skip
PARITY = {0: "N", 1: "O", 2: "E", 3: "mark", 4: "space"}
STOP_BITS = {0: 1, 1: 2}
DATA_BITS = {0: 5, 1: 6, 2: 7, 3: 8}
# Neuron's request pacing, retries and degradation: Tandem's lines have their own rules.
PACING_PARAMS = (
    "interval", "max_retries", "retry_interval", "device_degrade", "degrade_cycle",
    "degrade_time", "check_header",
)  # fmt: skip
MAX_CHECK_ROUNDS = 8
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class NeuronOptions:
    """What the operator adds to the export: names, and what to do with the unsupported."""

    node: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    skip_unsupported: bool = False
    # Groups no MQTT app subscribes to were never published; import them anyway?
    all_groups: bool = False
    # The broker password goes out only into a file the caller creates mode 0600.
    keep_password: bool = False
    # False when another importer (import-keepalived --neuron) names the node.
    names_node: bool = True


@dataclass(frozen=True, slots=True)
class NeuronImport:
    """The native YAML (validated), its hub part for import-keepalived, and the notes."""

    yaml_text: str
    hub_block: str
    notes: tuple[Note, ...]
    config: TandemConfig
    has_password: bool


class _Params(BaseModel):
    """A Modbus node's params (plugins/modbus/modbus-tcp.json, modbus-rtu.json)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    host: Printable | None = Field(default=None, min_length=1, max_length=255)
    port: int = Field(default=502, ge=1, le=65535)
    timeout: int = Field(default=3000, ge=1, le=3_600_000)
    connection_mode: int = Field(default=0, ge=0, le=1)
    link: int = Field(default=0, ge=0, le=1)
    device: Printable | None = Field(default=None, min_length=1, max_length=255)
    baud: int = Field(default=4, ge=0, le=12)
    parity: int = Field(default=0, ge=0, le=4)
    stop: int = Field(default=0, ge=0, le=1)
    data: int = Field(default=3, ge=0, le=3)
    address_base: int = Field(default=1, ge=0, le=1)
    endianess: int = Field(default=1, ge=1, le=4)
    endianess_64: int = Field(default=1, ge=1, le=6)
    backup_host: Printable | None = Field(default=None, max_length=255)
    backup_port: int = Field(default=502, ge=1, le=65535)


@dataclass(slots=True)
class _GroupDraft:
    name: str
    interval: float
    tags: list[tuple[dict[str, Any], Origin, str]]  # fields, origin, Neuron address
    origin: Origin


@dataclass(slots=True)
class _DeviceDraft:
    driver: Driver
    unit: int
    connection: dict[str, Any]
    groups: list[_GroupDraft]
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        groups = [
            {
                "name": g.name,
                "interval": g.interval,
                "tags": [fields for fields, _, _ in g.tags],
            }
            for g in self.groups
        ]
        return {"name": self.name, **self.connection, "groups": groups}

    def comments(self) -> DeviceComments:
        where = f"Neuron node {self.driver.name!r} ({self.driver.plugin}), unit {self.unit}"
        return DeviceComments(where, [[address for _, _, address in g.tags] for g in self.groups])


@dataclass(slots=True)
class _Run:
    """Everything one import collects: problems, notes, and how often each rule applied."""

    options: NeuronOptions
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    rules: Counter[str] = field(default_factory=Counter)

    def refuse(self, reason: Reason, origin: Origin, fld: str, message: str) -> None:
        self.problems.append(Problem(reason, origin, fld, message))


def import_neuron(
    text: str, file: str = "<neuron export>", options: NeuronOptions = NeuronOptions()
) -> NeuronImport:
    """Turn one export into a native config; raises ConfigError listing every problem."""
    if options.node is not None and not re.match(NAME_PATTERN, options.node):
        message = f"{options.node!r}: letters, digits and _ . : - only (it names topics)"
        raise ConfigError([ConfigProblem("--node", None, "node", message)])
    try:
        export, locate = read_export(text, file)
    except ExportUnreadable as exc:
        raise ConfigError(exc.problems) from None
    run = _Run(options, problems=list(export.problems))
    north = map_north(export)
    run.problems += north.problems
    run.notes += north.notes
    published = None if options.all_groups else north.published
    if north.published is None:
        run.notes.append(
            Note(
                "warning",
                "the export has no subscriptions (global/drivers): every group is imported "
                "and published; export global/config to import only the published ones",
            )
        )
    drafts = [d for driver in export.drivers for d in _driver_devices(driver, published, run)]
    _name_devices(drafts, run)
    drafts = _tandem_checks(drafts, run)
    if run.problems:
        _raise_or_skip(run, locate())
    return _finish(drafts, north, run, file)


def import_neuron_file(path: Path, options: NeuronOptions = NeuronOptions()) -> NeuronImport:
    """import_neuron on a file; an unreadable or oversized file is a ConfigError too."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_EXPORT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem(str(path), None, "", f"not UTF-8 (byte {exc.start})")
        raise ConfigError([problem]) from None
    return import_neuron(text, str(path), options)


def _finish(drafts: list[_DeviceDraft], north: North, run: _Run, file: str) -> NeuronImport:
    if not drafts:
        run.notes.append(Note("warning", "no device to import: devices is empty"))
    for rule, count in sorted(run.rules.items()):
        run.notes.append(Note("mapped", f"{rule} ({count} tag{'s' if count != 1 else ''})"))
    mqtt = dict(north.mqtt or {})
    if north.published:
        names: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for draft in drafts:
            for group in draft.groups:
                key = (draft.driver.name, group.origin.group or "")
                names.setdefault(key, []).append((draft.name, group.name))
        template = topic_template(north.published, names, run.notes)
        if template is not None:
            mqtt["topic"] = template
    if north.password is not None and run.options.keep_password:
        mqtt["password"] = north.password
        run.notes.append(Note("mapped", "password -> mqtt.password (the file is mode 0600)"))
    elif north.password is not None:
        run.notes.append(
            Note(
                "dropped",
                "the broker password is in the export but not printed: pass -o FILE to have "
                "it written into a file only you can read, or add mqtt.password yourself",
            )
        )
    node = run.options.node or DEFAULT_NODE
    if run.options.node is None and run.options.names_node:
        run.notes.append(Note("generated", f"node: {node}; pass --node to choose the name"))
    devices = [draft.as_dict() for draft in drafts]
    comments = {draft.name: draft.comments() for draft in drafts}
    block = render_hub_block(mqtt, devices, comments)
    text = render_config(file, node, run.options.data_dir, block)
    config = _round_trip(text, node, run.options.data_dir, mqtt, devices)
    return NeuronImport(text, block, tuple(run.notes), config, "password" in mqtt)


def _round_trip(
    text: str, node: str, data_dir: str, mqtt: dict[str, Any], devices: list[dict[str, Any]]
) -> TandemConfig:
    """The rendered YAML must read back as exactly what was built, or nothing is output.

    What was built already passed Tandem's checks (_tandem_checks); what is left to prove is
    the rendering, so the text is read with the YAML loader alone and compared.
    """
    built = {"node": node, "data_dir": data_dir, "mqtt": mqtt, "devices": devices}
    if not mqtt:
        del built["mqtt"]
    if (
        yaml.load(text, Loader=yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
        != built
    ):
        raise RuntimeError("the rendered YAML does not read back as the imported config")
    return TandemConfig.model_validate(built)


def _raise_or_skip(run: _Run, doc: LocatedDocument) -> None:
    refused = [p for p in run.problems if not (run.options.skip_unsupported and p.reason.skippable)]
    if refused:
        located = [p.located(doc) for p in run.problems]
        located.sort(key=lambda p: (p.line or 0, p.field))
        raise ConfigError(located)
    for problem in run.problems:
        run.notes.append(Note("dropped", f"{problem.located(doc)} (--skip-unsupported)"))


# --- one Neuron node -> its devices ---------------------------------------------------------------


def _driver_devices(
    driver: Driver, published: dict[tuple[str, str], str] | None, run: _Run
) -> list[_DeviceDraft]:
    connection = _connection(driver, run)
    if connection is None:
        return []
    protocol, fields, settings = connection
    by_unit: dict[int, list[_GroupDraft]] = {}
    for group in driver.groups:
        if published is not None and (driver.name, group.name) not in published:
            run.notes.append(
                Note(
                    "dropped",
                    f"node {driver.name!r} group {group.name!r}: no MQTT app subscribes to "
                    "it, so Neuron did not publish it (--all-groups imports it anyway)",
                )
            )
            continue
        for unit, draft in _group_drafts(group, settings, run).items():
            by_unit.setdefault(unit, []).append(draft)
    drafts = []
    for unit, groups in sorted(by_unit.items()):
        if protocol != "modbus-tcp" and not 1 <= unit <= 247:
            origin = groups[0].tags[0][1]
            run.refuse(Reason.CONNECTION, origin, "address", f"unit {unit} on RTU: use 1..247")
            continue
        drafts.append(_DeviceDraft(driver, unit, {**fields, "unit": unit}, groups))
    if not driver.groups:
        run.notes.append(Note("dropped", f"node {driver.name!r}: no groups, nothing to poll"))
    return drafts


def _group_drafts(group: Group, settings: NodeSettings, run: _Run) -> dict[int, _GroupDraft]:
    if group.interval_ms < 10:
        run.refuse(Reason.FIELD, group.origin, "interval", "at least 10 ms")
        return {}
    drafts: dict[int, _GroupDraft] = {}
    for tag in group.tags:
        mapped = map_tag(tag, settings)
        if isinstance(mapped, Refusal):
            run.refuse(mapped.reason, tag.origin, mapped.field, mapped.message)
            continue
        try:
            TagConfig.model_validate(mapped.fields)
        except ValidationError as exc:
            message = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
            run.refuse(Reason.TANDEM, tag.origin, "address", message)
            continue
        run.rules.update(mapped.rules)
        draft = drafts.setdefault(
            mapped.unit, _GroupDraft(group.name, group.interval_ms / 1000, [], group.origin)
        )
        draft.tags.append((mapped.fields, tag.origin, tag.address))
    return drafts


def _connection(driver: Driver, run: _Run) -> tuple[str, dict[str, Any], NodeSettings] | None:
    """The device fields every unit of this node shares, or None (and why) if it has none."""
    plugin = driver.plugin.lower()
    if plugin not in (MODBUS_TCP, MODBUS_RTU, MODBUS_RTU_OVER_TCP):
        run.refuse(
            Reason.PLUGIN,
            driver.origin,
            "plugin",
            f"{driver.plugin!r} has no Tandem equivalent (Modbus TCP, Modbus RTU, Modbus RTU "
            "over TCP)",
        )
        return None
    try:
        params = _Params.model_validate(driver.params)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            run.refuse(Reason.FIELD, driver.origin, f"params.{loc}", err["msg"])
        return None
    if params.connection_mode == 1:
        run.refuse(
            Reason.CONNECTION,
            driver.origin,
            "params.connection_mode",
            "server mode (the device connects to Neuron): Tandem always connects to devices",
        )
        return None
    serial = plugin == MODBUS_RTU and params.link == 0
    fields = _serial_fields(driver, params, run) if serial else _tcp_fields(driver, params, run)
    if fields is None:
        return None
    protocol = (
        "modbus-tcp" if plugin == MODBUS_TCP else "modbus-rtu" if serial else "modbus-rtu-over-tcp"
    )
    assert protocol in PROTOCOLS
    fields = {"protocol": protocol, **fields, "timeout": params.timeout / 1000}
    dropped = [key for key in PACING_PARAMS if key in driver.params]
    if dropped:
        run.notes.append(
            Note(
                "dropped",
                f"node {driver.name!r}: {', '.join(dropped)} (Neuron's request pacing, retries "
                "and degradation; Tandem sends one request at a time per line and a group "
                "stops at its first timeout)",
            )
        )
    settings = NodeSettings(params.address_base, params.endianess, params.endianess_64)
    run.notes.append(
        Note("mapped", f"node {driver.name!r} ({driver.plugin}) -> protocol {protocol}, "
             f"timeout {params.timeout} ms -> {params.timeout / 1000:g} s")
    )  # fmt: skip
    return protocol, fields, settings


def _tcp_fields(driver: Driver, params: _Params, run: _Run) -> dict[str, Any] | None:
    if params.host is None:
        run.refuse(Reason.FIELD, driver.origin, "params.host", "required field is missing")
        return None
    if not params.backup_host:
        return {"host": params.host, "port": params.port}
    run.notes.append(
        Note(
            "mapped",
            f"node {driver.name!r}: backup_host/backup_port -> a second path with "
            "redundancy switch-on-failure (Tandem returns to the primary as soon as it "
            "answers; Neuron stays on the backup until the backup fails)",
        )
    )
    return {
        "paths": [
            {"host": params.host, "port": params.port},
            {"host": params.backup_host, "port": params.backup_port},
        ],
        "redundancy": {"mode": "switch-on-failure"},
    }


def _serial_fields(driver: Driver, params: _Params, run: _Run) -> dict[str, Any] | None:
    if params.device is None:
        run.refuse(Reason.FIELD, driver.origin, "params.device", "required field is missing")
        return None
    baud, parity = BAUD[params.baud], PARITY[params.parity]
    data_bits = DATA_BITS[params.data]
    unsupported = []
    if baud < 300:
        unsupported.append(f"{baud} baud (Tandem: 300 and up)")
    if parity in ("mark", "space"):
        unsupported.append(f"{parity} parity (Tandem: none, even, odd)")
    if data_bits != 8:
        unsupported.append(f"{data_bits} data bits (Modbus RTU frames carry 8)")
    if unsupported:
        message = "serial line: " + ", ".join(unsupported)
        run.refuse(Reason.CONNECTION, driver.origin, "params", message)
        return None
    serial = {
        "port": params.device,
        "baudrate": baud,
        "parity": parity,
        "stopbits": STOP_BITS[params.stop],
    }
    return {"serial": serial}


# --- names and Tandem's own checks ----------------------------------------------------------------


def tandem_name(name: str) -> str:
    """A Neuron name as a Tandem name (topics and paths): other characters become _."""
    return _NOT_A_NAME.sub("_", name) or "_"


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _name_devices(drafts: list[_DeviceDraft], run: _Run) -> None:
    """Device names from node names (``-unitN`` when a node has several), group names unique."""
    units: Counter[str] = Counter(d.driver.name for d in drafts)
    taken: set[str] = set()
    for draft in drafts:
        base = tandem_name(draft.driver.name)
        if units[draft.driver.name] > 1:
            base = f"{base}-unit{draft.unit}"
        draft.name = _unique(base, taken)
        if draft.name != draft.driver.name:
            run.notes.append(
                Note(
                    "mapped",
                    f"node {draft.driver.name!r} unit {draft.unit} -> device {draft.name!r}"
                    + (" (one device per unit id)" if units[draft.driver.name] > 1 else ""),
                )
            )
        groups: set[str] = set()
        for group in draft.groups:
            renamed = _unique(tandem_name(group.name), groups)
            if renamed != group.name:
                run.notes.append(
                    Note("mapped", f"group {group.name!r} -> {renamed!r} (Tandem names: "
                         "letters, digits, _ . : -)")
                )  # fmt: skip
            group.name = renamed
    assert all(re.match(NAME_PATTERN, d.name) for d in drafts)


def _tandem_checks(drafts: list[_DeviceDraft], run: _Run) -> list[_DeviceDraft]:
    """Run Tandem's config checks on the drafts; what they reject is refused where it came from.

    Rejected tags (two tags on one register, two devices on one RTU line with one unit...)
    are taken out and the checks run again, so each problem is reported once.
    """
    for _ in range(MAX_CHECK_ROUNDS):
        devices = [draft.as_dict() for draft in drafts]
        found = cross_field_problems({"devices": devices})
        for index, device in enumerate(devices):
            try:
                parse_device(device)
            except ValidationError as exc:
                message = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
                found.append((("devices", index), message))
        if not found:
            return drafts
        rejected: set[tuple[int, ...]] = set()
        for path, message in found:
            key = _draft_key(path)
            if key in rejected:
                continue
            rejected.add(key)
            run.refuse(Reason.TANDEM, _origin_of(drafts, key), "", message)
        drafts = _without(drafts, rejected)
    raise RuntimeError("Tandem's config checks did not settle on the imported devices")


def _draft_key(path: tuple[str | int, ...]) -> tuple[int, ...]:
    """(device,) or (device, group, tag) from a problem's field path."""
    numbers = [part for part in path if isinstance(part, int)]
    if len(path) > 5 and path[2] == "groups" and path[4] == "tags" and len(numbers) >= 3:
        return (numbers[0], numbers[1], numbers[2])
    return (numbers[0],) if numbers else (0,)


def _origin_of(drafts: list[_DeviceDraft], key: tuple[int, ...]) -> Origin:
    draft = drafts[key[0]]
    if len(key) == 3:
        return draft.groups[key[1]].tags[key[2]][1]
    return draft.driver.origin


def _without(drafts: list[_DeviceDraft], rejected: set[tuple[int, ...]]) -> list[_DeviceDraft]:
    kept = []
    for di, draft in enumerate(drafts):
        if (di,) in rejected:
            continue
        for gi, group in enumerate(draft.groups):
            group.tags = [t for ti, t in enumerate(group.tags) if (di, gi, ti) not in rejected]
        draft.groups = [g for g in draft.groups if g.tags]
        if draft.groups:
            kept.append(draft)
    return kept
