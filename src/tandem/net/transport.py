"""The contract every VRRP transport fulfils, and a lossy wrapper that simulates a bad network."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from ipaddress import IPv4Address
from types import TracebackType
from typing import Protocol, Self

from tandem.errors import TandemError
from tandem.vrrp.types import Drop, IpHeader

log = logging.getLogger(__name__)


class TransportError(TandemError):
    """A transport could not be opened (missing interface, no address, no privilege)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One VRRP message and what the IP layer said about it; `payload` excludes the IP header."""

    payload: bytes
    header: IpHeader


class VrrpTransport(Protocol):
    """Moves VRRP messages; never raises for bad peer input, which comes back as a Drop.

    `send` is synchronous and never blocks: VRRP tolerates a lost advert far better than a
    stalled event loop, so a full socket buffer or an unreachable network is logged, not raised.
    """

    @property
    def local_address(self) -> IPv4Address: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def send(self, payload: bytes, dst: IPv4Address) -> None: ...

    async def recv(self) -> Received | Drop: ...


class LossyTransport:
    """Wraps a transport and loses traffic on purpose, for loss and partition tests.

    This kernel has no tc netem, so loss is simulated above the socket. The RNG is seeded:
    the same seed loses the same packets, which keeps failing tests reproducible.
    `blocked` cuts everything in both directions, like pulling the cable on this node only.
    """

    def __init__(
        self,
        inner: VrrpTransport,
        send_loss: float = 0.0,
        recv_loss: float = 0.0,
        seed: int = 0,
    ) -> None:
        for name, value in (("send_loss", send_loss), ("recv_loss", recv_loss)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        self.inner = inner
        self.send_loss = send_loss
        self.recv_loss = recv_loss
        self.blocked = False
        self.sends_lost = 0
        self.receives_lost = 0
        self._rng = random.Random(seed)

    @property
    def local_address(self) -> IPv4Address:
        return self.inner.local_address

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    def _lose(self, fraction: float) -> bool:
        # Draw even at 0 or 1 so that changing one rate mid-test keeps the other's sequence.
        return self.blocked or self._rng.random() < fraction

    def send(self, payload: bytes, dst: IPv4Address) -> None:
        if self._lose(self.send_loss):
            self.sends_lost += 1
            log.debug("lossy transport: send to %s lost", dst)
            return
        self.inner.send(payload, dst)

    async def recv(self) -> Received | Drop:
        while True:
            received = await self.inner.recv()
            if not self._lose(self.recv_loss):
                return received
            self.receives_lost += 1
            log.debug("lossy transport: receive lost")
