"""Tandem's failover engine against real keepalived 2.2.7, both ways round, in namespaces."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.netns.netns import Topology
from tests.netns.vrrp_nodes import (
    AdvertSniffer,
    Implementation,
    NotifyLog,
    VrrpNode,
    seed_pair,
)

pytestmark = pytest.mark.netns

# Scheduling, fork/exec of the notify script and `date`: the slack every bound gets.
SLACK = 0.5


def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll a condition that follows a transition a few milliseconds later (VIPs, exit)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Pair:
    """A master and a backup that share one notify log."""

    master: VrrpNode
    backup: VrrpNode
    notify: NotifyLog

    def converge(self) -> None:
        """Master first, so the backup never sees a silent segment and stays BACKUP."""
        self.master.start_and_wait("MASTER", timeout=self.master.spec.master_down + 15)
        self.backup.start_and_wait("BACKUP")


PairFactory = Callable[..., Pair]


@pytest.fixture
def make_pair(make_topology: Callable[..., Topology], tmp_path: Path) -> Iterator[PairFactory]:
    """Build the seed guide's pair with any implementation on either side; stops both after."""
    made: list[VrrpNode] = []

    def build(
        master_impl: Implementation,
        backup_impl: Implementation,
        version: int = 2,
        advert_int: float = 1.0,
        master_overrides: dict[str, Any] | None = None,
        backup_overrides: dict[str, Any] | None = None,
    ) -> Pair:
        topo = make_topology(2)
        notify = NotifyLog(tmp_path)
        master_spec, backup_spec = seed_pair(
            topo[0], topo[1], version, advert_int, **(master_overrides or {})
        )
        backup_spec = replace(backup_spec, **(backup_overrides or {}))
        master = VrrpNode(master_impl, topo[0].ns, master_spec, tmp_path / "master", notify)
        backup = VrrpNode(backup_impl, topo[1].ns, backup_spec, tmp_path / "backup", notify)
        made.extend([master, backup])
        return Pair(master, backup, notify)

    yield build
    for node in made:
        node.stop()


def _other(impl: Implementation) -> Implementation:
    return "keepalived" if impl == "tandem" else "tandem"


LIFECYCLES = [
    pytest.param("tandem", 2, 1.0, id="tandem-master-v2"),
    pytest.param("keepalived", 2, 1.0, id="keepalived-master-v2"),
    pytest.param("tandem", 3, 0.5, id="tandem-master-v3"),
    pytest.param("keepalived", 3, 0.5, id="keepalived-master-v3"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("master_impl", "version", "advert_int"), LIFECYCLES)
def test_interop_failover_lifecycle_backup_takes_over_and_master_returns(
    make_pair: PairFactory, master_impl: Implementation, version: int, advert_int: float
) -> None:
    pair = make_pair(master_impl, _other(master_impl), version, advert_int)
    master, backup, notify = pair.master, pair.backup, pair.notify
    pair.converge()

    # While the master lives, the backup stays BACKUP and the VIP stays put.
    quiet_since = time.time()
    time.sleep(max(3.0, 6 * advert_int))
    assert notify.of("backup", quiet_since) == []
    assert notify.of("master", quiet_since) == []
    assert master.has_vips()
    assert not backup.has_vips()

    # Crash: the backup waits out its master_down_interval.
    killed = master.kill()
    took = notify.wait_for("backup", "MASTER", since=killed, timeout=15)
    assert took.time - killed < backup.spec.master_down + SLACK
    assert eventually(backup.has_vips)

    # Return: priority 100 preempts the nopreempt backup, which runs its backup hook.
    restarted = master.start()
    notify.wait_for("master", "MASTER", since=restarted, timeout=master.spec.master_down + 15)
    stepped_down = notify.wait_for("backup", "BACKUP", since=restarted, timeout=5)
    assert stepped_down.priority == 90
    assert eventually(master.has_vips)
    assert eventually(lambda: not backup.has_vips())

    # Orderly stop: one priority-0 advert, the backup takes over after its skew only.
    terminated = master.terminate()
    took = notify.wait_for("backup", "MASTER", since=terminated, timeout=10)
    assert took.time - terminated < backup.spec.skew + SLACK
    assert master.process is not None and master.process.returncode == 0
    assert not master.has_vips()
    assert eventually(backup.has_vips)


MISMATCHES = [
    pytest.param({"auth_pass": "wrongpwd"}, "auth_mismatch", id="password"),
    pytest.param({"vrid": 52}, "unknown_vrid", id="vrid"),
    pytest.param({"version": 3, "auth_pass": None}, "version_mismatch", id="version"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("keepalived_overrides", "drop_reason"), MISMATCHES)
def test_interop_mismatched_peer_both_master_and_drop_counted(
    make_pair: PairFactory, keepalived_overrides: dict[str, Any], drop_reason: str
) -> None:
    pair = make_pair("tandem", "keepalived", backup_overrides=keepalived_overrides)
    tandem, keepalived, notify = pair.master, pair.backup, pair.notify
    started = time.time()
    tandem.start()
    keepalived.start()

    # Dropped adverts never reset a backup's timer: both sides time out and take the VIP.
    notify.wait_for("master", "MASTER", since=started, timeout=15)
    notify.wait_for("backup", "MASTER", since=started, timeout=15)
    time.sleep(2.0)  # a few of keepalived's adverts reach Tandem as MASTER

    stats = tandem.stats()
    assert stats["state"] == "MASTER"
    assert stats["drops"].get(drop_reason, 0) >= 1, stats["drops"]
    assert tandem.has_vips()
    assert keepalived.has_vips()


@pytest.mark.slow
def test_interop_track_script_fault_hands_over_and_master_preempts_back(
    make_pair: PairFactory, tmp_path: Path
) -> None:
    flag = tmp_path / "service-down"
    pair = make_pair(
        "tandem",
        "keepalived",
        master_overrides={"fail_flag": flag, "track_interval": 1, "track_fall": 2},
    )
    master, backup, notify = pair.master, pair.backup, pair.notify
    with AdvertSniffer(backup.ns) as sniffer:
        pair.converge()
        time.sleep(2.0)

        # The service fails: two failing runs one second apart -> FAULT.
        failed_at = time.time()
        flag.touch()
        fault = notify.wait_for("master", "FAULT", since=failed_at, timeout=10)
        assert 0.5 < fault.time - failed_at < 2 * 1 + 2.0
        took = notify.wait_for("backup", "MASTER", since=failed_at, timeout=5)
        time.sleep(1.5)  # FAULT stays silent: nothing more may arrive

        resign = [a for a in sniffer.from_(master.spec.src, failed_at) if a.priority == 0]
        assert len(resign) == 2
        assert resign[1].time - resign[0].time < 0.1
        after_fault = sniffer.from_(master.spec.src, resign[-1].time + 0.01)
        assert after_fault == []
        # A priority-0 advert makes a backup wait its skew only (0.648 s at priority 90).
        assert backup.spec.skew - 0.15 < took.time - resign[0].time < backup.spec.skew + SLACK
        assert eventually(backup.has_vips)
        assert not master.has_vips()

        # The service recovers: BACKUP at once, then MASTER after its own down timer.
        recovered_at = time.time()
        flag.unlink()
        back = notify.wait_for("master", "BACKUP", since=recovered_at, timeout=5)
        regained = notify.wait_for("master", "MASTER", since=recovered_at, timeout=10)
        assert (
            master.spec.master_down - SLACK
            < regained.time - back.time
            < master.spec.master_down + SLACK
        )
        notify.wait_for("backup", "BACKUP", since=recovered_at, timeout=5)
        assert eventually(master.has_vips)
        assert eventually(lambda: not backup.has_vips())

    reasons = [(old, new, reason) for old, new, reason, _ in master.logged_transitions()]
    assert ("MASTER", "FAULT", "tracked_check_failed") in reasons
    assert ("FAULT", "BACKUP", "tracked_checks_recovered") in reasons
