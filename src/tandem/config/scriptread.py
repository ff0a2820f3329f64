"""What the scripts of a keepalived.conf do, read from disk for the import."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tandem.config.keepalived import KeepalivedConfig


@dataclass(frozen=True, slots=True)
class ScriptText:
    """What a notify or track command runs: the script file's text when it could be read."""

    command: str
    text: str | None
    path: str | None = None


# A line that only starts, stops or restarts a service or container: the guide's master.sh,
# backup.sh and fault.sh. Tandem's role gate does this job inside the process.
SERVICE_SWITCH = re.compile(
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
    return bool(lines) and all(SERVICE_SWITCH.match(line) for line in lines)


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
        commands += list(inst.notify_commands().values())
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
