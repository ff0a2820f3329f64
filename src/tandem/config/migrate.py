"""Moving between keepalived and Tandem: import and export keepalived.conf, config reference."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from tandem.config.hub import TandemConfig, load_config_text
from tandem.config.keepalived import KeepalivedConfig, VrrpInstance, VrrpScript
from tandem.config.scriptread import (
    SERVICE_SWITCH,
    ScriptText,
    only_switches_service,
    polls_local_api,
    read_scripts,
    script_lines,
    script_path,
)

__all__ = ["ImportOptions", "ImportResult", "Note", "hub_part", "import_keepalived", "read_scripts"]
from tandem.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)

# NeuronEX's dashboard port, which the guide's check_alive.sh polls; Tandem's API uses it too.
DEFAULT_API_PORT = 8085
DEFAULT_DATA_DIR = "/var/lib/tandem"
SECRET_BYTES = 24  # token_urlsafe(24) gives 32 characters, well above HaConfig's minimum of 8

NoteKind = Literal["mapped", "replaced", "dropped", "kept", "generated", "warning"]


@dataclass(frozen=True, slots=True)
class Note:
    """One sentence explaining what became of a keepalived setting, for the operator to read."""

    kind: NoteKind
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


# --- import: keepalived.conf -> native YAML -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What the operator told us that keepalived.conf cannot: names, peer link, overrides."""

    node: str | None = None
    peer_url: str | None = None
    secret: str | None = None
    instance: str | None = None
    recovery: Literal["automatic", "manual"] | None = None
    # Track scripts (or interfaces) the operator accepts to lose; anything else unknown is an error.
    drop_checks: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The native YAML (already validated) and why every keepalived setting went where it did."""

    yaml_text: str
    notes: tuple[Note, ...]
    config: TandemConfig


def _problem(cfg: KeepalivedConfig, where: Any, field: str, message: str) -> ConfigProblem:
    location = getattr(where, "location", None)
    if location is not None:
        return ConfigProblem(location.file, location.line, field, message)
    return ConfigProblem(str(cfg.source), None, field, message)


def _pick_instance(cfg: KeepalivedConfig, name: str | None) -> VrrpInstance:
    if name is not None:
        for inst in cfg.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in cfg.instances) or "none"
        raise ConfigError([_problem(cfg, None, "vrrp_instance", f"no instance {name!r} ({known})")])
    if len(cfg.instances) != 1:
        names = ", ".join(i.name for i in cfg.instances) or "none"
        raise ConfigError(
            [
                _problem(
                    cfg,
                    None,
                    "vrrp_instance",
                    f"a Tandem node runs exactly one VRRP instance; found {names}: "
                    "pick one with --instance",
                )
            ]
        )
    return cfg.instances[0]


def _yaml_scalar(value: Any) -> str:
    """One value in YAML flow syntax; JSON strings are valid YAML and always unambiguous."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value))


class _YamlWriter:
    """Hand-rendered YAML, so the output can carry comments a plant engineer can follow."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str, indent: int = 0) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append(" " * indent + ("# " + line).rstrip())

    def key(self, name: str, value: Any, indent: int = 0, comment: str | None = None) -> None:
        if comment:
            self.comment(comment, indent)
        self.lines.append(f"{' ' * indent}{name}: {_yaml_scalar(value)}")

    def section(self, name: str, indent: int = 0, comment: str | None = None) -> None:
        if comment:
            self.comment(comment, indent)
        self.lines.append(f"{' ' * indent}{name}:")

    def block(self, text: str) -> None:
        self.lines += text.rstrip("\n").splitlines()

    def blank(self) -> None:
        self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True, slots=True)
class _HubPart:
    """The hub half of an existing native config, as the operator wrote it."""

    node: str | None
    data_dir: str | None
    api_port: int
    sections: dict[str, Any]
    # Sections another importer already rendered (with its comments), and where they came from.
    block: str | None = None
    origin: str = "taken unchanged from the existing native config (--hub)"


def generated_hub_part(block: str, origin: str) -> _HubPart:
    """The hub half rendered by another importer (tandem config import-neuron), verbatim."""
    return _HubPart(None, None, DEFAULT_API_PORT, {}, block, origin)


def hub_part(hub_yaml: str, file: str = "<hub>") -> _HubPart:
    """Validate a native config and keep its hub sections (devices, mqtt, outbox, api)."""
    config = load_config_text(hub_yaml, file)
    raw = yaml.safe_load(hub_yaml)
    sections = {k: raw[k] for k in ("api", "mqtt", "outbox", "devices") if k in raw}
    data_dir = raw.get("data_dir")
    return _HubPart(config.node, str(data_dir) if data_dir else None, config.api.port, sections)


def _dump_section(name: str, value: Any) -> str:
    return yaml.safe_dump({name: value}, sort_keys=False, default_flow_style=False, width=100)


def _classify_script(
    cfg: KeepalivedConfig,
    tracked_name: str,
    vrrp_script: VrrpScript,
    scripts: Mapping[str, ScriptText],
    options: ImportOptions,
    api_ports: set[int],
) -> Note | ConfigProblem:
    """What becomes of one track script: replaced, dropped on request, or a problem."""
    script = scripts.get(vrrp_script.command, ScriptText(vrrp_script.command, None))
    timing = f"every {vrrp_script.interval:g} s, fall {vrrp_script.fall}"
    detect = vrrp_script.interval * vrrp_script.fall
    if polls_local_api(script, api_ports):
        return Note(
            "replaced",
            f"track_script {tracked_name} ({vrrp_script.command}, {timing}: a dead hub "
            f"was noticed after about {detect:g} s) -> the hub's internal health "
            "(broker, devices, poll loops) checked every ha.health.interval (0.1 s); "
            "an unhealthy node lowers its priority by ha.health weights and the peer "
            "takes over in under a second",
        )
    if tracked_name in options.drop_checks:
        return Note(
            "dropped",
            f"track_script {tracked_name} ({vrrp_script.command}) because you asked "
            "(--drop-check); it no longer influences failover",
        )
    field = f"vrrp_script {tracked_name}"
    if script.text is None and script.path is not None:
        return _problem(
            cfg,
            vrrp_script,
            field,
            f"cannot read {script.path} (also looked next to {cfg.source.name}) to tell "
            "whether it only checks the hub; copy the script there, or accept losing "
            f"it with --drop-check {tracked_name}",
        )
    return _problem(
        cfg,
        vrrp_script,
        field,
        f"{vrrp_script.command!r} checks something other than the hub, and Tandem's "
        "native HA has no script checks; keep running real keepalived "
        "(tandem config export-keepalived) or accept losing it with "
        f"--drop-check {tracked_name}",
    )


def _classify_checks(
    cfg: KeepalivedConfig,
    inst: VrrpInstance,
    scripts: Mapping[str, ScriptText],
    options: ImportOptions,
    api_ports: set[int],
    notes: list[Note],
) -> None:
    """Track scripts and interfaces: each is replaced, dropped on request, or an error."""
    problems: list[ConfigProblem] = []
    for tracked in inst.track_scripts:
        vrrp_script: VrrpScript | None = cfg.scripts.get(tracked.name)
        if vrrp_script is None:
            continue
        outcome = _classify_script(cfg, tracked.name, vrrp_script, scripts, options, api_ports)
        if isinstance(outcome, Note):
            notes.append(outcome)
        else:
            problems.append(outcome)
    for iface in inst.track_interfaces:
        if iface.name in options.drop_checks:
            notes.append(
                Note("dropped", f"track_interface {iface.name} because you asked (--drop-check)")
            )
            continue
        problems.append(
            _problem(
                cfg,
                inst,
                "track_interface",
                f"Tandem's native HA does not track interface {iface.name}; accept losing it "
                f"with --drop-check {iface.name}",
            )
        )
    if problems:
        raise ConfigError(problems)


def _map_hooks(
    inst: VrrpInstance, scripts: Mapping[str, ScriptText], notes: list[Note]
) -> dict[str, str]:
    hooks: dict[str, str] = {}
    for key, command in inst.notify_commands().items():
        if not command:
            continue
        script = scripts.get(command, ScriptText(command, None))
        if script.text is None and script_path(command) is not None:
            hooks[key] = command
            notes.append(
                Note(
                    "kept",
                    f"{key} {command}: could not read it to check what it does; if it only "
                    "starts or stops the hub service, delete it from ha.hooks",
                )
            )
        elif only_switches_service(script):
            what = "; ".join(script_lines(script.text) if script.text else [command])
            notes.append(
                Note(
                    "replaced",
                    f"{key} {command} ({what}) -> the role gate: Tandem runs hub and VRRP in one "
                    "process and the role starts and stops publishing, so no service is "
                    "started or stopped",
                )
            )
        else:
            hooks[key] = command
            notes.append(
                Note(
                    "mapped",
                    f"{key} {command} -> ha.hooks.{key} (runs as the tandem user, serialized "
                    "and awaited, unlike keepalived)",
                )
            )
            if script.text is not None and any(
                SERVICE_SWITCH.match(line) for line in script_lines(script.text)
            ):
                notes.append(
                    Note(
                        "warning",
                        f"{command} still starts or stops a service, which Tandem no longer "
                        "needs: remove those lines",
                    )
                )
    return hooks


def _recovery(inst: VrrpInstance, options: ImportOptions, notes: list[Note]) -> str:
    if options.recovery is not None:
        notes.append(Note("mapped", f"recovery: {options.recovery} because you asked (--recovery)"))
        return options.recovery
    if not inst.nopreempt:
        notes.append(
            Note(
                "mapped",
                f"preempt (priority {inst.priority}, no nopreempt) -> ha.recovery: automatic; "
                "the returning preferred node rejoins as backup and takes the role back with "
                "a zero-gap handover instead of keepalived's overlap",
            )
        )
        return "automatic"
    # keepalived honours nopreempt only while BACKUP, and only against a lower-priority master.
    # On the guide's standby (priority 90 vs 100) it therefore never fires: the priority-100
    # node takes the role back anyway. Tandem's recovery is a property of the pair, so the
    # faithful mapping is the behaviour the pair shows, not the keyword.
    notes.append(
        Note(
            "mapped",
            f"nopreempt (priority {inst.priority}) -> ha.recovery: automatic. keepalived only "
            "honours nopreempt against a LOWER-priority master, so on a standby like the "
            "guide's backup it never fires and the preferred node takes the role back anyway. "
            "If this is the preferred node and you want the role to stay where it is after a "
            "failover, pass --recovery manual (and use manual on both nodes)",
        )
    )
    return "automatic"


def _default_node(cfg: KeepalivedConfig, inst: VrrpInstance, hub: _HubPart | None) -> str:
    if hub is not None and hub.node:
        return hub.node
    router_id = cfg.globals.router_id
    if router_id and re.fullmatch(r"[A-Za-z0-9_.:-]+", router_id):
        return router_id
    return f"node-{inst.priority}"


def _peer_url(
    cfg: KeepalivedConfig, inst: VrrpInstance, options: ImportOptions, notes: list[Note]
) -> str:
    if not inst.unicast_peers and options.peer_url is None:
        raise ConfigError(
            [
                _problem(
                    cfg,
                    inst,
                    "unicast_peer",
                    "no unicast_peer to derive the peer link from: pass --peer-url "
                    "http://<peer>:8085",
                )
            ]
        )
    peer_url = options.peer_url or f"http://{inst.unicast_peers[0]}:{DEFAULT_API_PORT}"
    how = " (given)" if options.peer_url else " from the first unicast_peer and port 8085"
    notes.append(Note("mapped", f"ha.peer_url {peer_url}{how}"))
    return peer_url


def _secret(options: ImportOptions, notes: list[Note]) -> str:
    if options.secret is not None:
        notes.append(Note("mapped", "ha.secret from --secret-file / $TANDEM_SECRET"))
        return options.secret
    notes.append(
        Note(
            "generated",
            "ha.secret: both nodes must share it; import the peer with this value in "
            "--secret-file or $TANDEM_SECRET (then better move it to ha.secret_file)",
        )
    )
    return secrets.token_urlsafe(SECRET_BYTES)


def _priority(inst: VrrpInstance, notes: list[Note]) -> int:
    if inst.priority == 255:
        notes.append(
            Note("mapped", "priority 255 (address owner) -> ha.priority 254, Tandem's maximum")
        )
        return 254
    notes.append(Note("mapped", f"priority {inst.priority} -> ha.priority {inst.priority}"))
    return inst.priority


def _auth_pass(inst: VrrpInstance, notes: list[Note]) -> str | None:
    if inst.auth_type != "PASS" or not inst.auth_pass:
        return None
    if inst.version == 2:
        notes.append(Note("mapped", "authentication PASS -> ha.vrrp.auth_pass"))
        return inst.auth_pass
    notes.append(Note("dropped", "authentication because VRRPv3 carries none"))
    return None


def _explain_vrrp(cfg: KeepalivedConfig, inst: VrrpInstance, notes: list[Note]) -> None:
    """Notes for the VRRP settings that map one to one or are dropped on purpose."""
    notes.append(
        Note(
            "mapped",
            f"vrrp_instance {inst.name} -> ha.vrrp: transport raw on {inst.interface}, vrid "
            f"{inst.vrid}, version {inst.version}, advert_interval {inst.advert_int:g} s "
            "(kept so a peer still running keepalived interoperates; once both nodes run "
            "Tandem, version 3 with 0.1 s fails over in about 0.4 s)",
        )
    )
    notes.append(
        Note(
            "dropped",
            f"state {inst.state} because every node starts as backup and the priority decides",
        )
    )
    if inst.vips:
        vips = ", ".join(map(str, inst.vips))
        notes.append(Note("mapped", f"virtual_ipaddress -> ha.vrrp.vips {vips}"))
    if any(v.dev or v.label or v.broadcast or v.scope is not None for v in inst.virtual_addresses):
        notes.append(
            Note(
                "dropped",
                "virtual_ipaddress dev/label/brd/scope options: VIPs go on ha.vrrp.interface",
            )
        )
    if inst.unicast_peers:
        peers = ", ".join(map(str, inst.unicast_peers))
        notes.append(Note("mapped", f"unicast_peer -> ha.vrrp.unicast_peers {peers}"))
        notes.append(
            Note(
                "mapped",
                "a native pair accepts adverts from its unicast_peers only (keepalived does "
                "that with check_unicast_src)",
            )
        )
    if inst.preempt_delay:
        notes.append(
            Note(
                "dropped",
                f"preempt_delay {inst.preempt_delay:g} because automatic recovery hands "
                "the role back only when the returning node is ready",
            )
        )
    g = cfg.globals
    if g.skip_check_adv_addr or g.garp_interval or g.gna_interval:
        notes.append(
            Note(
                "dropped",
                "global_defs (vrrp_skip_check_adv_addr, vrrp_garp_interval, "
                "vrrp_gna_interval) because Tandem's defaults cover them",
            )
        )


@dataclass(frozen=True, slots=True)
class _NativeHa:
    """The ha section an import produces, before it is written as YAML."""

    priority: int
    recovery: str
    peer_url: str
    secret: str
    auth_pass: str | None
    hooks: dict[str, str]


def _yaml_head(
    w: _YamlWriter, cfg: KeepalivedConfig, inst: VrrpInstance, node: str, data_dir: str,
    hub: _HubPart | None,
) -> None:  # fmt: skip
    w.comment(
        f"Tandem native config imported from {cfg.source.name} (vrrp_instance {inst.name}).\n"
        "Check it with: tandem config validate <this file>"
    )
    w.key("node", node, comment="This node's name: it appears in MQTT topics and the dashboard.")
    w.key("data_dir", data_dir, comment="Outbox and state live here.")
    w.blank()
    if hub is not None and (hub.block is not None or hub.sections):
        w.comment(f"--- the hub: {hub.origin} ---")
        dumped = "".join(_dump_section(name, value) for name, value in hub.sections.items())
        w.block(hub.block if hub.block is not None else dumped)
        return
    w.comment(
        "--- the hub ---\n"
        "The Modbus devices to poll go here (same list on both nodes; the master syncs its\n"
        "config to the backup). Example:\n"
        "devices:\n"
        "  - name: plc1\n"
        "    host: 192.168.1.10\n"
        "    groups:\n"
        "      - name: fast\n"
        "        interval: 1.0\n"
        "        tags:\n"
        "          - {name: counter, address: 0, type: uint16}"
    )
    w.lines.append("devices: []")


def _yaml_ha(w: _YamlWriter, inst: VrrpInstance, ha: _NativeHa) -> None:
    w.section(
        "ha", comment="--- high availability: replaces keepalived and the guide's scripts ---"
    )
    w.key("priority", ha.priority, 2, "Higher wins the election (was keepalived's priority).")
    w.key(
        "standby",
        "hot",
        2,
        "hot: the backup keeps polling and buffering but does not publish, so a failover\n"
        "loses nothing (the guide stopped the backup's service: that is standby: cold).",
    )
    w.key(
        "recovery",
        ha.recovery,
        2,
        "automatic: when the preferred node returns it rejoins as backup and the role moves\n"
        "back with a zero-gap handover; manual: it stays backup until `tandem switchover`.",
    )
    w.key("peer_url", ha.peer_url, 2, "The other node's API: config sync and handover use it.")
    w.key("secret", ha.secret, 2, "Shared by both nodes; authenticates the peer link.")
    w.section("vrrp", 2, "The election on the wire, as keepalived did it.")
    w.key("transport", "raw", 4)
    w.key("interface", inst.interface, 4)
    w.key("vrid", inst.vrid, 4, "virtual_router_id: must match the peer.")
    w.key("version", inst.version, 4)
    advert: int | float = int(inst.advert_int) if inst.advert_int.is_integer() else inst.advert_int
    w.key("advert_interval", advert, 4, "Seconds between adverts (advert_int).")
    if inst.unicast_src_ip is not None:
        w.key("unicast_src_ip", str(inst.unicast_src_ip), 4)
    if inst.unicast_peers:
        w.key("unicast_peers", [str(p) for p in inst.unicast_peers], 4)
    if ha.auth_pass is not None:
        w.key("auth_pass", ha.auth_pass, 4, "VRRPv2 PASS authentication, as in keepalived.conf.")
    if inst.vips:
        w.key("vips", [str(v) for v in inst.vips], 4)
    w.section(
        "health",
        2,
        "Replaces check_alive.sh: the hub's own broker/device health lowers the priority.",
    )
    w.key("broker_weight", 30, 4)
    w.key("devices_weight", 30, 4)
    if ha.hooks:
        w.section("hooks", 2, "Notify scripts that do more than start/stop the service.")
        for key, command in ha.hooks.items():
            w.key(key, command, 4)


def import_keepalived(
    cfg: KeepalivedConfig,
    scripts: Mapping[str, ScriptText],
    options: ImportOptions = ImportOptions(),
    hub: _HubPart | None = None,
) -> ImportResult:
    """Turn one keepalived.conf (and what its scripts do) into a native config.

    Raises ConfigError when a setting would silently change failover behaviour (a track
    script that checks something other than the hub), rather than dropping it.
    """
    inst = _pick_instance(cfg, options.instance)
    notes: list[Note] = []
    api_port = hub.api_port if hub is not None else DEFAULT_API_PORT
    _classify_checks(cfg, inst, scripts, options, {DEFAULT_API_PORT, api_port}, notes)
    peer_url = _peer_url(cfg, inst, options, notes)
    secret = _secret(options, notes)
    priority = _priority(inst, notes)
    recovery = _recovery(inst, options, notes)
    _explain_vrrp(cfg, inst, notes)
    auth_pass = _auth_pass(inst, notes)
    hooks = _map_hooks(inst, scripts, notes)
    node = options.node or _default_node(cfg, inst, hub)
    if options.node is None and (hub is None or not hub.node):
        notes.append(Note("generated", f"node: {node}; pass --node to choose the name"))
    data_dir = hub.data_dir if hub is not None and hub.data_dir else DEFAULT_DATA_DIR
    w = _YamlWriter()
    _yaml_head(w, cfg, inst, node, data_dir, hub)
    w.blank()
    _yaml_ha(w, inst, _NativeHa(priority, recovery, peer_url, secret, auth_pass, hooks))
    text = w.text()
    try:
        config = load_config_text(text, "<imported>")
    except ConfigError as exc:
        # The keepalived parser accepts a few values the native models reject (e.g. an
        # interface-less VIP list is fine but a node name may not be); say so plainly.
        raise ConfigError(
            [ConfigProblem(str(cfg.source), None, p.field, p.message) for p in exc.problems]
        ) from exc
    for note in notes:
        log.debug("%s", note)
    return ImportResult(text, tuple(notes), config)
