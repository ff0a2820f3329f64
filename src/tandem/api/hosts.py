"""Which Host header values this node answers to: DNS rebinding stops at the door."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable

import psutil

WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
REFRESH_S = 10.0  # addresses can change (DHCP, a VIP): re-read them at most this often


def host_of(header: str) -> str:
    """The name or address of a Host header, without port or brackets, lowercased."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def interface_addresses() -> set[str]:
    found: set[str] = set()
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                found.add(a.address.split("%")[0].lower())
    return found


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


class AllowedHosts:
    """`api.allowed_hosts` when set; else this machine's names and addresses, plus `extra`."""

    def __init__(
        self,
        configured: Iterable[str] | None,
        extra: Iterable[str] = (),
        *,
        discover: Callable[[], set[str]] = interface_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.any = False
        self._discover = discover
        self._clock = clock
        self._refreshed = float("-inf")
        if configured is not None:
            names = {_canonical(h) for h in configured}
            self.any = "*" in names
            self._fixed = names
            self._discovered: set[str] | None = None
            return
        self._fixed = {"localhost", "127.0.0.1", "::1", *(_canonical(h) for h in extra)}
        # Not getfqdn(): it asks DNS, which can hang a start for seconds on an isolated
        # plant network. DNS names in front of the node go in api.allowed_hosts.
        self._fixed.add(_canonical(socket.gethostname()))
        self._discovered = set()
        self._refresh()

    def _refresh(self) -> None:
        self._refreshed = self._clock()
        self._discovered = {_canonical(a) for a in self._discover()}

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        if not header:
            return False
        host = _canonical(host_of(header))
        if host in self._fixed:
            return True
        if self._discovered is None:
            return False
        if host not in self._discovered and self._clock() - self._refreshed > REFRESH_S:
            self._refresh()
        return host in self._discovered


def default_extra_hosts(bind_host: str, more: Iterable[str]) -> list[str]:
    """The bind address (when it is one address) and the node's VIPs and VRRP source."""
    hosts = [] if bind_host in WILDCARD_BINDS else [bind_host]
    return [*hosts, *more]
