"""Which of a keepalived.conf's scripts run, as whom, and why the others do not.

keepalived settles this once at start (vrrp_parser.c and check_vrrp_script_security): each
track and notify script gets its user (its own `user`, else the default script user) and is
checked; a script whose user does not exist, that cannot be found or executed, or that is
unsafe under enable_script_security is disabled, with a config error, and the instance runs
without it. `tandem keepalived -t` reports the same problems as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tandem.config.keepalived import KeepalivedConfig, Location, ScriptUser
from tandem.errors import ConfigProblem
from tandem.health.security import (
    ScriptFlag,
    ScriptVerdict,
    UnknownUser,
    check_script,
    default_user,
    resolve,
)
from tandem.health.spawn import RunAs


@dataclass(slots=True)
class ScriptPlan:
    """The runnable scripts with their users, and every problem found on the way."""

    checks: dict[str, RunAs] = field(default_factory=dict)  # vrrp_script name -> user
    notify: dict[str, dict[str, RunAs]] = field(default_factory=dict)  # instance -> keyword
    fifo_owner: RunAs | None = None
    errors: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)
    flags: ScriptFlag = ScriptFlag.NONE

    def problem(self, where: Location | None, fallback: str, path: str, message: str) -> None:
        file, line = (where.file, where.line) if where is not None else (fallback, None)
        self.errors.append(ConfigProblem(file, line, path, message))


def _user_for(own: ScriptUser | None, default: RunAs | UnknownUser) -> RunAs | UnknownUser:
    if own is None:
        return default
    try:
        return resolve(own.user, own.group)
    except UnknownUser as exc:
        return exc


def _judge(command: str, user: RunAs | UnknownUser, security: bool) -> ScriptVerdict | str:
    """The verdict, or why the script was dropped before it could be checked."""
    if isinstance(user, UnknownUser):
        return f"cannot run as configured: {user}"
    return check_script(command, user, security)


def plan_scripts(cfg: KeepalivedConfig) -> ScriptPlan:
    """keepalived's decisions for every vrrp_script and notify script of `cfg`."""
    g = cfg.globals
    security = g.enable_script_security
    plan = ScriptPlan()
    default: RunAs | UnknownUser
    try:
        default = default_user(g.script_user, g.script_group, security)
    except UnknownUser as exc:
        default = exc
    source = str(cfg.source)
    for script in cfg.scripts.values():
        own = ScriptUser(script.user, script.group) if script.user is not None else None
        user = _user_for(own, default)
        verdict = _judge(script.command, user, security)
        path = f"vrrp_script {script.name}"
        if _accept(plan, verdict, script.location, source, path, "track script"):
            assert isinstance(user, RunAs)
            plan.checks[script.name] = user
    for inst in cfg.instances:
        allowed = plan.notify.setdefault(inst.name, {})
        for key, command in inst.notify_commands().items():
            user = _user_for(inst.notify_users.get(key), default)
            where = inst.notify_locations.get(key, inst.location)
            path = f"vrrp_instance {inst.name}.{key}"
            if _accept(plan, _judge(command, user, security), where, source, path, "notify"):
                assert isinstance(user, RunAs)
                allowed[key] = user
    _fifo_owner(cfg, plan, default)
    _security_warning(cfg, plan)
    return plan


def _accept(
    plan: ScriptPlan,
    verdict: ScriptVerdict | str,
    where: Location | None,
    source: str,
    path: str,
    kind: str,
) -> bool:
    if isinstance(verdict, str):
        plan.problem(where, source, path, f"{kind} disabled: {verdict}")
        return False
    plan.flags |= verdict.flags
    if verdict.runnable:
        if verdict.flags & ScriptFlag.INSECURE:
            plan.warnings.append(
                ConfigProblem(
                    where.file if where else source,
                    where.line if where else None,
                    path,
                    f"runs as root although {verdict.reason} (enable_script_security would "
                    "disable it)",
                )
            )
        return True
    plan.problem(where, source, path, f"{kind} disabled: {verdict.reason}")
    return False


def _fifo_owner(cfg: KeepalivedConfig, plan: ScriptPlan, default: RunAs | UnknownUser) -> None:
    g = cfg.globals
    if g.notify_fifo is None:
        return
    owner = _user_for(g.notify_fifo_owner, default)
    if isinstance(owner, UnknownUser):
        where = g.notify_fifo_owner.location if g.notify_fifo_owner else g.location
        plan.problem(where, str(cfg.source), "global_defs.vrrp_notify_fifo", str(owner))
        return
    plan.fifo_owner = owner


def _security_warning(cfg: KeepalivedConfig, plan: ScriptPlan) -> None:
    """keepalived's "SECURITY VIOLATION" line: scripts exist, script security is off."""
    if cfg.globals.enable_script_security or not plan.flags & ScriptFlag.IS_SCRIPT:
        return
    insecure = " There are insecure scripts." if plan.flags & ScriptFlag.INSECURE else ""
    where = cfg.globals.location
    plan.warnings.append(
        ConfigProblem(
            where.file if where else str(cfg.source),
            where.line if where else None,
            "global_defs.enable_script_security",
            "SECURITY VIOLATION - scripts are being executed but script_security not "
            f"enabled.{insecure}",
        )
    )
