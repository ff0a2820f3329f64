"""Adverts from senders that are not configured peers: Tandem's rule and keepalived's."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

import pytest

from tandem.vrrp.machine import VrrpMachine
from tandem.vrrp.packet import advert_for
from tandem.vrrp.types import (
    AdvertIn,
    Dropped,
    DropReason,
    InstanceConfig,
    SourceCheck,
    Start,
    State,
    Tick,
)

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")
STRANGER = IPv4Address("10.0.0.66")
VIP = IPv4Interface("10.0.0.100/24")


def backup_config(**overrides: object) -> InstanceConfig:
    config = InstanceConfig(
        name="VI_1",
        vrid=51,
        priority=90,
        advert_interval=1.0,
        local_address=LOCAL,
        vips=(VIP,),
        auth_pass=b"abcdefgh",
        unicast_peers=(PEER,),
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def advert_from(config: InstanceConfig, src: IPv4Address, priority: int = 100) -> AdvertIn:
    return AdvertIn(advert=advert_for(config, priority, config.advert_interval), src=src)


def started_backup(config: InstanceConfig) -> VrrpMachine:
    machine = VrrpMachine(config)
    machine.handle(Start(), 0.0)
    assert machine.state is State.BACKUP
    return machine


def drop_reasons(actions: list[object]) -> list[DropReason]:
    return [a.reason for a in actions if isinstance(a, Dropped)]


def test_source_check_default_is_peers_only() -> None:
    assert backup_config().source_check is SourceCheck.PEERS_ONLY


def test_source_check_peers_only_stranger_dropped_and_timer_not_reset() -> None:
    machine = started_backup(backup_config())
    deadline = machine.deadline
    actions = machine.handle(advert_from(machine.config, STRANGER), 1.0)
    assert drop_reasons(actions) == [DropReason.UNKNOWN_SOURCE]
    assert machine.deadline == deadline  # a stranger cannot hold a backup down
    assert machine.counters.by_reason == {"unknown_source": 1}
    assert machine.master_address is None


def test_source_check_peers_only_checked_before_password() -> None:
    # A stranger with the wrong password is an unknown source, not a mismatched peer: the
    # operator is not told to "make auth_pass the same" for a host that is not in the pair.
    machine = started_backup(backup_config())
    wrong = advert_from(backup_config(auth_pass=b"guessing"), STRANGER)
    assert drop_reasons(machine.handle(wrong, 1.0)) == [DropReason.UNKNOWN_SOURCE]


def test_source_check_peers_only_peer_accepted() -> None:
    machine = started_backup(backup_config())
    assert machine.handle(advert_from(machine.config, PEER), 1.0) == []
    assert machine.master_address == PEER


def test_source_check_peers_only_stranger_cannot_take_master_role_away() -> None:
    machine = started_backup(backup_config())
    deadline = machine.deadline
    assert deadline is not None
    machine.handle(Tick(), deadline)
    assert machine.state is State.MASTER
    higher = advert_from(machine.config, STRANGER, priority=254)
    assert drop_reasons(machine.handle(higher, deadline + 0.1)) == [DropReason.UNKNOWN_SOURCE]
    assert machine.state is State.MASTER


def test_source_check_peers_only_multicast_instance_has_no_peer_list() -> None:
    machine = started_backup(backup_config(unicast_peers=()))
    assert machine.handle(advert_from(machine.config, STRANGER), 1.0) == []
    assert machine.master_address == STRANGER


def test_source_check_off_stranger_accepted_as_keepalived_default() -> None:
    machine = started_backup(backup_config(source_check=SourceCheck.OFF))
    assert machine.handle(advert_from(machine.config, STRANGER), 1.0) == []
    assert machine.master_address == STRANGER


def test_source_check_keepalived_runs_after_address_checks() -> None:
    # keepalived's vrrp_check_packet looks at the VIP list before check_unicast_src.
    machine = started_backup(backup_config(source_check=SourceCheck.KEEPALIVED))
    other_vips = advert_from(backup_config(vips=(IPv4Interface("10.0.0.200/24"),)), STRANGER)
    assert drop_reasons(machine.handle(other_vips, 1.0)) == [DropReason.VIP_MISMATCH]
    wrong_password = advert_from(backup_config(auth_pass=b"guessing"), STRANGER)
    assert drop_reasons(machine.handle(wrong_password, 1.1)) == [DropReason.AUTH_MISMATCH]
    matching = advert_from(machine.config, STRANGER)
    assert drop_reasons(machine.handle(matching, 1.2)) == [DropReason.UNKNOWN_SOURCE]


@pytest.mark.parametrize("skip", [False, True])
def test_source_check_keepalived_peer_accepted(skip: bool) -> None:
    config = backup_config(source_check=SourceCheck.KEEPALIVED, skip_check_adv_addr=skip)
    machine = started_backup(config)
    assert machine.handle(advert_from(config, PEER), 1.0) == []
    assert machine.handle(advert_from(config, PEER), 2.0) == []
    assert machine.master_address == PEER
