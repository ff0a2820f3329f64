"""Who may do what: roles, the access level a route needs, and the principal behind a request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Role(StrEnum):
    """What a person or a machine token may do; each role includes the ones before it."""

    VIEWER = "viewer"  # read status, tags, events, metrics, config (redacted)
    OPERATOR = "operator"  # + switchover (tag writes later)
    ADMIN = "admin"  # + config changes

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class Access(Enum):
    """What a route needs from the caller."""

    PUBLIC = "public"  # health, the login page and its assets, POST /login
    PEER = "peer"  # the peer link: only the other node of the pair
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def role(self) -> Role | None:
        return Role(self.value) if self.value in Role._value2member_map_ else None


class PrincipalKind(StrEnum):
    SESSION = "session"  # a person logged in through the dashboard (cookie)
    TOKEN = "token"  # a machine token (Authorization: Bearer)
    PEER = "peer"  # the other node of the pair (the derived peer-link bearer)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    kind: PrincipalKind
    name: str
    role: Role | None  # None for the peer
    session_id: str | None = None  # the hashed session key, for logout and CSRF
    token_id: str | None = None

    @property
    def key(self) -> str:
        """Groups the requests of one caller, for per-caller limits."""
        return f"{self.kind.value}:{self.name}"

    def allows(self, access: Access) -> bool:
        if access is Access.PUBLIC:
            return True
        if access is Access.PEER:
            return self.kind is PrincipalKind.PEER
        needed = access.role
        return needed is not None and self.role is not None and self.role.rank >= needed.rank
