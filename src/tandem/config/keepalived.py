"""Reads keepalived.conf (the VRRP subset of 2.2.7) into validated values with file:line errors.

Three layers, each testable alone:

1. Tokens: physical lines into words, braces and line ends. Comments start with ``!`` or
   ``#`` anywhere outside double quotes; a quoted string is one word; ``include GLOB`` is
   expanded in place (relative to the including file's directory) so every token keeps the
   file and line it was written on.
2. ``parse_statements``: tokens into a tree of ``Statement(keyword, args, location, block)``.
3. The checker: the tree into ``KeepalivedConfig``, collecting every problem instead of
   stopping at the first.

Deliberate differences from keepalived, all towards "fail loudly at load time":

- An unsupported or misspelt keyword is an error, never skipped (keepalived logs and goes on).
- ``include`` of a pattern that matches no file is an error (keepalived only warns), because a
  missing include usually means a missing instance.
- ``track_script`` naming an undefined ``vrrp_script`` is an error (keepalived drops the tracker).
- ``auth_type AH`` is an error: the engine speaks PASS or no authentication only.
- IPv6 virtual addresses are an error: the engine is IPv4 only.
- A fractional ``advert_int`` with VRRPv2 is an error (keepalived rounds it).
- ``vrrp_strict`` is accepted with a warning: it only toggles keepalived's RFC-strict checks and
  firewall rules, which Tandem does not implement; none of its restrictions are enforced.
- The mail settings of ``global_defs`` are accepted with a warning that they do nothing.

Kept as keepalived does it: ``nopreempt`` is cleared (with a warning) for ``state MASTER`` or
priority 255; ``auth_pass`` is cut to 8 bytes (warning); authentication is ignored in VRRPv3
(warning); a repeated single-value keyword keeps its last value (warning). Defaults: priority
100, advert_int 1, state BACKUP, vrrp_version 2, vrrp_script interval 1 s, timeout = interval,
weight 0, rise 1, fall 1, vrrp_garp_master_delay 5.
"""

from __future__ import annotations

import glob
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, NetmaskValueError
from pathlib import Path

from tandem.errors import ConfigError, ConfigProblem
from tandem.vrrp.types import InstanceConfig, SourceCheck, State

log = logging.getLogger(__name__)

MAX_INCLUDE_DEPTH = 16  # guards against include cycles that go through different spellings
AUTH_PASS_LEN = 8  # RFC 3768 §5.3.10 (v2 simple text password field)
WEIGHT_LIMIT = 253  # keepalived's range for vrrp_script / track_script weights
V2_MAX_ADVERT_INT = 255  # RFC 3768 §5.3.7: 8-bit seconds
V3_MAX_ADVERT_CS = 4095  # RFC 5798 §5.2.7: 12-bit centiseconds
MAX_PREEMPT_DELAY = 1000  # keepalived's upper bound, seconds
MAX_GARP_DELAY = 4294  # keepalived reads garp_master_delay as unsigned seconds
MAX_GARP_REPEAT = 1000  # keepalived takes any unsigned; more frames per VIP is a flood

# ---------------------------------------------------------------------------------------------
# locations and the statement tree


@dataclass(frozen=True, slots=True)
class Location:
    """Where a keyword was written; included files keep their own path."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class TokenKind(Enum):
    WORD = "word"
    OPEN = "{"
    CLOSE = "}"
    END = "end of line"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    location: Location
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Statement:
    """One keyword line with its arguments and, for sections, the statements inside its braces."""

    keyword: str
    args: tuple[str, ...]
    location: Location
    block: tuple[Statement, ...] | None = None
    quoted: tuple[bool, ...] = ()


# ---------------------------------------------------------------------------------------------
# the data model


@dataclass(frozen=True, slots=True)
class ScriptUser:
    """`USER [GROUP]` as written; resolved against the system's users when the engine starts."""

    user: str
    group: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class GlobalDefs:
    skip_check_adv_addr: bool = False
    strict: bool = False
    garp_interval: float = 0.0
    gna_interval: float = 0.0
    vrrp_version: int = 2
    notify_fifo: Path | None = None
    notify_fifo_owner: ScriptUser | None = None
    router_id: str | None = None
    script_user: str | None = None
    script_group: str | None = None
    script_user_at: ScriptUser | None = None  # the same, with where it was written
    enable_script_security: bool = False
    check_unicast_src: bool = False
    garp_master_delay: int = 5
    garp_master_repeat: int = 5
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class VrrpScript:
    """A health check; `timeout` is filled with `interval` when absent, like keepalived."""

    name: str
    command: str
    interval: float = 1.0
    timeout: float | None = None
    weight: int = 0
    rise: int = 1
    fall: int = 1
    user: str | None = None
    location: Location | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class TrackedScript:
    name: str
    weight_override: int | None = None


@dataclass(frozen=True, slots=True)
class TrackedInterface:
    name: str
    weight_override: int | None = None


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    """A virtual_ipaddress line with the options the network layer needs.

    `dev` None means the instance's interface; `track` False is keepalived's `no_track`
    (the address's interface going down does not put the instance in FAULT).
    """

    address: IPv4Interface
    dev: str | None = None
    label: str | None = None
    broadcast: IPv4Address | None = None
    scope: int | None = None
    track: bool = True


@dataclass(frozen=True, slots=True)
class VrrpInstance:
    name: str
    state: str  # "MASTER" or "BACKUP", the configured initial state
    interface: str
    vrid: int
    priority: int = 100
    advert_int: float = 1.0
    version: int = 2  # effective: the instance's `version`, else global vrrp_version
    nopreempt: bool = False  # effective: already cleared where keepalived clears it
    preempt_delay: float = 0.0
    auth_type: str | None = None  # "PASS" or None
    auth_pass: str | None = None
    vips: tuple[IPv4Interface, ...] = ()
    unicast_src_ip: IPv4Address | None = None
    unicast_peers: tuple[IPv4Address, ...] = ()
    track_scripts: tuple[TrackedScript, ...] = ()
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    location: Location | None = None
    garp_master_delay: int | None = None  # None: global vrrp_garp_master_delay
    garp_master_repeat: int | None = None  # None: global vrrp_garp_master_repeat
    dont_track_primary: bool = False
    track_interfaces: tuple[TrackedInterface, ...] = ()
    virtual_addresses: tuple[VirtualAddress, ...] = ()
    check_unicast_src: bool = False  # effective: the instance's or global_defs' keyword
    notify_users: dict[str, ScriptUser] = field(default_factory=dict)  # by notify keyword
    notify_locations: dict[str, Location] = field(default_factory=dict)

    def notify_commands(self) -> dict[str, str]:
        """The configured notify scripts by keyword (notify_master, ..., notify)."""
        found = {
            "notify_master": self.notify_master,
            "notify_backup": self.notify_backup,
            "notify_fault": self.notify_fault,
            "notify_stop": self.notify_stop,
            "notify": self.notify,
        }
        return {key: command for key, command in found.items() if command is not None}


@dataclass(frozen=True, slots=True)
class KeepalivedConfig:
    globals: GlobalDefs
    scripts: dict[str, VrrpScript]
    instances: list[VrrpInstance]
    source: Path
    warnings: tuple[ConfigProblem, ...] = ()

    def instance(self, name: str) -> VrrpInstance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Everything a `-t` run reports: `config` is None whenever `errors` is not empty."""

    config: KeepalivedConfig | None
    errors: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]


# ---------------------------------------------------------------------------------------------
# public API


def parse_file(path: Path) -> KeepalivedConfig:
    """Load a keepalived.conf; raise ConfigError listing every problem, log every warning."""
    result = analyse_file(path)
    if result.errors or result.config is None:
        raise ConfigError(list(result.errors))
    for warning in result.warnings:
        log.warning("%s", warning)
    return result.config


def check_file(path: Path, scripts: bool = False) -> list[ConfigProblem]:
    """The errors of a config file, sorted by file and line; empty means `parse_file` succeeds.

    With `scripts`, also what keepalived finds when it starts (`keepalived -t`): users that do
    not exist, scripts that are missing, not executable or unsafe under
    enable_script_security. Those depend on this machine, not only on the file.
    """
    result = analyse_file(path)
    if result.errors or result.config is None or not scripts:
        return list(result.errors)
    from tandem.health.scriptplan import plan_scripts  # the system's users and files

    return sorted(plan_scripts(result.config).errors, key=_problem_order)


def analyse_file(path: Path) -> CheckResult:
    """Errors, warnings and (when clean) the config, without raising for file content."""
    path = Path(path)
    problems = _Problems()
    tokens = list(_tokenize(path, problems))
    statements = _Parser(tokens, problems).parse()
    config = _Checker(problems, path).check(statements)
    errors = tuple(sorted(problems.errors, key=_problem_order))
    warnings = tuple(sorted(problems.warnings, key=_problem_order))
    return CheckResult(None if errors else config, errors, warnings)


def to_instance_config(
    inst: VrrpInstance, cfg: KeepalivedConfig, local_address: IPv4Address
) -> InstanceConfig:
    """Map a parsed instance onto the engine's config.

    `local_address` is the interface's first IPv4 address; `unicast_src_ip` wins when set,
    as in keepalived. The password is cut to 8 bytes and dropped for VRRPv3, which keepalived
    sends without authentication.
    """
    auth_pass: bytes | None = None
    if inst.auth_type == "PASS" and inst.auth_pass is not None and inst.version == 2:
        auth_pass = inst.auth_pass.encode("utf-8")[:AUTH_PASS_LEN]
    return InstanceConfig(
        name=inst.name,
        vrid=inst.vrid,
        priority=inst.priority,
        advert_interval=inst.advert_int,
        local_address=inst.unicast_src_ip or local_address,
        version=inst.version,
        initial_state=State.MASTER if inst.state == "MASTER" else State.BACKUP,
        preempt=not inst.nopreempt,
        preempt_delay=inst.preempt_delay,
        vips=inst.vips,
        auth_pass=auth_pass,
        skip_check_adv_addr=cfg.globals.skip_check_adv_addr,
        unicast_peers=inst.unicast_peers,
        # keepalived believes any sender unless check_unicast_src is set.
        source_check=SourceCheck.KEEPALIVED if inst.check_unicast_src else SourceCheck.OFF,
        garp_master_delay=float(
            cfg.globals.garp_master_delay
            if inst.garp_master_delay is None
            else inst.garp_master_delay
        ),
        garp_master_repeat=inst.garp_master_repeat or cfg.globals.garp_master_repeat,
    )


# ---------------------------------------------------------------------------------------------
# problems


@dataclass(slots=True)
class _Problems:
    errors: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)

    def error(self, where: Location | str, path: str, message: str) -> None:
        self.errors.append(_problem(where, path, message))

    def warn(self, where: Location | str, path: str, message: str) -> None:
        self.warnings.append(_problem(where, path, message))


def _problem(where: Location | str, path: str, message: str) -> ConfigProblem:
    if isinstance(where, Location):
        return ConfigProblem(where.file, where.line, path, message)
    return ConfigProblem(where, None, path, message)


def _problem_order(problem: ConfigProblem) -> tuple[str, int]:
    return (problem.file, problem.line or 0)


# ---------------------------------------------------------------------------------------------
# layer 1: tokens


def _tokenize(
    path: Path, problems: _Problems, _stack: tuple[Path, ...] = (), _include: Location | None = None
) -> Iterator[Token]:
    """Tokens of `path` with includes expanded; unreadable files become problems."""
    where: Location | str = _include if _include is not None else str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.error(
            where, "include" if _include else "", f"{path}: not UTF-8 text ({exc.reason})"
        )
        return
    except OSError as exc:
        problems.error(where, "include" if _include else "", f"cannot read {path}: {exc.strerror}")
        return
    stack = (*_stack, path.resolve())
    for number, raw in enumerate(text.splitlines(), start=1):
        line_tokens = _split_line(raw, Location(str(path), number), problems)
        if (
            line_tokens
            and line_tokens[0].kind is TokenKind.WORD
            and line_tokens[0].text == "include"
        ):
            yield from _expand_include(path, line_tokens, stack, problems)
            continue
        yield from line_tokens
        yield Token(TokenKind.END, "", Location(str(path), number))


def _split_line(raw: str, where: Location, problems: _Problems) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch.isspace():
            i += 1
        elif ch in "!#":
            break
        elif ch == "{":
            tokens.append(Token(TokenKind.OPEN, ch, where))
            i += 1
        elif ch == "}":
            tokens.append(Token(TokenKind.CLOSE, ch, where))
            i += 1
        elif ch == '"':
            end = raw.find('"', i + 1)
            if end < 0:
                problems.error(where, "", "unterminated quoted string")
                tokens.append(Token(TokenKind.WORD, raw[i + 1 :], where, quoted=True))
                break
            tokens.append(Token(TokenKind.WORD, raw[i + 1 : end], where, quoted=True))
            i = end + 1
        else:
            start = i
            while i < n and not raw[i].isspace() and raw[i] not in '{}"!#':
                i += 1
            tokens.append(Token(TokenKind.WORD, raw[start:i], where))
    return tokens


def _expand_include(
    including: Path, line_tokens: list[Token], stack: tuple[Path, ...], problems: _Problems
) -> Iterator[Token]:
    where = line_tokens[0].location
    words = [t for t in line_tokens[1:] if t.kind is TokenKind.WORD]
    if len(words) != 1 or len(words) != len(line_tokens) - 1:
        problems.error(where, "include", "include takes exactly one file name or glob pattern")
        return
    pattern = Path(words[0].text).expanduser()
    if not pattern.is_absolute():
        pattern = including.parent / pattern
    matches = sorted(glob.glob(str(pattern)))
    if not matches:
        problems.error(
            where, "include", f"no file matches {words[0].text!r} (looked for {pattern})"
        )
        return
    for match in matches:
        target = Path(match)
        if target.is_dir():
            problems.error(where, "include", f"{target} is a directory")
            continue
        if target.resolve() in stack:
            problems.error(where, "include", f"include loop: {target} is already being read")
            continue
        if len(stack) >= MAX_INCLUDE_DEPTH:
            problems.error(where, "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            continue
        yield from _tokenize(target, problems, stack, where)


# ---------------------------------------------------------------------------------------------
# layer 2: statements

# Sections that only make sense at the top: seeing one nested means a '}' is missing above.
_TOP_SECTIONS = frozenset({"global_defs", "vrrp_script", "vrrp_instance", "vrrp_sync_group"})


class _Parser:
    def __init__(self, tokens: list[Token], problems: _Problems) -> None:
        self._tokens = tokens
        self._pos = 0
        self._problems = problems
        self._unwinding = False

    def parse(self) -> list[Statement]:
        return self._body(opener=None)

    def _peek(self) -> Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _body(self, opener: Statement | None) -> list[Statement]:
        statements: list[Statement] = []
        while True:
            if opener is None:
                self._unwinding = False  # back at the top: the next section parses normally
            token = self._peek()
            if token is None:
                if opener is not None and not self._unwinding:
                    self._unclosed(opener, "the end of the file")
                return statements
            if token.kind is TokenKind.END:
                self._pos += 1
            elif token.kind is TokenKind.CLOSE:
                self._pos += 1
                if opener is not None:
                    return statements
                self._problems.error(token.location, "", "unexpected '}' with no open block")
            elif token.kind is TokenKind.OPEN:
                self._pos += 1
                self._problems.error(token.location, "", "'{' without a keyword before it")
                self._body(Statement("{", (), token.location))
            else:
                if opener is not None and token.text in _TOP_SECTIONS:
                    # The nested top-level section is re-read from the top level.
                    self._unclosed(opener, f"line {token.location.line}")
                    return statements
                statements.append(self._statement())
            if self._unwinding and opener is not None:
                return statements

    def _unclosed(self, opener: Statement, before: str) -> None:
        self._unwinding = True
        name = " ".join((opener.keyword, *opener.args))
        self._problems.error(
            opener.location, name, f"missing '}}': block {name!r} is not closed before {before}"
        )

    def _statement(self) -> Statement:
        words: list[Token] = []
        while (token := self._peek()) is not None and token.kind is TokenKind.WORD:
            words.append(token)
            self._pos += 1
        head = words[0]
        args = tuple(t.text for t in words[1:])
        quoted = tuple(t.quoted for t in words[1:])
        stmt = Statement(head.text, args, head.location, None, quoted)
        # The opening brace may also stand alone on the next line.
        look = self._pos
        while look < len(self._tokens) and self._tokens[look].kind is TokenKind.END:
            look += 1
        if look < len(self._tokens) and self._tokens[look].kind is TokenKind.OPEN:
            self._pos = look + 1
            block = tuple(self._body(stmt))
            return Statement(head.text, args, head.location, block, quoted)
        return stmt


def parse_statements(path: Path) -> tuple[list[Statement], list[ConfigProblem]]:
    """The raw statement tree and the syntax errors, for tools that need more than the model."""
    problems = _Problems()
    statements = _Parser(list(_tokenize(Path(path), problems)), problems).parse()
    return statements, problems.errors


# ---------------------------------------------------------------------------------------------
# layer 3: meaning

_INT_RE = re.compile(r"[+-]?[0-9]+")  # ASCII only: int() would also take other digit scripts
_DECIMAL_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_IGNORED_GLOBALS = frozenset(
    {"notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout"}
)
_NOTIFY_KEYS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
_VIP_OPTIONS_WITH_VALUE = frozenset({"dev", "label", "brd", "broadcast", "scope"})


def _command(stmt: Statement) -> str:
    """A command line: one quoted word is kept whole; several words are re-joined."""
    if len(stmt.args) == 1:
        return stmt.args[0]
    return " ".join(f'"{arg}"' if any(c.isspace() for c in arg) else arg for arg in stmt.args)


class _Checker:
    def __init__(self, problems: _Problems, source: Path) -> None:
        self.p = problems
        self.source = source

    # -- small readers; each reports its own problem and returns None on failure --

    def _one(self, stmt: Statement, path: str) -> str | None:
        if self._block_not_expected(stmt, path):
            return None
        if len(stmt.args) != 1:
            self.p.error(stmt.location, path, f"expects exactly one value, got {len(stmt.args)}")
            return None
        return stmt.args[0]

    def _flag(self, stmt: Statement, path: str) -> bool:
        if self._block_not_expected(stmt, path):
            return False
        if stmt.args:
            self.p.error(stmt.location, path, f"takes no value, got {' '.join(stmt.args)!r}")
            return False
        return True

    def _block_not_expected(self, stmt: Statement, path: str) -> bool:
        if stmt.block is not None:
            self.p.error(stmt.location, path, "does not take a '{ ... }' block")
            return True
        return False

    def _block(self, stmt: Statement, path: str, args: int = 0) -> tuple[Statement, ...] | None:
        if stmt.block is None:
            self.p.error(stmt.location, path, "expects a '{ ... }' block")
            return None
        if len(stmt.args) != args:
            self.p.error(stmt.location, path, f"expects {args} argument(s) before '{{'")
        return stmt.block

    def _int(self, stmt: Statement, path: str, low: int, high: int) -> int | None:
        text = self._one(stmt, path)
        if text is None:
            return None
        if not _INT_RE.fullmatch(text):
            self.p.error(stmt.location, path, f"{text!r} is not a whole number")
            return None
        value = int(text)
        if not low <= value <= high:
            self.p.error(stmt.location, path, f"{value} is out of range {low}..{high}")
            return None
        return value

    def _decimal(self, stmt: Statement, path: str, low: float, high: float) -> float | None:
        text = self._one(stmt, path)
        if text is None:
            return None
        if not _DECIMAL_RE.fullmatch(text):
            self.p.error(stmt.location, path, f"{text!r} is not a number")
            return None
        value = float(text)
        if not low <= value <= high:
            self.p.error(stmt.location, path, f"{text} is out of range {low:g}..{high:g}")
            return None
        return value

    def _ipv4(self, text: str, where: Location, path: str) -> IPv4Address | None:
        try:
            return IPv4Address(text)
        except AddressValueError:
            self.p.error(where, path, f"{text!r} is not an IPv4 address")
            return None

    def _repeated(self, seen: dict[str, Location], stmt: Statement, path: str) -> None:
        first = seen.get(stmt.keyword)
        if first is not None:
            self.p.warn(
                stmt.location, path, f"repeated (first at line {first.line}); the last value wins"
            )
        seen[stmt.keyword] = stmt.location

    def _unknown(self, stmt: Statement, section: str) -> None:
        where = f"{section}.{stmt.keyword}" if section else stmt.keyword
        inside = f" in {section}" if section else " at top level"
        self.p.error(stmt.location, where, f"unsupported keyword {stmt.keyword!r}{inside}")

    # -- the whole file --

    def check(self, statements: list[Statement]) -> KeepalivedConfig:
        globals_ = GlobalDefs()
        script_stmts: list[Statement] = []
        instance_stmts: list[Statement] = []
        for stmt in statements:
            if stmt.keyword == "global_defs":
                globals_ = self._globals(stmt, globals_)
            elif stmt.keyword == "vrrp_script":
                script_stmts.append(stmt)
            elif stmt.keyword == "vrrp_instance":
                instance_stmts.append(stmt)
            else:
                self._unknown(stmt, "")
        scripts: dict[str, VrrpScript] = {}
        for stmt in script_stmts:
            script = self._script(stmt)
            if script is None:
                continue
            if script.name in scripts:
                first = scripts[script.name].location
                self.p.error(
                    stmt.location,
                    f"vrrp_script {script.name}",
                    f"duplicate vrrp_script name (first defined at {first})",
                )
                continue
            scripts[script.name] = script
        instances: list[VrrpInstance] = []
        for stmt in instance_stmts:
            inst = self._instance(stmt, globals_, scripts, script_stmts)
            if inst is not None:
                instances.append(inst)
        self._cross_instance(instances)
        if not instances and not self.p.errors:
            self.p.error(str(self.source), "vrrp_instance", "no vrrp_instance is defined")
        return KeepalivedConfig(globals_, scripts, instances, self.source, tuple(self.p.warnings))

    def _cross_instance(self, instances: list[VrrpInstance]) -> None:
        by_name: dict[str, VrrpInstance] = {}
        by_router: dict[tuple[str, int], VrrpInstance] = {}
        for inst in instances:
            path = f"vrrp_instance {inst.name}"
            assert inst.location is not None
            if inst.name in by_name:
                self.p.error(
                    inst.location,
                    path,
                    f"duplicate vrrp_instance name (first at {by_name[inst.name].location})",
                )
            else:
                by_name[inst.name] = inst
            key = (inst.interface, inst.vrid)
            if inst.vrid and key in by_router:
                other = by_router[key]
                self.p.error(
                    inst.location,
                    f"{path}.virtual_router_id",
                    f"virtual_router_id {inst.vrid} on {inst.interface} is already used by "
                    f"vrrp_instance {other.name} ({other.location})",
                )
            else:
                by_router.setdefault(key, inst)

    # -- global_defs --

    def _globals(self, stmt: Statement, earlier: GlobalDefs) -> GlobalDefs:
        """Several global_defs sections merge, as in keepalived; later values win."""
        block = self._block(stmt, "global_defs")
        values: dict[str, object] = {}
        if earlier.location is None:
            values["location"] = stmt.location
        seen: dict[str, Location] = {}
        for item in block or ():
            path = f"global_defs.{item.keyword}"
            key = item.keyword
            if key in _IGNORED_GLOBALS:
                self.p.warn(item.location, path, "accepted but ignored: Tandem sends no e-mail")
                continue
            if key not in _GLOBAL_KEYS:
                self._unknown(item, "global_defs")
                continue
            self._repeated(seen, item, path)
            values.update(self._global_value(key, item, path))
        return replace(earlier, **values)  # type: ignore[arg-type]

    def _global_value(self, key: str, item: Statement, path: str) -> dict[str, object]:
        """The GlobalDefs fields one global_defs line sets; empty after reporting a problem."""
        if key in _GLOBAL_FLAGS:
            return {_GLOBAL_FLAGS[key]: True} if self._flag(item, path) else {}
        if key == "vrrp_strict":
            if not self._flag(item, path):
                return {}
            self.p.warn(
                item.location,
                path,
                "accepted, not enforced: Tandem has no RFC-strict mode or firewall rules",
            )
            return {"strict": True}
        if key in ("vrrp_garp_interval", "vrrp_gna_interval"):
            return self._garp_interval(key, item, path)
        if key == "vrrp_version":
            version = self._int(item, path, 2, 3)
            return {} if version is None else {"vrrp_version": version}
        if key == "vrrp_notify_fifo":
            return self._notify_fifo(item, path)
        if key == "router_id":
            text = self._one(item, path)
            return {} if text is None else {"router_id": text}
        if key == "script_user":
            user = self._user_group(item, path, 1)
            if user is None:
                return {}
            return {"script_user": user.user, "script_group": user.group, "script_user_at": user}
        if key == "vrrp_garp_master_delay":
            delay = self._int(item, path, 0, MAX_GARP_DELAY)
            return {} if delay is None else {"garp_master_delay": delay}
        if key == "vrrp_garp_master_repeat":
            repeat = self._garp_repeat(item, path)
            return {} if repeat is None else {"garp_master_repeat": repeat}
        raise AssertionError(f"global keyword {key} has no reader")

    def _garp_interval(self, key: str, item: Statement, path: str) -> dict[str, object]:
        value = self._decimal(item, path, 0, 4294.967295)
        if value is None:
            return {}
        field_name = key.removeprefix("vrrp_")
        if value == 0:
            # keepalived rejects 0 and keeps its default, which is 0 (the seed guide's value).
            self.p.warn(
                item.location,
                path,
                "keepalived 2.2.7 calls 0 invalid and keeps its default, also 0: no delay",
            )
        elif key == "vrrp_gna_interval":
            self.p.warn(
                item.location,
                path,
                "no effect: it spaces IPv6 neighbour adverts, and Tandem's VIPs are IPv4",
            )
        else:
            self.p.error(
                item.location,
                path,
                f"{value:g} s between gratuitous ARPs is not supported; Tandem sends each "
                "burst back to back (use 0)",
            )
            return {}
        return {field_name: value}

    def _garp_repeat(self, item: Statement, path: str) -> int | None:
        repeat = self._int(item, path, 0, MAX_GARP_REPEAT)
        if repeat == 0:
            self.p.warn(item.location, path, "must be greater than 0; 1 is used, as keepalived")
            return 1
        return repeat

    def _notify_fifo(self, item: Statement, path: str) -> dict[str, object]:
        if self._block_not_expected(item, path):
            return {}
        if not 1 <= len(item.args) <= 3:
            self.p.error(item.location, path, "expects PATH [USER [GROUP]]")
            return {}
        values: dict[str, object] = {"notify_fifo": Path(item.args[0])}
        if len(item.args) > 1:
            values["notify_fifo_owner"] = ScriptUser(
                item.args[1], item.args[2] if len(item.args) == 3 else None, item.location
            )
        return values

    def _user_group(self, item: Statement, path: str, offset: int) -> ScriptUser | None:
        """`USER [GROUP]` from the words at `offset`; None (reported) when malformed."""
        if self._block_not_expected(item, path):
            return None
        words = item.args[offset - 1 :]
        if not 1 <= len(words) <= 2 or not all(words):
            self.p.error(item.location, path, "expects USER [GROUP]")
            return None
        return ScriptUser(words[0], words[1] if len(words) == 2 else None, item.location)

    # -- vrrp_script --

    def _script(self, stmt: Statement) -> VrrpScript | None:
        block = self._block(stmt, "vrrp_script", args=1)
        if block is None or len(stmt.args) != 1:
            return None
        name = stmt.args[0]
        section = f"vrrp_script {name}"
        command: str | None = None
        interval, timeout, weight, rise, fall = 1.0, None, 0, 1, 1
        user: str | None = None
        group: str | None = None
        seen: dict[str, Location] = {}
        for item in block:
            path = f"{section}.{item.keyword}"
            key = item.keyword
            if key not in _SCRIPT_KEYS:
                self._unknown(item, section)
                continue
            self._repeated(seen, item, path)
            if key == "script":
                if self._block_not_expected(item, path):
                    continue
                if not item.args or not item.args[0].strip():
                    self.p.error(item.location, path, "expects a command")
                else:
                    command = _command(item)
            elif key == "interval":
                interval = self._decimal(item, path, 1, 86400) or interval
            elif key == "timeout":
                timeout = self._decimal(item, path, 0.001, 86400) or timeout
            elif key == "weight":
                if item.args[1:] == ("reverse",):
                    self.p.error(item.location, path, "'weight N reverse' is not supported")
                    continue
                value = self._int(item, path, -WEIGHT_LIMIT, WEIGHT_LIMIT)
                weight = value if value is not None else weight
            elif key == "rise":
                rise = self._int(item, path, 1, 1_000_000) or rise
            elif key == "fall":
                fall = self._int(item, path, 1, 1_000_000) or fall
            elif key == "user":
                run_as = self._user_group(item, path, 1)
                if run_as is not None:
                    user, group = run_as.user, run_as.group
        if command is None:
            self.p.error(stmt.location, f"{section}.script", "vrrp_script has no 'script' line")
            return None
        if timeout is None:
            timeout = interval  # keepalived's default
        return VrrpScript(
            name, command, interval, timeout, weight, rise, fall, user, stmt.location, group
        )

    # -- vrrp_instance --

    def _instance(
        self,
        stmt: Statement,
        globals_: GlobalDefs,
        scripts: dict[str, VrrpScript],
        script_stmts: list[Statement],
    ) -> VrrpInstance | None:
        block = self._block(stmt, "vrrp_instance", args=1)
        if block is None or len(stmt.args) != 1:
            return None
        parts = _InstanceParts(stmt.args[0])
        declared = {s.args[0] for s in script_stmts if len(s.args) == 1}
        seen: dict[str, Location] = {}
        for item in block:
            path = f"{parts.section}.{item.keyword}"
            key = item.keyword
            if key not in _INSTANCE_KEYS:
                self._unknown(item, parts.section)
                continue
            if key not in _INSTANCE_LISTS:
                self._repeated(seen, item, path)
            parts.loc[key] = item.location
            if key in _INSTANCE_LISTS:
                self._instance_list(key, item, path, parts, declared)
            elif key in _NOTIFY_KEYS:
                self._notify(key, item, path, parts)
            elif key == "authentication":
                self._authentication(item, parts.section, parts.v)
            else:
                parts.v.update(self._instance_value(key, item, path, parts))
        return self._finish_instance(stmt, parts, globals_)

    def _instance_value(
        self, key: str, item: Statement, path: str, parts: _InstanceParts
    ) -> dict[str, object]:
        """The values one single-valued instance keyword sets; empty after a reported problem."""
        if key in _INSTANCE_FLAGS:
            return {key: True} if self._flag(item, path) else {}
        if key in _INSTANCE_INTS:
            low, high = _INSTANCE_INTS[key]
            value = self._int(item, path, low, high)
            return {} if value is None else {key: value}
        if key == "garp_master_repeat":
            repeat = self._garp_repeat(item, path)
            return {} if repeat is None else {key: repeat}
        if key == "preempt_delay":
            return {key: self._decimal(item, path, 0, MAX_PREEMPT_DELAY)}
        text = self._one(item, path)
        if text is None:
            return {}
        if key == "state":
            if text not in ("MASTER", "BACKUP"):
                self.p.error(item.location, path, f"{text!r} is not MASTER or BACKUP")
                return {}
            return {key: text}
        if key == "advert_int":
            # Its range depends on the version, which may be set later in the block.
            if not _DECIMAL_RE.fullmatch(text):
                self.p.error(item.location, path, f"{text!r} is not a number")
                return {}
            parts.advert_text = text
            return {}
        if key == "unicast_src_ip":
            return {key: self._ipv4(text, item.location, path)}
        return {key: text}  # interface

    def _instance_list(
        self, key: str, item: Statement, path: str, parts: _InstanceParts, declared: set[str]
    ) -> None:
        if key == "virtual_ipaddress":
            parts.vips.extend(self._virtual_ipaddress(item, path))
        elif key == "unicast_peer":
            parts.peers.extend(self._unicast_peer(item, path))
        elif key == "track_script":
            parts.tracked.extend(self._track_script(item, path, declared))
        else:
            parts.tracked_ifs.extend(self._track_interface(item, path))

    def _notify(self, key: str, item: Statement, path: str, parts: _InstanceParts) -> None:
        """keepalived's `notify_* SCRIPT [USER [GROUP]]`: the words after the script name the
        user it runs as, so a command with arguments must be quoted."""
        if self._block_not_expected(item, path):
            return
        if not item.args or not item.args[0].strip():
            self.p.error(item.location, path, "expects a command")
            return
        if len(item.args) > 3:
            self.p.error(
                item.location,
                path,
                "expects SCRIPT [USER [GROUP]]; quote a command that has arguments",
            )
            return
        parts.v[key] = item.args[0]
        if len(item.args) == 1:
            return
        run_as = self._user_group(item, path, 2)
        if run_as is None:
            return
        parts.notify_users[key] = run_as
        if not (item.quoted[0] if item.quoted else False):
            self.p.warn(
                item.location,
                path,
                f"runs {item.args[0]!r} as user {run_as.user!r}: keepalived reads the words "
                "after an unquoted script as USER [GROUP]; quote the command to pass arguments",
            )

    def _finish_instance(
        self, stmt: Statement, parts: _InstanceParts, globals_: GlobalDefs
    ) -> VrrpInstance:
        """Checks that need the whole block: required keys, version-dependent ranges, conflicts."""
        v, loc, section = parts.v, parts.loc, parts.section
        if "interface" not in v:
            self.p.error(stmt.location, f"{section}.interface", "no 'interface' given")
        if "virtual_router_id" not in loc:
            self.p.error(
                stmt.location, f"{section}.virtual_router_id", "no 'virtual_router_id' given"
            )
        version = _int_or(v.get("version"), globals_.vrrp_version)
        state = str(v.get("state", "BACKUP"))
        priority = _int_or(v.get("priority"), 100)
        advert_int = 1.0
        if parts.advert_text is not None:
            advert_int = self._advert_int(
                parts.advert_text, version, loc["advert_int"], f"{section}.advert_int"
            )
        auth_type, auth_pass = v.get("auth_type"), v.get("auth_pass")
        if auth_type is not None and version == 3:
            self.p.warn(
                loc["authentication"],
                f"{section}.authentication",
                "VRRPv3 has no authentication; ignored, as keepalived does",
            )
        src = v.get("unicast_src_ip")
        unique_vips = self._unique_vips(parts, stmt.location)
        return VrrpInstance(
            name=parts.name,
            state=state,
            interface=str(v.get("interface", "")),
            vrid=_int_or(v.get("virtual_router_id"), 0),
            priority=priority,
            advert_int=advert_int,
            version=version,
            nopreempt=self._effective_nopreempt(parts, state, priority),
            preempt_delay=float(v.get("preempt_delay") or 0.0),  # type: ignore[arg-type]
            auth_type=auth_type if isinstance(auth_type, str) else None,
            auth_pass=auth_pass if isinstance(auth_pass, str) else None,
            vips=tuple(u.address for u in unique_vips),
            unicast_src_ip=src if isinstance(src, IPv4Address) else None,
            unicast_peers=self._unique_peers(parts, src),
            track_scripts=tuple(parts.tracked),
            notify_master=_opt_str(v.get("notify_master")),
            notify_backup=_opt_str(v.get("notify_backup")),
            notify_fault=_opt_str(v.get("notify_fault")),
            notify_stop=_opt_str(v.get("notify_stop")),
            notify=_opt_str(v.get("notify")),
            location=stmt.location,
            garp_master_delay=_opt_int(v.get("garp_master_delay")),
            garp_master_repeat=_opt_int(v.get("garp_master_repeat")),
            dont_track_primary=bool(v.get("dont_track_primary", False)),
            track_interfaces=self._own_interface_untracked(parts, str(v.get("interface", ""))),
            virtual_addresses=tuple(unique_vips),
            check_unicast_src=bool(v.get("check_unicast_src")) or globals_.check_unicast_src,
            notify_users=dict(parts.notify_users),
            notify_locations={k: loc[k] for k in _NOTIFY_KEYS if k in v},
        )

    def _effective_nopreempt(self, parts: _InstanceParts, state: str, priority: int) -> bool:
        nopreempt = bool(parts.v.get("nopreempt", False))
        if nopreempt and (state == "MASTER" or priority == 255):
            why = "state MASTER" if state == "MASTER" else "priority 255"
            self.p.warn(
                parts.loc["nopreempt"],
                f"{parts.section}.nopreempt",
                f"ignored with {why}, as keepalived does: this node will preempt",
            )
            return False
        return nopreempt

    def _unique_peers(self, parts: _InstanceParts, src: object) -> tuple[IPv4Address, ...]:
        path = f"{parts.section}.unicast_peer"
        unique: list[IPv4Address] = []
        for peer in parts.peers:
            if peer in unique:
                self.p.warn(parts.loc["unicast_peer"], path, f"{peer} listed twice")
            elif src is not None and peer == src:
                self.p.error(
                    parts.loc["unicast_peer"], path, f"{peer} is this node's own unicast_src_ip"
                )
            else:
                unique.append(peer)
        if src is not None and not parts.peers:
            self.p.warn(
                parts.loc["unicast_src_ip"],
                f"{parts.section}.unicast_src_ip",
                "has no effect without unicast_peer (adverts go to multicast 224.0.0.18)",
            )
        if "check_unicast_src" in parts.v and not parts.peers:
            self.p.warn(
                parts.loc["check_unicast_src"],
                f"{parts.section}.check_unicast_src",
                "has no effect without unicast_peer, as in keepalived",
            )
        return tuple(unique)

    def _unique_vips(self, parts: _InstanceParts, where: Location) -> list[VirtualAddress]:
        path = f"{parts.section}.virtual_ipaddress"
        unique: list[VirtualAddress] = []
        for vip in parts.vips:
            if any(u.address == vip.address for u in unique):
                self.p.warn(parts.loc["virtual_ipaddress"], path, f"{vip.address} listed twice")
                continue
            unique.append(vip)
        if "virtual_ipaddress" not in parts.loc:
            self.p.warn(where, path, "no virtual address configured")
        if len(unique) > 255:  # RFC 3768 §5.3.5: naddr is 8 bits
            self.p.error(
                parts.loc["virtual_ipaddress"],
                path,
                f"{len(unique)} addresses; at most 255 fit in an advert",
            )
        return unique

    def _own_interface_untracked(
        self, parts: _InstanceParts, interface: str
    ) -> tuple[TrackedInterface, ...]:
        """keepalived ignores a track_interface naming the instance's own interface."""
        kept: list[TrackedInterface] = []
        for tracked in parts.tracked_ifs:
            if tracked.name == interface:
                self.p.warn(
                    parts.loc["track_interface"],
                    f"{parts.section}.track_interface",
                    f"{interface} is this instance's own interface (tracked unless "
                    "dont_track_primary); ignored, as keepalived does",
                )
            elif any(k.name == tracked.name for k in kept):
                self.p.warn(
                    parts.loc["track_interface"],
                    f"{parts.section}.track_interface",
                    f"{tracked.name!r} tracked twice",
                )
            else:
                kept.append(tracked)
        return tuple(kept)

    def _advert_int(self, text: str, version: int, where: Location, path: str) -> float:
        value = float(text)
        if version == 2:
            if value != int(value):
                self.p.error(
                    where, path, f"{text} is not a whole number of seconds (required by VRRPv2)"
                )
            elif not 1 <= value <= V2_MAX_ADVERT_INT:
                self.p.error(
                    where, path, f"{text} is out of range 1..{V2_MAX_ADVERT_INT} s (VRRPv2)"
                )
            return float(int(value)) if value >= 1 else 1.0
        centis = math.floor(value * 100 + 0.5)
        if not 1 <= centis <= V3_MAX_ADVERT_CS:
            self.p.error(where, path, f"{text} is out of range 0.01..40.95 s (VRRPv3)")
            return 1.0
        if abs(centis - value * 100) > 1e-6:
            self.p.warn(
                where, path, f"{text} rounded to {centis / 100:g} s (VRRPv3 counts centiseconds)"
            )
        return centis / 100

    def _authentication(self, stmt: Statement, section: str, v: dict[str, object]) -> None:
        path = f"{section}.authentication"
        block = self._block(stmt, path)
        if block is None:
            return
        auth_type: str | None = None
        auth_pass: str | None = None
        seen: dict[str, Location] = {}
        for item in block:
            item_path = f"{path}.{item.keyword}"
            if item.keyword not in ("auth_type", "auth_pass"):
                self._unknown(item, path)
                continue
            self._repeated(seen, item, item_path)
            text = self._one(item, item_path)
            if text is None:
                continue
            if item.keyword == "auth_type":
                if text == "AH":
                    self.p.error(
                        item.location,
                        item_path,
                        "auth_type AH (IPsec AH) is not supported; use PASS or no authentication",
                    )
                elif text != "PASS":
                    self.p.error(item.location, item_path, f"{text!r} is not PASS or AH")
                else:
                    auth_type = text
            else:
                if not text:
                    self.p.error(item.location, item_path, "password is empty")
                    continue
                if len(text.encode("utf-8")) > AUTH_PASS_LEN:
                    self.p.warn(
                        item.location,
                        item_path,
                        f"longer than {AUTH_PASS_LEN} bytes; only "
                        f"{text.encode('utf-8')[:AUTH_PASS_LEN]!r} is used, as keepalived does",
                    )
                auth_pass = text
        if auth_type is not None and "auth_pass" not in seen:
            self.p.error(stmt.location, f"{path}.auth_pass", "auth_type PASS needs an auth_pass")
        if auth_pass is not None and "auth_type" not in seen:
            self.p.error(stmt.location, f"{path}.auth_type", "auth_pass given without auth_type")
        if auth_type is not None:
            v["auth_type"] = auth_type
            v["auth_pass"] = auth_pass

    def _virtual_ipaddress(self, stmt: Statement, path: str) -> list[VirtualAddress]:
        block = self._block(stmt, path)
        found: list[VirtualAddress] = []
        for item in block or ():
            if item.block is not None:
                self.p.error(item.location, path, "unexpected '{ ... }' block in virtual_ipaddress")
                continue
            address = self._interface_address(item.keyword, item.location, path)
            options = self._vip_options(item, path)
            if address is not None and options is not None:
                found.append(self._vip(address, options, item.location, path))
        return found

    def _vip_options(self, item: Statement, path: str) -> dict[str, str] | None:
        """`ADDRESS [dev D] [label L] [brd B] [scope S] [no_track]`; None after a problem."""
        options: dict[str, str] = {}
        words = item.args
        i = 0
        while i < len(words):
            word = words[i]
            if word == "no_track":
                options[word] = ""
                i += 1
                continue
            if word not in _VIP_OPTIONS_WITH_VALUE:
                self.p.error(item.location, path, f"unsupported virtual_ipaddress option {word!r}")
                return None
            if i + 1 >= len(words):
                self.p.error(item.location, path, f"{word!r} needs a value")
                return None
            name = "brd" if word == "broadcast" else word
            if name in options:
                self.p.error(item.location, path, f"{word!r} given twice for {item.keyword}")
                return None
            options[name] = words[i + 1]
            i += 2
        return options

    def _vip(
        self, address: IPv4Interface, options: dict[str, str], where: Location, path: str
    ) -> VirtualAddress:
        for key in ("dev", "label"):
            value = options.get(key)
            if value is not None and not 1 <= len(value.encode()) < _IFNAMSIZ:
                self.p.error(where, path, f"{key} {value!r} is not 1..15 bytes long")
        return VirtualAddress(
            address,
            dev=options.get("dev"),
            label=options.get("label"),
            broadcast=self._vip_broadcast(address, options.get("brd"), where, path),
            scope=self._vip_scope(options.get("scope"), where, path),
            track="no_track" not in options,
        )

    def _vip_broadcast(
        self, address: IPv4Interface, text: str | None, where: Location, path: str
    ) -> IPv4Address | None:
        """`brd ADDRESS`, or keepalived's `+` / `-`: host bits set / cleared."""
        if text is None:
            return None
        if text in ("+", "-"):
            if address.network.prefixlen > 30:
                self.p.error(
                    where, path, f"prefix /{address.network.prefixlen} is too long for brd"
                )
                return None
            net = address.network
            return net.broadcast_address if text == "+" else net.network_address
        return self._ipv4(text, where, path)

    def _vip_scope(self, text: str | None, where: Location, path: str) -> int | None:
        if text is None:
            return None
        if text in _SCOPES:
            return _SCOPES[text]
        if _INT_RE.fullmatch(text) and 0 <= int(text) <= 255:
            return int(text)
        self.p.error(where, path, f"scope {text!r} is not one of {', '.join(_SCOPES)} or 0..255")
        return None

    def _interface_address(self, text: str, where: Location, path: str) -> IPv4Interface | None:
        if ":" in text:
            self.p.error(where, path, f"{text!r}: IPv6 virtual addresses are not supported")
            return None
        try:
            address = IPv4Interface(text if "/" in text else f"{text}/32")
        except (AddressValueError, NetmaskValueError, ValueError):
            self.p.error(where, path, f"{text!r} is not an IPv4 address[/prefix]")
            return None
        if not 1 <= address.network.prefixlen <= 32 or (
            "/" in text and not text.split("/")[1].isdigit()
        ):
            self.p.error(where, path, f"{text!r}: prefix must be a length 1..32")
            return None
        return address

    def _unicast_peer(self, stmt: Statement, path: str) -> list[IPv4Address]:
        block = self._block(stmt, path)
        found: list[IPv4Address] = []
        for item in block or ():
            if item.block is not None or item.args:
                self.p.error(item.location, path, "expects one IPv4 address per line")
                continue
            address = self._ipv4(item.keyword, item.location, path)
            if address is not None:
                found.append(address)
        return found

    def _track_script(self, stmt: Statement, path: str, declared: set[str]) -> list[TrackedScript]:
        block = self._block(stmt, path)
        found: list[TrackedScript] = []
        for item in block or ():
            weight = self._weight_option(item, path)
            if weight is False:
                continue
            if item.keyword not in declared:
                self.p.error(item.location, path, f"{item.keyword!r} is not a defined vrrp_script")
                continue
            if any(t.name == item.keyword for t in found):
                self.p.warn(item.location, path, f"{item.keyword!r} tracked twice")
                continue
            found.append(TrackedScript(item.keyword, weight))
        return found

    def _track_interface(self, stmt: Statement, path: str) -> list[TrackedInterface]:
        block = self._block(stmt, path)
        found: list[TrackedInterface] = []
        for item in block or ():
            weight = self._weight_option(item, path)
            if weight is not False:
                found.append(TrackedInterface(item.keyword, weight))
        return found

    def _weight_option(self, item: Statement, path: str) -> int | None | bool:
        """`NAME [weight N]`: the override, None without one, False after reporting a problem."""
        if item.block is not None:
            self.p.error(item.location, path, "unexpected '{ ... }' block")
            return False
        if not item.args:
            return None
        if item.args[2:] in (("reverse",), ("noreverse",), ("no_reverse",)):
            self.p.error(item.location, path, f"'weight N {item.args[2]}' is not supported")
            return False
        if len(item.args) != 2 or item.args[0] != "weight":
            self.p.error(
                item.location, path, f"expects NAME [weight N], got {' '.join(item.args)!r}"
            )
            return False
        text = item.args[1]
        if not _INT_RE.fullmatch(text) or not -WEIGHT_LIMIT <= int(text) <= WEIGHT_LIMIT:
            self.p.error(
                item.location,
                path,
                f"weight {text!r} is not a whole number in -{WEIGHT_LIMIT}..{WEIGHT_LIMIT}",
            )
            return False
        return int(text)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


_GLOBAL_FLAGS = {
    "vrrp_skip_check_adv_addr": "skip_check_adv_addr",
    "enable_script_security": "enable_script_security",
    "vrrp_check_unicast_src": "check_unicast_src",
}
_GLOBAL_KEYS = frozenset(
    {
        *_GLOBAL_FLAGS,
        "vrrp_strict",
        "vrrp_garp_interval",
        "vrrp_gna_interval",
        "vrrp_version",
        "vrrp_notify_fifo",
        "router_id",
        "script_user",
        "vrrp_garp_master_delay",
        "vrrp_garp_master_repeat",
    }
)
_SCRIPT_KEYS = frozenset({"script", "interval", "timeout", "weight", "rise", "fall", "user"})
_INSTANCE_LISTS = frozenset(
    {"virtual_ipaddress", "unicast_peer", "track_script", "track_interface"}
)
_INSTANCE_FLAGS = frozenset({"nopreempt", "dont_track_primary", "check_unicast_src"})
_INSTANCE_INTS = {
    "virtual_router_id": (1, 255),
    "priority": (1, 255),
    "version": (2, 3),
    "garp_master_delay": (0, MAX_GARP_DELAY),
}
_INSTANCE_KEYS = frozenset(
    {
        "state",
        "interface",
        "advert_int",
        "preempt_delay",
        "authentication",
        "unicast_src_ip",
        "garp_master_repeat",
        *_INSTANCE_FLAGS,
        *_INSTANCE_INTS,
        *_INSTANCE_LISTS,
        *_NOTIFY_KEYS,
    }
)
# rtnetlink address scopes by the names `ip address` and keepalived accept (rt_scopes).
_SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
_IFNAMSIZ = 16


@dataclass(slots=True)
class _InstanceParts:
    """What the lines of one vrrp_instance block collected, before the whole-block checks."""

    name: str
    v: dict[str, object] = field(default_factory=dict)
    loc: dict[str, Location] = field(default_factory=dict)
    vips: list[VirtualAddress] = field(default_factory=list)
    peers: list[IPv4Address] = field(default_factory=list)
    tracked: list[TrackedScript] = field(default_factory=list)
    tracked_ifs: list[TrackedInterface] = field(default_factory=list)
    notify_users: dict[str, ScriptUser] = field(default_factory=dict)
    advert_text: str | None = None

    @property
    def section(self) -> str:
        return f"vrrp_instance {self.name}"


def _int_or(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
