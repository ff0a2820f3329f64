"""Exporting a native config as keepalived.conf and scripts, for sites that keep keepalived."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tandem.config.hub import HaConfig, TandemConfig
from tandem.errors import ConfigError, ConfigProblem


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


def _exportable(config: TandemConfig, source: str) -> HaConfig:
    """The ha section, or ConfigError for what keepalived cannot express."""
    ha = config.ha
    if ha is None:
        raise ConfigError([ConfigProblem(source, None, "ha", "no ha section to export")])
    vrrp = ha.vrrp
    problems: list[str] = []
    if vrrp.transport != "raw":
        problems.append("ha.vrrp.transport udp is Tandem-only: keepalived speaks raw VRRP")
    if not vrrp.interface:
        problems.append("ha.vrrp.interface is required by keepalived")
    if not vrrp.vips:
        problems.append("keepalived 2.2.7 needs at least one virtual address in ha.vrrp.vips")
    if problems:
        raise ConfigError([ConfigProblem(source, None, "ha.vrrp", p) for p in problems])
    return ha


def _conf_header(
    config: TandemConfig, script_dir: PurePosixPath, service: str, source: str
) -> list[str]:
    return [
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
    ]


def _conf_instance(config: TandemConfig, ha: HaConfig, script_dir: PurePosixPath) -> list[str]:
    vrrp, hooks = ha.vrrp, ha.hooks
    lines = [f"vrrp_instance {config.node.replace(':', '_')} {{", "    state BACKUP"]
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
        lines += ["    authentication {", "        auth_type PASS"]
        lines += [f"        auth_pass {vrrp.auth_pass}", "    }"]
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
    return [*lines, "}"]


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
    ha = _exportable(config, source)
    api_host = "127.0.0.1" if config.api.host in ("0.0.0.0", "", "::") else config.api.host
    hooks = ha.hooks
    lines = _conf_header(config, script_dir, service, source) + _conf_instance(
        config, ha, script_dir
    )
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
