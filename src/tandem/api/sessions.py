"""Dashboard logins and the login throttle: pure state with the clock passed in.

Sessions live in memory only: a restart logs everyone out, which is the safe direction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from tandem.security.roles import Role

MAX_SESSIONS = 1000  # the oldest login is dropped beyond this: memory stays bounded
MAX_THROTTLE_KEYS = 10_000
FREE_FAILURES = 3  # wrong passwords allowed before any delay (typos)
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
FORGET_AFTER_S = 3600.0  # a key without failures for this long starts again from zero


def session_key(cookie: str) -> str:
    """Sessions are kept by the hash of their cookie, so the store's lookups leak nothing."""
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    user: str
    role: Role
    csrf: str
    created: float
    last_seen: float


class SessionStore:
    """Logins with an idle timeout and an absolute lifetime."""

    def __init__(self, idle_s: float, lifetime_s: float, max_sessions: int = MAX_SESSIONS):
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str, role: Role, now: float) -> tuple[str, Session]:
        """A new login: (the cookie value, its session); the cookie is never stored."""
        cookie = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), now, now)
        self._sessions[session_key(cookie)] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return cookie, session

    def lookup(self, key: str, now: float, *, touch: bool = True) -> Session | None:
        """The live session for a hashed cookie; an expired one is removed and None returned."""
        session = self._sessions.get(key)
        if session is None:
            return None
        if now - session.last_seen > self.idle_s or now - session.created > self.lifetime_s:
            del self._sessions[key]
            return None
        if touch:
            session.last_seen = now
        return session

    def alive(self, key: str, now: float) -> bool:
        return self.lookup(key, now, touch=False) is not None

    def end(self, key: str) -> None:
        self._sessions.pop(key, None)

    def end_user(self, user: str) -> None:
        for key in [k for k, s in self._sessions.items() if s.user == user]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass(slots=True)
class LoginThrottle:
    """Exponential backoff per key (a user name, a client address) after repeated failures.

    After FREE_FAILURES wrong passwords, each further attempt must wait
    BACKOFF_BASE_S * 2**(failures - FREE_FAILURES), up to BACKOFF_MAX_S, since the last one.
    """

    free: int = FREE_FAILURES
    base_s: float = BACKOFF_BASE_S
    max_s: float = BACKOFF_MAX_S
    max_keys: int = MAX_THROTTLE_KEYS
    _keys: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)

    def wait_s(self, key: str, now: float) -> float:
        """Seconds before `key` may try again; 0 when it may now."""
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        if now - entry.last > FORGET_AFTER_S:
            del self._keys[key]
            return 0.0
        if entry.count < self.free:
            return 0.0
        delay = min(self.base_s * 2.0 ** (entry.count - self.free), self.max_s)
        return max(0.0, entry.last + delay - now)

    def failed(self, key: str, now: float) -> None:
        entry = self._keys.pop(key, None) or _Failures()
        entry.count += 1
        entry.last = now
        self._keys[key] = entry  # most recent last, so the oldest is evicted first
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)
