"""Every message the warden and the hub process exchange, and the codec that carries them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tandem.ha import types as t
from tandem.ha.channel import Codec
from tandem.ha.records import CoreSnapshot


@dataclass(frozen=True, slots=True)
class HubStart:
    """The warden's first message: the config to run (validated JSON) and where it lives."""

    config_json: str
    config_path: str | None
    started_at: float  # wall clock of the node's start, shown to the peer


@dataclass(frozen=True, slots=True)
class HubStop:
    """Stop in order: pollers, a grace for PUBACKs, the API, the outbox."""


FACTS = (
    t.HubReport,
    t.Delivered,
    t.TermSeen,
    t.Acked,
    t.Polled,
    t.TrimsApplied,
    t.BarrierDone,
    t.PeerSeen,
    t.HandoverOffered,
    t.SwitchoverAsked,
    t.Drained,
    t.HandoverAnswered,
)
COMMANDS = (
    t.SetGate,
    t.Trim,
    t.RequestBarrier,
    t.Announce,
    t.Drain,
    t.SendOffer,
    t.AnswerOffer,
    t.AnswerSwitchover,
    t.RoleChanged,
    t.SecurityEvent,
    CoreSnapshot,
    HubStart,
    HubStop,
)
# Hub-side commands: what the warden's actions turn into on the channel.
HUB_ACTIONS = tuple(c for c in COMMANDS if c.__module__ == t.__name__)

CODEC = Codec((*FACTS, *COMMANDS))

assert all(dataclasses.is_dataclass(c) for c in (*FACTS, *COMMANDS))

__all__ = ["CODEC", "COMMANDS", "FACTS", "HUB_ACTIONS", "HubStart", "HubStop"]
