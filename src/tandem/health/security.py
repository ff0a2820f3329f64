"""keepalived 2.2.7's script security: who a script runs as, and whether it may run at all.

Reproduces keepalived's lib/notify.c: the default user (`script_user`, else
`keepalived_script` if it exists, else the daemon's own user), `check_script_secure` (the
script must be found and executable by its user) and, for scripts that run as root or are
setuid/setgid root, `check_security`: every component of the resolved path must be owned by
root and not writable by a non-root group or by others (directories with the sticky bit
excepted). Such an unsafe script is disabled when `enable_script_security` is set and only
reported otherwise.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
from dataclasses import dataclass
from enum import Flag, auto

from tandem.health.spawn import RunAs

DEFAULT_SCRIPT_USER = "keepalived_script"  # keepalived's default when it exists


class ScriptFlag(Flag):
    """keepalived's SC_* flags for one script."""

    NONE = 0
    IS_SCRIPT = auto()  # found: counts towards the "script_security not enabled" warning
    EXECUTABLE = auto()  # executable by the user it runs as
    INSECURE = auto()  # runs as root and a path component is writable by a non-root user
    INHIBIT = auto()  # must not run (insecure with enable_script_security, or a wrong file type)
    NOT_FOUND = auto()  # missing, or not reachable


@dataclass(frozen=True, slots=True)
class ScriptVerdict:
    """Whether a script may run, and the sentence that explains why not."""

    flags: ScriptFlag
    reason: str = ""

    @property
    def runnable(self) -> bool:
        """keepalived runs a script only when it is executable and neither inhibited nor lost."""
        blocked = ScriptFlag.INHIBIT | ScriptFlag.NOT_FOUND
        return bool(self.flags & ScriptFlag.EXECUTABLE) and not self.flags & blocked


class UnknownUser(LookupError):
    """A configured user or group does not exist on this system."""


def resolve(user: str, group: str | None = None) -> RunAs:
    """USER [GROUP] as uid/gid: the group defaults to the user's primary group."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UnknownUser(f"user {user!r} does not exist") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UnknownUser(f"group {group!r} does not exist") from None
    return RunAs(entry.pw_uid, gid, entry.pw_name)


def default_user(script_user: str | None, script_group: str | None, security: bool) -> RunAs:
    """keepalived's get_default_script_user: script_user, else keepalived_script, else us.

    With enable_script_security and neither script_user nor a keepalived_script user,
    keepalived refuses to pick root silently: UnknownUser.
    """
    if script_user is not None:
        return resolve(script_user, script_group)
    try:
        return resolve(DEFAULT_SCRIPT_USER)
    except UnknownUser:
        if security:
            raise UnknownUser(
                f"no script_user and no {DEFAULT_SCRIPT_USER!r} user: with "
                "enable_script_security keepalived will not run scripts as root by default"
            ) from None
    uid, gid = os.geteuid(), os.getegid()
    return RunAs(uid, gid, pwd.getpwuid(uid).pw_name)


def script_program(command: str) -> str:
    """The program a command line starts: keepalived checks its first word."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return words[0] if words else ""


def is_executable(st: os.stat_result, run_as: RunAs) -> bool:
    """keepalived's is_executable: root needs any x bit, others the bit for their class."""
    mode = st.st_mode
    if run_as.uid == 0:
        return bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    if run_as.uid == st.st_uid:
        return bool(mode & stat.S_IXUSR)
    if run_as.gid == st.st_gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _locate(program: str) -> str | None:
    """A bare name is searched in PATH, as keepalived's find_path does."""
    if "/" in program:
        return program
    return shutil.which(program, path=os.environ.get("PATH", os.defpath))


def check_script(command: str, run_as: RunAs, script_security: bool) -> ScriptVerdict:
    """keepalived's check_script_secure for one command line run as `run_as`."""
    program = script_program(command)
    located = _locate(program) if program else None
    if located is None:
        return ScriptVerdict(ScriptFlag.NOT_FOUND, f"cannot find {program!r} in PATH")
    real = os.path.realpath(located)
    try:
        st = os.stat(real)
    except OSError as exc:
        return ScriptVerdict(ScriptFlag.NOT_FOUND, f"cannot access {program}: {exc.strerror}")
    flags = ScriptFlag.IS_SCRIPT
    if not is_executable(st, run_as):
        return ScriptVerdict(
            flags, f"{real} is not executable for uid:gid {run_as.uid}:{run_as.gid}"
        )
    flags |= ScriptFlag.EXECUTABLE
    setuid_root = st.st_uid == 0 and st.st_mode & stat.S_IXUSR and st.st_mode & stat.S_ISUID
    setgid_root = st.st_gid == 0 and st.st_mode & stat.S_IXGRP and st.st_mode & stat.S_ISGID
    if not (run_as.uid == 0 or run_as.gid == 0 or setuid_root or setgid_root):
        return ScriptVerdict(flags)
    return _path_security(real, flags, script_security)


def _components(path: str) -> list[str]:
    """'/', '/a', '/a/b', ... up to the path itself, the order keepalived checks them in."""
    parts = [p for p in path.split("/") if p]
    return ["/", *("/" + "/".join(parts[: n + 1]) for n in range(len(parts)))]


def _path_security(path: str, flags: ScriptFlag, script_security: bool) -> ScriptVerdict:
    """keepalived's check_security: root-owned, and no non-root write access, all the way."""
    components = _components(path)
    for index, component in enumerate(components):
        last = index == len(components) - 1
        try:
            st = os.lstat(component)
        except OSError:
            return ScriptVerdict(flags | ScriptFlag.NOT_FOUND, f"cannot find {component}")
        is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
        if (not last and not is_dir) or (last and not (is_file or stat.S_ISLNK(st.st_mode))):
            return ScriptVerdict(
                flags | ScriptFlag.INHIBIT, f"wrong file type in script path: {component}"
            )
        writable = (st.st_gid != 0 and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH
        checked = (is_dir and not st.st_mode & stat.S_ISVTX) or is_file
        if st.st_uid != 0 or (checked and writable):
            flags |= ScriptFlag.INSECURE
            if script_security:
                flags |= ScriptFlag.INHIBIT
            who = f"owned by uid {st.st_uid}" if st.st_uid != 0 else "writable by non-root"
            return ScriptVerdict(flags, f"unsafe permissions: {component} is {who}")
    return ScriptVerdict(flags)
