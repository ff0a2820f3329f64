"""Moving between keepalived and Tandem: import and export keepalived.conf, config reference."""

from __future__ import annotations

import json
import logging
import re
import secrets
import shlex
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tandem.config.hub import TandemConfig, load_config_text
from tandem.config.keepalived import KeepalivedConfig, VrrpInstance, VrrpScript
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


@dataclass(frozen=True, slots=True)
class ScriptText:
    """What a notify or track command runs: the script file's text when it could be read."""

    command: str
    text: str | None
    path: str | None = None


# A line that only starts, stops or restarts a service or container: the guide's master.sh,
# backup.sh and fault.sh. Tandem's role gate does this job inside the process.
_SERVICE_SWITCH = re.compile(
    r"^(sudo\s+)?("
    r"(/usr)?(/s?bin/)?systemctl\s+(start|stop|restart)\s+[\w@.-]+"
    r"|(/usr)?(/s?bin/)?service\s+[\w@.-]+\s+(start|stop|restart)"
    r"|(/usr)?(/s?bin/)?docker\s+(start|stop|restart)\s+[\w.-]+"
    r")(\s*(>\S*|2>&1|\|\|\s*true))*\s*;?$"
)
_LOCAL_HTTP = re.compile(
    r"\b(curl|wget)\b.*\b(127\.0\.0\.1|localhost)(:(?P<port>\d+))?(?P<path>/\S*)?"
)
TANDEM_HEALTH_PATH = "/api/v1/health"
_SHELL_NOISE = re.compile(r"^(set\s+-\w+|exit(\s+0)?|true|:)$")


def script_lines(text: str) -> list[str]:
    """The lines of a shell script that do something (no shebang, comments or blank lines)."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _SHELL_NOISE.match(line):
            continue
        lines.append(line)
    return lines


def only_switches_service(script: ScriptText) -> bool:
    """True when every line only starts or stops a service (the guide's notify scripts)."""
    lines = script_lines(script.text) if script.text is not None else [script.command]
    return bool(lines) and all(_SERVICE_SWITCH.match(line) for line in lines)


def polls_local_api(script: ScriptText, ports: Iterable[int]) -> bool:
    """True when a track script asks the local hub whether it is alive (check_alive.sh).

    That is a request to one of ``ports`` on loopback, or to Tandem's own health endpoint on any
    port (what export-keepalived writes).
    """
    wanted = set(ports)
    body = script.text if script.text is not None else script.command
    for line in script_lines(body) or [body]:
        match = _LOCAL_HTTP.search(line)
        if match is None:
            continue
        if int(match.group("port") or 80) in wanted:
            return True
        if (match.group("path") or "").startswith(TANDEM_HEALTH_PATH):
            return True
    return False


def script_path(command: str) -> str | None:
    """The program a keepalived script command runs, when it names a file."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words and words[0].startswith(("/", "./")):
        return words[0]
    return None


def read_scripts(cfg: KeepalivedConfig, search_dirs: Iterable[Path] = ()) -> dict[str, ScriptText]:
    """Read every notify and track script the config names, keyed by its command.

    A script is looked for at its own path, then by file name next to keepalived.conf and in
    ``search_dirs``: operators often copy /etc/keepalived from the old box into a folder.
    """
    commands: list[str] = [s.command for s in cfg.scripts.values()]
    for inst in cfg.instances:
        commands += [c for c in _notify_commands(inst).values() if c]
    dirs = [cfg.source.parent, *search_dirs]
    found: dict[str, ScriptText] = {}
    for command in commands:
        path = script_path(command)
        if path is None:
            found[command] = ScriptText(command, None)
            continue
        candidates = [Path(path)] + [d / PurePosixPath(path).name for d in dirs]
        for candidate in candidates:
            try:
                found[command] = ScriptText(command, candidate.read_text(), str(candidate))
                break
            except OSError:
                continue
        else:
            found[command] = ScriptText(command, None, path)
    return found


def _notify_commands(inst: VrrpInstance) -> dict[str, str | None]:
    return {
        "notify_master": inst.notify_master,
        "notify_backup": inst.notify_backup,
        "notify_fault": inst.notify_fault,
        "notify_stop": inst.notify_stop,
        "notify": inst.notify,
    }


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


def hub_part(hub_yaml: str, file: str = "<hub>") -> _HubPart:
    """Validate a native config and keep its hub sections (devices, mqtt, outbox, api)."""
    config = load_config_text(hub_yaml, file)
    raw = yaml.safe_load(hub_yaml)
    sections = {k: raw[k] for k in ("api", "mqtt", "outbox", "devices") if k in raw}
    data_dir = raw.get("data_dir")
    return _HubPart(config.node, str(data_dir) if data_dir else None, config.api.port, sections)


def _dump_section(name: str, value: Any) -> str:
    return yaml.safe_dump({name: value}, sort_keys=False, default_flow_style=False, width=100)


def _classify_checks(
    cfg: KeepalivedConfig,
    inst: VrrpInstance,
    scripts: Mapping[str, ScriptText],
    options: ImportOptions,
    api_ports: set[int],
    notes: list[Note],
) -> None:
    problems: list[ConfigProblem] = []
    for tracked in inst.track_scripts:
        vrrp_script: VrrpScript | None = cfg.scripts.get(tracked.name)
        if vrrp_script is None:
            continue
        script = scripts.get(vrrp_script.command, ScriptText(vrrp_script.command, None))
        timing = f"every {vrrp_script.interval:g} s, fall {vrrp_script.fall}"
        detect = vrrp_script.interval * vrrp_script.fall
        if polls_local_api(script, api_ports):
            notes.append(
                Note(
                    "replaced",
                    f"track_script {tracked.name} ({vrrp_script.command}, {timing}: a dead hub "
                    f"was noticed after about {detect:g} s) -> the hub's internal health "
                    "(broker, devices, poll loops) checked every ha.health.interval (0.1 s); "
                    "an unhealthy node lowers its priority by ha.health weights and the peer "
                    "takes over in under a second",
                )
            )
        elif tracked.name in options.drop_checks:
            notes.append(
                Note(
                    "dropped",
                    f"track_script {tracked.name} ({vrrp_script.command}) because you asked "
                    "(--drop-check); it no longer influences failover",
                )
            )
        elif script.text is None and script.path is not None:
            problems.append(
                _problem(
                    cfg,
                    vrrp_script,
                    f"vrrp_script {tracked.name}",
                    f"cannot read {script.path} (also looked next to {cfg.source.name}) to tell "
                    "whether it only checks the hub; copy the script there, or accept losing "
                    f"it with --drop-check {tracked.name}",
                )
            )
        else:
            problems.append(
                _problem(
                    cfg,
                    vrrp_script,
                    f"vrrp_script {tracked.name}",
                    f"{vrrp_script.command!r} checks something other than the hub, and Tandem's "
                    "native HA has no script checks; keep running real keepalived "
                    "(tandem config export-keepalived) or accept losing it with "
                    f"--drop-check {tracked.name}",
                )
            )
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
    for key, command in _notify_commands(inst).items():
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
                _SERVICE_SWITCH.match(line) for line in script_lines(script.text)
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
    notes.append(
        Note(
            "mapped",
            f"ha.peer_url {peer_url}"
            + (" (given)" if options.peer_url else " from the first unicast_peer and port 8085"),
        )
    )
    if options.secret is not None:
        secret = options.secret
        notes.append(Note("mapped", "ha.secret from --secret"))
    else:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        notes.append(
            Note(
                "generated",
                "ha.secret: both nodes must share it; import the peer with --secret <this value>",
            )
        )

    priority = inst.priority
    if priority == 255:
        priority = 254
        notes.append(
            Note("mapped", "priority 255 (address owner) -> ha.priority 254, Tandem's maximum")
        )
    else:
        notes.append(Note("mapped", f"priority {priority} -> ha.priority {priority}"))
    recovery = _recovery(inst, options, notes)
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
    auth_pass = None
    if inst.auth_type == "PASS" and inst.auth_pass:
        if inst.version == 2:
            auth_pass = inst.auth_pass
            notes.append(Note("mapped", "authentication PASS -> ha.vrrp.auth_pass"))
        else:
            notes.append(Note("dropped", "authentication because VRRPv3 carries none"))
    if inst.vips:
        notes.append(
            Note("mapped", "virtual_ipaddress -> ha.vrrp.vips " + ", ".join(map(str, inst.vips)))
        )
    if any(v.dev or v.label for v in inst.virtual_addresses):
        notes.append(
            Note("dropped", "virtual_ipaddress dev/label options: VIPs go on ha.vrrp.interface")
        )
    if inst.unicast_peers:
        notes.append(
            Note(
                "mapped",
                "unicast_peer -> ha.vrrp.unicast_peers " + ", ".join(map(str, inst.unicast_peers)),
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
    globals_ = cfg.globals
    if globals_.skip_check_adv_addr or globals_.garp_interval or globals_.gna_interval:
        notes.append(
            Note(
                "dropped",
                "global_defs (vrrp_skip_check_adv_addr, vrrp_garp_interval, "
                "vrrp_gna_interval) because Tandem's defaults cover them",
            )
        )
    hooks = _map_hooks(inst, scripts, notes)
    node = options.node or _default_node(cfg, inst, hub)
    if options.node is None and (hub is None or not hub.node):
        notes.append(Note("generated", f"node: {node}; pass --node to choose the name"))
    data_dir = hub.data_dir if hub is not None and hub.data_dir else DEFAULT_DATA_DIR

    w = _YamlWriter()
    w.comment(
        f"Tandem native config imported from {cfg.source.name} (vrrp_instance {inst.name}).\n"
        "Check it with: tandem config validate <this file>"
    )
    w.key("node", node, comment="This node's name: it appears in MQTT topics and the dashboard.")
    w.key("data_dir", data_dir, comment="Outbox and state live here.")
    w.blank()
    if hub is not None and hub.sections:
        w.comment("--- the hub: taken unchanged from the existing native config (--hub) ---")
        for name, value in hub.sections.items():
            w.block(_dump_section(name, value))
    else:
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
    w.blank()
    w.section(
        "ha",
        comment="--- high availability: replaces keepalived and the guide's scripts ---",
    )
    w.key("priority", priority, 2, "Higher wins the election (was keepalived's priority).")
    w.key(
        "standby",
        "hot",
        2,
        "hot: the backup keeps polling and buffering but does not publish, so a failover\n"
        "loses nothing (the guide stopped the backup's service: that is standby: cold).",
    )
    w.key(
        "recovery",
        recovery,
        2,
        "automatic: when the preferred node returns it rejoins as backup and the role moves\n"
        "back with a zero-gap handover; manual: it stays backup until `tandem switchover`.",
    )
    w.key("peer_url", peer_url, 2, "The other node's API: config sync and handover use it.")
    w.key("secret", secret, 2, "Shared by both nodes; authenticates the peer link.")
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
    if auth_pass is not None:
        w.key("auth_pass", auth_pass, 4, "VRRPv2 PASS authentication, as in keepalived.conf.")
    if inst.vips:
        w.key("vips", [str(v) for v in inst.vips], 4)
    w.section(
        "health",
        2,
        "Replaces check_alive.sh: the hub's own broker/device health lowers the priority.",
    )
    w.key("broker_weight", 30, 4)
    w.key("devices_weight", 30, 4)
    if hooks:
        w.section("hooks", 2, "Notify scripts that do more than start/stop the service.")
        for key, command in hooks.items():
            w.key(key, command, 4)
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


# --- export: native YAML -> keepalived.conf + scripts -------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """One file of the exported keepalived setup; scripts are executable."""

    name: str
    text: str
    mode: int = 0o644


CHECK_SCRIPT = "tandem-check.sh"
MASTER_SCRIPT = "tandem-master.sh"
BACKUP_SCRIPT = "tandem-backup.sh"
FAULT_SCRIPT = "tandem-fault.sh"
FAULT_MARK = "/run/tandem-keepalived.fault"
KEEPALIVED_DIR = PurePosixPath("/etc/keepalived")
CHECK_INTERVAL_S = 1
CHECK_FALL = 3


def _check_script(service: str, api_host: str, api_port: int) -> str:
    return f"""#!/bin/sh
# keepalived track script for Tandem (exported by `tandem config export-keepalived`).
# A cold standby's hub is stopped on purpose: that node is healthy. After a fault, the
# node stays out (as in the NeuronEX guide) until an operator starts {service} again and
# its health endpoint answers.
if ! systemctl is-active --quiet {service}; then
    [ -e {FAULT_MARK} ] && exit 1
    exit 0
fi
if curl -fsS -m 2 -o /dev/null http://{api_host}:{api_port}/api/v1/health; then
    rm -f {FAULT_MARK}
    exit 0
fi
exit 1
"""


def _notify_script(action: str, service: str, hook: str | None, fault: bool = False) -> str:
    lines = [
        "#!/bin/sh",
        f"# keepalived notify script for Tandem: {action} the hub (cold standby, as in the",
        "# NeuronEX guide). Runs as root from keepalived (script_user root).",
    ]
    if fault:
        lines.append(f"touch {FAULT_MARK}  # keeps the track script failing until restarted")
    lines.append(f"systemctl {action} {service}")
    if hook:
        lines.append("# the native config's hook, run after the switch as Tandem would run it")
        lines.append(f"exec {hook}")
    return "\n".join(lines) + "\n"


def _format_interval(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def export_keepalived(
    config: TandemConfig,
    script_dir: PurePosixPath = KEEPALIVED_DIR,
    service: str = "tandem",
    source: str = "tandem.yaml",
) -> list[ExportedFile]:
    """keepalived.conf and its scripts for running the hub under real keepalived (cold standby).

    keepalived starts the ``service`` unit on MASTER and stops it on BACKUP and FAULT, exactly
    the guide's architecture, so the hub's own HA must not run as well: the exported config
    is for the hub only. Raises ConfigError for settings keepalived cannot express.
    """
    problems: list[str] = []
    ha = config.ha
    if ha is None:
        raise ConfigError([ConfigProblem(source, None, "ha", "no ha section to export")])
    vrrp = ha.vrrp
    if vrrp.transport != "raw":
        problems.append("ha.vrrp.transport udp is Tandem-only: keepalived speaks raw VRRP")
    if not vrrp.interface:
        problems.append("ha.vrrp.interface is required by keepalived")
    if not vrrp.vips:
        problems.append("keepalived 2.2.7 needs at least one virtual address in ha.vrrp.vips")
    if problems:
        raise ConfigError([ConfigProblem(source, None, "ha.vrrp", p) for p in problems])

    api_host = "127.0.0.1" if config.api.host in ("0.0.0.0", "", "::") else config.api.host
    hooks = ha.hooks
    lines = [
        f"! keepalived.conf for Tandem node {config.node}, exported from {source}.",
        f"! Cold standby, as in the NeuronEX guide: keepalived starts the {service} unit on",
        "! MASTER and stops it on BACKUP and FAULT. The config that unit runs must have no",
        "! ha section: keepalived elects here, and two elections would fight.",
        "! Every node starts as BACKUP; the priority decides who becomes MASTER.",
        "",
        "global_defs {",
        "    vrrp_skip_check_adv_addr",
        # The guide also sets vrrp_garp_interval 0 / vrrp_gna_interval 0, which keepalived
        # 2.2.7 rejects as out of range; leaving them out gives the same behaviour (no delay).
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
        "vrrp_script check_tandem {",
        f'    script "{script_dir / CHECK_SCRIPT}"',
        f"    interval {CHECK_INTERVAL_S}",
        f"    timeout {CHECK_INTERVAL_S + 1}",
        f"    fall {CHECK_FALL}",
        "    rise 1",
        "}",
        "",
        f"vrrp_instance {config.node.replace(':', '_')} {{",
        "    state BACKUP",
    ]
    if ha.recovery == "manual":
        lines.append("    nopreempt  # ha.recovery: manual")
    lines += [
        f"    interface {vrrp.interface}",
        f"    virtual_router_id {vrrp.vrid}",
        f"    priority {ha.priority}",
        f"    advert_int {_format_interval(vrrp.advert_interval)}",
        f"    version {vrrp.version}",
    ]
    if vrrp.auth_pass and vrrp.version == 2:
        lines += [
            "    authentication {",
            "        auth_type PASS",
            f"        auth_pass {vrrp.auth_pass}",
            "    }",
        ]
    lines += ["    virtual_ipaddress {", *(f"        {v}" for v in vrrp.vips), "    }"]
    if vrrp.unicast_src_ip is not None:
        lines.append(f"    unicast_src_ip {vrrp.unicast_src_ip}")
    if vrrp.unicast_peers:
        lines += ["    unicast_peer {", *(f"        {p}" for p in vrrp.unicast_peers), "    }"]
    lines += [
        "    track_script {",
        "        check_tandem",
        "    }",
        f'    notify_master "{script_dir / MASTER_SCRIPT}"',
        f'    notify_backup "{script_dir / BACKUP_SCRIPT}"',
        f'    notify_fault "{script_dir / FAULT_SCRIPT}"',
    ]
    if hooks.notify_stop:
        lines.append(f'    notify_stop "{hooks.notify_stop}"')
    if hooks.notify:
        lines.append(f'    notify "{hooks.notify}"')
    lines.append("}")
    executable = 0o755
    return [
        ExportedFile("keepalived.conf", "\n".join(lines) + "\n"),
        ExportedFile(CHECK_SCRIPT, _check_script(service, api_host, config.api.port), executable),
        ExportedFile(
            MASTER_SCRIPT, _notify_script("start", service, hooks.notify_master), executable
        ),
        ExportedFile(
            BACKUP_SCRIPT, _notify_script("stop", service, hooks.notify_backup), executable
        ),
        ExportedFile(
            FAULT_SCRIPT,
            _notify_script("stop", service, hooks.notify_fault, fault=True),
            executable,
        ),
    ]


def write_files(files: Iterable[ExportedFile], out_dir: Path) -> list[Path]:
    """Write exported files into ``out_dir`` with their modes; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        path = out_dir / file.name
        path.write_text(file.text)
        path.chmod(file.mode)
        written.append(path)
    return written


# --- reference: Markdown generated from the pydantic models -------------------------------------

# Where the models carry no description, these say what the field is for. They belong in
# hub.py's Field(description=...) eventually; kept here so the reference is complete today.
_FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "node": "this node's name; used in MQTT topics, logs and the dashboard",
    "data_dir": "where the outbox and node state are kept (default .tandem/<node>)",
    "devices": "southbound devices to poll; may be empty while a node is brought up",
    "ha": "two-node high availability; without it the node runs alone",
    "api.host": "address the REST API, metrics and dashboard listen on",
    "api.port": "TCP port of the API (0 = any free port)",
    "mqtt.host": "MQTT broker host",
    "mqtt.port": "MQTT broker port",
    "mqtt.topic": "publish topic; may use {node}, {group} and {source_node}",
    "mqtt.qos": "MQTT quality of service for published samples",
    "mqtt.client_id": "MQTT client id (default: derived from the node)",
    "mqtt.username": "broker user name",
    "mqtt.password": "broker password",
    "mqtt.tls": "TLS to the broker; omit for plain TCP",
    "mqtt.tls.ca_file": "CA bundle that signs the broker's certificate",
    "mqtt.tls.cert_file": "client certificate for mutual TLS",
    "mqtt.tls.key_file": "client key for mutual TLS",
    "mqtt.tls.insecure": "skip hostname verification (testing only)",
    "mqtt.inflight": "QoS 1/2 messages awaiting acknowledgement at once",
    "mqtt.keepalive": "MQTT keepalive, seconds",
    "outbox.max_rows": "samples kept while the broker is unreachable",
    "outbox.overflow": "which samples to drop when the outbox is full",
    "devices[].name": "device name, unique; used in topics",
    "devices[].host": "device address",
    "devices[].port": "Modbus TCP port",
    "devices[].unit": "Modbus unit (slave) id",
    "devices[].timeout": "seconds to wait for a response",
    "devices[].reconnect_min": "first reconnect delay, seconds",
    "devices[].reconnect_max": "longest reconnect delay, seconds",
    "devices[].groups": "tags polled together",
    "devices[].groups[].name": "group name, unique within the device",
    "devices[].groups[].tags": "the values read in this group",
    "devices[].groups[].tags[].name": "tag name, unique within the group",
    "devices[].groups[].tags[].area": "Modbus table the value lives in",
    "devices[].groups[].tags[].address": "first register (or coil), 0-based",
    "devices[].groups[].tags[].type": "how the registers become a value",
    "devices[].groups[].tags[].bit": "bit within the register, for type bit",
    "devices[].groups[].tags[].length": "registers a string occupies",
    "devices[].groups[].tags[].word_order": "order of 16-bit words in multi-register values",
    "devices[].groups[].tags[].byte_order": "order of bytes within each register",
    "devices[].groups[].tags[].scale": "value = raw * scale + offset",
    "devices[].groups[].tags[].offset": "value = raw * scale + offset",
    "ha.cluster": "name of the pair; both nodes must agree",
    "ha.priority": "VRRP priority; the higher healthy node becomes master",
    "ha.standby": "hot: the backup polls and buffers too; warm and cold poll only while master",
    "ha.recovery": "whether the returning preferred node takes the role back by itself",
    "ha.secret": "peer-link shared secret (or use secret_file)",
    "ha.secret_file": "file holding the peer-link secret",
    "ha.require_same_config": "refuse to pair when the peer's config differs",
    "ha.vrrp": "the election on the wire",
    "ha.health": "how hub health lowers the priority",
    "ha.hooks": "scripts run on role changes",
    "ha.vrrp.transport": "raw: VRRP (IP protocol 112) like keepalived; udp: adverts over UDP",
    "ha.vrrp.vrid": "virtual router id; both nodes must match",
    "ha.vrrp.version": "VRRP version (2: RFC 3768, 3: RFC 5798)",
    "ha.vrrp.unicast_src_ip": "source address of unicast adverts",
    "ha.vrrp.unicast_peers": "peers to send adverts to; empty means multicast (raw only)",
    "ha.vrrp.udp_port": "port for the udp transport",
    "ha.vrrp.vips": "virtual addresses the master holds",
    "ha.hooks.notify_master": "run on becoming master",
    "ha.hooks.notify_backup": "run on becoming backup",
    "ha.hooks.notify_fault": "run on entering fault",
    "ha.hooks.notify_stop": "run when the node stops",
    "ha.hooks.notify": "run on every change with keepalived's arguments",
    "ha.hooks.timeout": "seconds a hook may run before it is killed",
}
_FALLBACK_DEFAULTS: dict[str, str] = {"data_dir": "`.tandem/<node>`"}
_FALLBACK_SECTION_DOCS: dict[str, str] = {
    "api": "The REST API, Prometheus metrics and dashboard.",
    "mqtt": "The MQTT broker samples are published to.",
    "mqtt.tls": "TLS settings for the broker connection.",
    "outbox": "The on-disk buffer between poller and publisher.",
}
_CONSTRAINT_ATTRS = (
    ("ge", ">= {}"),
    ("gt", "> {}"),
    ("le", "<= {}"),
    ("lt", "< {}"),
    ("min_length", "min length {}"),
    ("max_length", "max length {}"),
    ("pattern", "pattern `{}`"),
)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def type_name(annotation: Any) -> str:
    """A reader's name for a field type (no typing-module noise)."""
    origin = get_origin(annotation)
    if origin is Annotated:  # a discriminated union (devices by protocol) or a tagged member
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        if _models_in(item):
            return "list of sections"
        return f"list of {type_name(item)}"
    names = {
        type(None): "null",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        IPv4Address: "IPv4 address",
        IPv4Interface: "IPv4 address/prefix",
    }
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return str(annotation)


def _default_text(path: str, info: FieldInfo) -> str:
    if path in _FALLBACK_DEFAULTS:
        return _FALLBACK_DEFAULTS[path]
    if info.is_required():
        return "required"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "section defaults"
    if value is None:
        return "not set"
    return f"`{json.dumps(value, default=str)}`"


def _constraints(info: FieldInfo) -> str:
    found: list[str] = []
    for meta in info.metadata:
        for attr, template in _CONSTRAINT_ATTRS:
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(template.format(value))
    return ", ".join(found)


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """One field of the native config as the reference shows it."""

    path: str
    type: str
    default: str
    constraints: str
    description: str


def _is_list(annotation: Any) -> bool:
    """A list, or an optional list (``list[X] | None``)."""
    if get_origin(annotation) is list:
        return True
    return get_origin(annotation) in (Union, types.UnionType) and any(
        get_origin(arg) is list for arg in get_args(annotation)
    )


def _variant_label(model: type[BaseModel]) -> str:
    """How the reference tells union members apart: by their ``protocol``, if they have one."""
    info = model.model_fields.get("protocol")
    if info is None or get_origin(info.annotation) is not Literal:
        return ""
    return f" (protocol: {get_args(info.annotation)[0]})"


def _sections(
    model: type[BaseModel],
    prefix: str,
    label: str = "",
    seen: dict[str, set[type[BaseModel]]] | None = None,
) -> Iterator[tuple[str, type[BaseModel], list[ReferenceRow]]]:
    """Each section once; members of a union get a label, a section they share is shown once."""
    seen = {} if seen is None else seen
    rows: list[ReferenceRow] = []
    nested: list[tuple[str, type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        description = info.description or _FALLBACK_DESCRIPTIONS.get(path, "")
        rows.append(
            ReferenceRow(
                path,
                type_name(info.annotation),
                _default_text(path, info),
                _constraints(info),
                description,
            )
        )
        subs = _models_in(info.annotation)
        for sub in subs:
            suffix = "[]" if _is_list(info.annotation) else ""
            nested.append((f"{path}{suffix}", sub, _variant_label(sub) if len(subs) > 1 else label))
    yield prefix.rstrip(".") + label, model, rows
    for path, sub, sub_label in nested:
        models = seen.setdefault(path, set())
        if sub in models:
            continue
        # Only a path that means different sections in different members needs its label.
        shown = sub_label if models or _variant_label(sub) else ""
        models.add(sub)
        yield from _sections(sub, f"{path}.", shown, seen)


def reference_rows() -> list[tuple[str, str, list[ReferenceRow]]]:
    """Every section of TandemConfig: its path, its purpose and its fields."""
    sections = []
    for path, model, rows in _sections(TandemConfig, ""):
        doc = (model.__dict__.get("__doc__") or "").strip().splitlines()
        purpose = doc[0] if doc else _FALLBACK_SECTION_DOCS.get(path.replace("[]", ""), "")
        sections.append((path, purpose, rows))
    return sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if "\\|" not in text else text


def render_reference() -> str:
    """The Markdown configuration reference (docs/configuration.md is this, committed)."""
    out = [
        "# Tandem configuration reference",
        "",
        "<!-- Generated by `tandem config reference > docs/configuration.md`; do not edit. -->",
        "",
        "Every key of the native YAML config, generated from the pydantic models in",
        "`src/tandem/config/hub.py`. Unknown keys are rejected. `[]` marks a list of sections.",
        "Check a file with `tandem config validate FILE`.",
        "",
    ]
    for path, purpose, rows in reference_rows():
        out += [f"## `{path}`" if path else "## Top level", ""]
        if purpose:
            out += [purpose, ""]
        out += [
            "| Key | Type | Default | Constraints | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            out.append(
                f"| `{row.path}` | {_cell(row.type)} | {_cell(row.default)} | "
                f"{_cell(row.constraints)} | {_cell(row.description)} |"
            )
        out.append("")
    return "\n".join(out)
