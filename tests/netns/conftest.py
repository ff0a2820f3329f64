"""Fixtures for tests that need real network namespaces; they skip cleanly without root."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.netns.netns import Topology, netns_available

_available: tuple[bool, str] | None = None


def _netns_check() -> tuple[bool, str]:
    global _available
    if _available is None:
        _available = netns_available()
    return _available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every `netns`-marked test when namespaces cannot be built, with the reason."""
    marked = [item for item in items if item.get_closest_marker("netns") is not None]
    if not marked:
        return
    ok, reason = _netns_check()
    if ok:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def make_topology() -> Iterator[Callable[..., Topology]]:
    """Build topologies of any size; every one is torn down after the test, even on failure."""
    made: list[Topology] = []

    def build(nodes: int = 3, subnet: str = "10.77.0.0/24") -> Topology:
        ok, reason = _netns_check()
        if not ok:
            pytest.skip(reason)
        topology = Topology(nodes=nodes, subnet=subnet).__enter__()
        made.append(topology)
        return topology

    yield build
    for topology in reversed(made):
        topology.close()


@pytest.fixture
def topology(make_topology: Callable[..., Topology]) -> Topology:
    """Three nodes on one bridge at 10.77.0.1-3/24: two VRRP peers and a broker/PLC host."""
    return make_topology(3)
