"""One line to the field: a TCP socket or a serial port, shared by every device on it.

A link carries one request at a time, in the order devices ask (an asyncio.Lock is FIFO), so
several unit ids on one RS-485 bus or behind one gateway never talk over each other. On a
serial line it also keeps the line quiet for t3.5 before each request: pymodbus 3.16 frames
RTU by length and CRC and sends as soon as asked, with no inter-frame silence of its own.
The link reconnects by itself with exponential backoff and tells its listeners when it goes
up or down; it never raises peer input at its callers: every outcome is a Reply or an error
code from tandem.hub.codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from tandem.config.hub import Endpoint, SerialConfig, TcpEndpoint, link_key
from tandem.hub.codec import ERR_DISCONNECTED, ERR_IO, ERR_REFUSED, ERR_TIMEOUT
from tandem.hub.modbus.frames import (
    Framing,
    Parsed,
    ReadRequest,
    Reply,
    Request,
    WriteRequest,
    encode_request,
    parse_mbap,
    parse_rtu,
    silent_interval,
)

log = logging.getLogger(__name__)

# pymodbus closes a TCP client after retries + 3 unanswered requests; the same rule here
# finds a half-open connection (a peer that vanished without a FIN) without a keepalive.
TIMEOUTS_BEFORE_RECONNECT = 3
# Unit 0 is broadcast and never answers (Serial Line v1.02, 2.1): every frame is someone else's.
_NOBODY = ReadRequest(0, 3, 0, 1)
LinkListener = Callable[[bool, str | None], None]
Outcome = Callable[[Reply | int], None]
# Asked right before a request's bytes go out; False sends nothing and fails it with
# ERR_REFUSED (a write whose node lost its term while the request waited for the line).
Guard = Callable[[], bool]
_Queued = tuple[Request, float, Outcome, Guard | None]


def _deliver(done: Outcome, outcome: Reply | int) -> None:
    try:
        done(outcome)
    except Exception:
        log.exception("a request's completion failed")


class _LinkProtocol(asyncio.Protocol):
    """The byte stream of one open connection; resolves the one pending request."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.BaseTransport | None = None
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._buffer = bytearray()
        self._pending: tuple[Request, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ERR_IO)
        if not self.closed.done():
            self.closed.set_result(f"connection lost: {exc}" if exc else "connection closed")

    def data_received(self, data: bytes) -> None:
        link = self._link
        link.quiet_at = self._loop.time()
        self._buffer += data
        if self._pending is None:
            if link.framing == "mbap":
                self._buffer.clear()  # an answer to nobody; the next request starts clean
                link.stray_bytes += len(data)
                return
            # On RTU, find whose late answer this is: that unit stops owing one.
            request: Request = _NOBODY
            tid = 0
        else:
            request, tid = self._pending
        # The usual case, one whole reply in one read, parses the bytes as they came.
        buffer = data if len(self._buffer) == len(data) else bytes(self._buffer)
        if link.framing == "mbap":
            parsed: Parsed = parse_mbap(buffer, request, tid)
        else:
            parsed = parse_rtu(buffer, request)
        del self._buffer[: parsed.used]
        if parsed.stray_units:
            link.note_strays(parsed.stray_units)
        if parsed.broken:
            self.abort("the byte stream is not Modbus TCP")
        elif parsed.reply is not None:
            self._finish(parsed.reply)

    def expect(self, request: Request, tid: int) -> None:
        """Forget whatever arrived before and wait for the answer to this request."""
        self._buffer.clear()
        self._pending = (request, tid)

    def _finish(self, outcome: Reply | int) -> None:
        if self._pending is not None:
            self._pending = None
            self._link.resolve(outcome)

    def forget(self) -> None:
        self._pending = None

    def send(self, frame: bytes) -> None:
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write(frame)

    def abort(self, reason: str) -> None:
        log.warning("link %s: %s; reconnecting", self._link.label, reason)
        if not self.closed.done():
            self.closed.set_result(reason)
        if self.transport is not None:
            self.transport.close()


class Link:
    """A shared connection: one request at a time, reconnects itself, reports up and down."""

    def __init__(
        self,
        endpoint: Endpoint,
        framing: Framing,
        *,
        reconnect_min: float,
        reconnect_max: float,
        connect_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self.framing = framing
        self.label = endpoint.label
        self._reconnect = (reconnect_min, reconnect_max)
        self._connect_timeout = connect_timeout
        self._silence = (
            silent_interval(endpoint.baudrate, endpoint.char_bits)
            if isinstance(endpoint, SerialConfig)
            else 0.0
        )
        self.quiet_at = 0.0  # loop time the line last went quiet (last byte in, or a timeout)
        self.stray_frames = 0
        self.stray_bytes = 0
        self.last_error: str | None = None
        self._protocol: _LinkProtocol | None = None
        self._queue: deque[_Queued] = deque()
        self._current: _Queued | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tid = 0
        self._timeouts_in_row = 0
        self._owed: dict[int, float] = {}  # unit -> loop time its late answer is given up on
        self._listeners: list[LinkListener] = []
        self._logged_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed.done()

    # --- users --------------------------------------------------------------------------------

    def attach(self, listener: LinkListener) -> None:
        """A device starts using the link; the first one opens it."""
        self._listeners.append(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._keep_open(), name=f"link:{self.label}")

    async def detach(self, listener: LinkListener) -> None:
        """A device stops using the link; the last one closes it."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
        if self._listeners or self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait([task])

    # --- connection ---------------------------------------------------------------------------

    async def _open(self) -> _LinkProtocol:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        protocol: asyncio.BaseProtocol
        async with asyncio.timeout(self._connect_timeout):
            if isinstance(endpoint, TcpEndpoint):
                _, protocol = await loop.create_connection(
                    lambda: _LinkProtocol(self), endpoint.host, endpoint.port
                )
            else:
                protocol = await _open_serial(self, endpoint)
        assert isinstance(protocol, _LinkProtocol)
        return protocol

    async def _keep_open(self) -> None:
        backoff = self._reconnect[0]
        try:
            while True:
                try:
                    protocol = await self._open()
                except (OSError, TimeoutError) as exc:
                    self._set_state(None, f"cannot connect to {self.label}: {exc or 'timeout'}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._reconnect[1])
                    continue
                backoff = self._reconnect[0]
                self._timeouts_in_row = 0
                self._set_state(protocol, None)
                reason = await protocol.closed
                self._set_state(None, reason)
        finally:
            protocol_now = self._protocol
            self._protocol = None
            if protocol_now is not None and protocol_now.transport is not None:
                protocol_now.transport.close()
            # Nobody uses the line any more: what was still asked of it fails now, not later.
            if self._current is not None:
                self.resolve(ERR_DISCONNECTED)
            while self._queue:
                _deliver(self._queue.popleft()[2], ERR_DISCONNECTED)

    def _set_state(self, protocol: _LinkProtocol | None, error: str | None) -> None:
        was = self.connected
        if protocol is None and self._protocol is not None and self._protocol.transport:
            self._protocol.transport.close()
        self._protocol = protocol
        if error is not None:
            self.last_error = error
        now = self.connected
        if now != was or (not now and error != self._logged_error):
            if now:
                log.info("link %s open", self.label)
            else:
                # Once per distinct reason: a line that stays down does not flood the log.
                log.warning("link %s down: %s", self.label, error)
        self._logged_error = None if now else error
        for listener in list(self._listeners):
            listener(now, error)

    # --- requests -----------------------------------------------------------------------------

    def request(
        self, request: Request, timeout: float, done: Outcome, guard: Guard | None = None
    ) -> None:
        """Queue one request; ``done`` gets its Reply or an error code, exactly once.

        Requests go out one at a time in the order asked. ``done`` may run before this
        returns (no connection) or later from the loop; an exception it raises is logged and
        does not break the line for the other devices. ``guard`` is asked in the same loop
        step that hands the bytes to the transport.
        """
        self._queue.append((request, timeout, done, guard))
        if self._current is None:
            self._start_next()

    async def transact(
        self, request: Request, timeout: float, guard: Guard | None = None
    ) -> Reply | int:
        """request() for callers that await (probes, writes, tools)."""
        future: asyncio.Future[Reply | int] = asyncio.get_running_loop().create_future()

        def done(outcome: Reply | int) -> None:
            if not future.done():
                future.set_result(outcome)

        self.request(request, timeout, done, guard)
        return await future

    def _start_next(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and self._current is None:
            request, timeout, done, guard = self._queue.popleft()
            protocol = self._protocol
            if protocol is None or protocol.closed.done():
                _deliver(done, ERR_DISCONNECTED)
                continue
            now = loop.time()
            if self._owes_late_answer(request.unit, now):
                # Not sent: a write must not be taken for one that may have landed.
                unsent = ERR_DISCONNECTED if isinstance(request, WriteRequest) else ERR_TIMEOUT
                _deliver(done, unsent)
                continue
            self._current = (request, timeout, done, guard)
            quiet = self.quiet_at + self._silence
            if self._silence and quiet > now:
                self._timer = loop.call_at(quiet, self._send)
            else:
                self._send()

    def _send(self) -> None:
        assert self._current is not None
        request, timeout, _, guard = self._current
        protocol = self._protocol
        if protocol is None or protocol.closed.done():
            self.resolve(ERR_DISCONNECTED)
            return
        if guard is not None and not guard():
            self.resolve(ERR_REFUSED)
            return
        self._tid = self._tid + 1 if self._tid < 0xFFFF else 1
        protocol.expect(request, self._tid)
        protocol.send(encode_request(request, self.framing, self._tid))
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + timeout, self._on_timeout)

    def resolve(self, outcome: Reply | int) -> None:
        """The current request's outcome (from the protocol, a timeout or a lost line)."""
        current, self._current = self._current, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if current is None:
            return
        if not isinstance(outcome, int) or outcome != ERR_TIMEOUT:
            self._timeouts_in_row = 0
        _deliver(current[2], outcome)
        self._start_next()

    def _on_timeout(self) -> None:
        self._timer = None
        protocol = self._protocol
        if self._current is None:
            return
        request, timeout, _, _ = self._current
        self.quiet_at = asyncio.get_running_loop().time()
        if protocol is not None:
            protocol.forget()
            self._note_timeout(protocol, request.unit, timeout)
        self.resolve(ERR_TIMEOUT)

    def _owes_late_answer(self, unit: int, now: float) -> bool:
        """Whether ``unit`` timed out so recently that its late answer may still come.

        RTU frames carry no transaction id: a late answer that arrived during the unit's next
        request would be taken for that request's answer. So a unit that timed out is not
        asked again for one more timeout, or until its late answer has arrived (and been
        dropped); the other units on the line are not held up. An answer later than twice
        the timeout can still be mistaken: give slow devices a longer timeout.
        """
        until = self._owed.get(unit)
        if until is None:
            return False
        if now < until:
            return True
        del self._owed[unit]
        return False

    def note_strays(self, units: tuple[int, ...]) -> None:
        """Frames that answered nobody waiting: late answers; their units owe nothing more."""
        self.stray_frames += len(units)
        for unit in units:
            self._owed.pop(unit, None)

    def _note_timeout(self, protocol: _LinkProtocol, unit: int, timeout: float) -> None:
        if self.framing == "rtu":
            self._owed[unit] = asyncio.get_running_loop().time() + timeout
        self._timeouts_in_row += 1
        # A serial port cannot be half-open; a silent unit on a bus is that unit's problem.
        if (
            isinstance(self.endpoint, TcpEndpoint)
            and self._timeouts_in_row >= TIMEOUTS_BEFORE_RECONNECT
        ):
            protocol.abort(f"no answer to {self._timeouts_in_row} requests in a row")


async def _open_serial(link: Link, serial: SerialConfig) -> asyncio.BaseProtocol:
    """Open a serial port through pymodbus's pyserial transport (exclusive, non-blocking)."""
    from pymodbus.transport.serialtransport import create_serial_connection

    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await create_serial_connection(
            loop,
            lambda: _LinkProtocol(link),
            serial.port,
            baudrate=serial.baudrate,
            bytesize=serial.bytesize,
            parity=serial.parity,
            stopbits=serial.stopbits,
            timeout=0,
        )
    except OSError:
        raise
    except Exception as exc:  # pyserial: ValueError for bad settings, termios.error from the tty
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    # connection_made runs on the next loop step (call_soon); wait for it.
    while protocol.transport is None:  # type: ignore[attr-defined]
        await asyncio.sleep(0)
    return protocol


class LinkPool:
    """Every link of one hub, by line: devices on the same port or host:port get one Link."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, ...], Link] = {}

    def link_for(
        self,
        endpoint: Endpoint,
        framing: Framing,
        *,
        reconnect_min: float,
        reconnect_max: float,
        connect_timeout: float,
    ) -> Link:
        key = link_key(endpoint)
        link = self._links.get(key)
        if link is None or (link.endpoint != endpoint and not link._listeners):
            link = Link(
                endpoint,
                framing,
                reconnect_min=reconnect_min,
                reconnect_max=reconnect_max,
                connect_timeout=connect_timeout,
            )
            self._links[key] = link
        return link

    def links(self) -> list[Link]:
        return list(self._links.values())
