"""Two Tandem engines against each other over raw VRRP in namespaces, at sub-second timers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.netns import Topology
from tests.netns.vrrp_nodes import NotifyLog, VrrpNode, running_nodes, seed_pair

pytestmark = pytest.mark.netns

ADVERT_INT = 0.1
# The sub-second figure itself (about 0.37 s) is the benchmark's business; this only has to
# catch an engine that falls back to whole seconds or misses the master going away.
TAKEOVER_BOUND = 1.0


def _pair(topo: Topology, tmp_path: Path) -> tuple[VrrpNode, VrrpNode, NotifyLog]:
    notify = NotifyLog(tmp_path)
    master_spec, backup_spec = seed_pair(topo[0], topo[1], version=3, advert_int=ADVERT_INT)
    master = VrrpNode("tandem", topo[0].ns, master_spec, tmp_path / "master", notify)
    backup = VrrpNode("tandem", topo[1].ns, backup_spec, tmp_path / "backup", notify)
    return master, backup, notify


@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_engine_native_v3_subsecond_master_loss_backup_takes_over_within_bound(
    make_topology: Callable[..., Topology], tmp_path: Path, how: str
) -> None:
    master, backup, notify = _pair(make_topology(2), tmp_path)
    with running_nodes([master, backup]):
        master.start_and_wait("MASTER")
        backup.start_and_wait("BACKUP")
        quiet_since = time.time()
        time.sleep(2.0)  # 20 advert intervals without a spurious transition
        assert notify.of("backup", quiet_since) == []
        assert notify.of("master", quiet_since) == []
        assert master.has_vips()

        lost = master.kill() if how == "kill" else master.terminate()
        took = notify.wait_for("backup", "MASTER", since=lost, timeout=10)

        assert took.time - lost < TAKEOVER_BOUND
        if how == "terminate":
            # Priority 0 cuts the wait to the skew: well under the master-down interval.
            assert took.time - lost < backup.spec.master_down
            assert not master.has_vips()
        assert backup.has_vips()
        received = backup.stats()["adverts_received"]
        assert received >= 15  # the backup really listened to 0.1 s adverts
