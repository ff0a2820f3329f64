"""The local channel between the warden (VRRP + HA core) and the hub process.

Typed messages, length-prefixed JSON frames on a Unix socket pair. Every message is one of the
frozen dataclasses of `ha/types.py` (or a record of `ha/records.py`), encoded with its class
name and decoded back by its type hints, strictly: a frame that does not decode into the
expected shape is a `ChannelError`, never a half-built value. Small and ordered: facts a
process sends before a barrier result arrive before it, which the barrier rule relies on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from tandem.errors import TandemError

MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ChannelError(TandemError):
    """A frame that is not one of the channel's messages (a bug, or a version mismatch)."""


class Codec:
    """Encodes and decodes the dataclasses it was built with."""

    def __init__(self, classes: Iterable[type]) -> None:
        self._by_name: dict[str, type] = {}
        for cls in classes:
            self._register(cls)

    def _register(self, cls: type) -> None:
        if cls.__name__ in self._by_name:
            return
        self._by_name[cls.__name__] = cls

    # ---- encoding ----

    def encode(self, message: object) -> bytes:
        if type(message).__name__ not in self._by_name:
            raise ChannelError(f"not a channel message: {type(message).__name__}")
        body = orjson.dumps({"t": type(message).__name__, "v": _plain(message)})
        return _HEADER.pack(len(body)) + body

    # ---- decoding ----

    def decode(self, body: bytes) -> object:
        try:
            doc = orjson.loads(body)
            cls = self._by_name[doc["t"]]
            return _build(cls, doc["v"])
        except ChannelError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ChannelError(f"undecodable frame: {exc!r}") from exc


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@typing.no_type_check
def _hints(cls: type) -> dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        module = __import__(cls.__module__, fromlist=["*"])
        cached = typing.get_type_hints(cls, vars(module))
        _HINTS[cls] = cached
    return cached


_HINTS: dict[type, dict[str, Any]] = {}


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ChannelError(f"{cls.__name__}: expected an object")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ChannelError(f"{cls.__name__}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ChannelError:
                continue
        raise ChannelError(f"{where}: {value!r} matches none of {options}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise ChannelError(f"{where}: {value!r} not in {typing.get_args(hint)}")
    if origin is dict:
        key_t, val_t = typing.get_args(hint) or (str, Any)
        if not isinstance(value, dict):
            raise ChannelError(f"{where}: expected an object")
        return {
            _convert(key_t, k, where): _convert(val_t, v, f"{where}[{k}]") for k, v in value.items()
        }
    if origin is tuple:
        return _convert_tuple(hint, value, where)
    if origin is list:
        (item_t,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise ChannelError(f"{where}: expected a list")
        return [_convert(item_t, v, where) for v in value]
    return _convert_plain(hint, value, where)


def _convert_tuple(hint: Any, value: Any, where: str) -> tuple[Any, ...]:
    args = typing.get_args(hint)
    if not isinstance(value, list):
        raise ChannelError(f"{where}: expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, where) for v in value)
    if len(args) != len(value):
        raise ChannelError(f"{where}: expected {len(args)} items")
    return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))


def _convert_plain(hint: Any, value: Any, where: str) -> Any:
    if hint is Any or hint is object:
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError as exc:
            raise ChannelError(f"{where}: {exc}") from exc
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ChannelError(f"{where}: {value!r} is not {getattr(hint, '__name__', hint)}")


class Channel:
    """One end of the socket pair: `send()` queues in order, `messages()` yields decoded ones.

    What is sent in one loop step leaves in one write: each write wakes the other process
    (the warden runs at real-time priority, so it preempts the hub at once), and a write per
    message was most of the channel's cost.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, codec: Codec
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._codec = codec
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self.sent = 0
        self.received = 0

    @classmethod
    async def open(cls, sock: Any, codec: Codec) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        return cls(reader, writer, codec)

    def send(self, message: object) -> None:
        """Queue one message; never blocks (the kernel buffer and asyncio's take it)."""
        if self._writer.is_closing():
            return
        self._pending.append(self._codec.encode(message))
        self.sent += 1
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what send() queued, at once (the end of the loop step does it otherwise)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending and not self._writer.is_closing():
            self._writer.write(b"".join(self._pending))
        self._pending.clear()

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()

    async def receive(self) -> object | None:
        """The next message, or None when the other side closed the channel."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ChannelError(f"frame of {length} bytes is over the limit")
        try:
            body = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.received += 1
        return self._codec.decode(body)

    async def pump(self, handle: Callable[[object], None]) -> None:
        """Hand every message to `handle`, in order, until the other side closes."""
        while True:
            message = await self.receive()
            if message is None:
                return
            handle(message)

    def close(self) -> None:
        self.flush()
        if not self._writer.is_closing():
            self._writer.close()


__all__ = ["Channel", "ChannelError", "Codec", "MAX_FRAME"]
