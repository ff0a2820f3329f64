"""The write path: resolve, check, record the intent, execute once, record and share the result.

Both REST and MQTT requests go through ``WriteService.submit``. Who may write is asked of an
``Authority``: a single node always may; in a pair only the master holding the highest term
(ha/hubside.py), and the same question is asked again by the link right before each request's
bytes go out (the guard), so a master fenced while its write waited for the line sends nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tandem.api.live import LiveFeed, json_safe
from tandem.config.hub import GroupConfig, ModbusDevice, TagConfig, TandemConfig
from tandem.hub.codec import ValueProblem, WriteValueError, encode_write
from tandem.hub.modbus.writer import OpResult, WriteItem, WriteOp, WriteOutcome, plan_writes
from tandem.writes.codes import WriteCode
from tandem.writes.requests import ReadBody, WriteBody
from tandem.writes.store import IntentStore, IntentStoreError

log = logging.getLogger(__name__)


class Replication(enum.Enum):
    """The peer's word on an intent or result streamed to it."""

    CONFIRMED = "confirmed"  # stored durably on the peer
    REJECTED = "rejected"  # the peer holds a higher term (or is master itself): we are stale
    UNREACHABLE = "unreachable"


class Authority(Protocol):
    """Who may write, under which term, and how intents reach the peer."""

    def may_write(self) -> bool: ...

    def answers_requests(self) -> bool: ...

    def term(self) -> int: ...

    def highest_term(self) -> int: ...

    def master_hint(self) -> str | None: ...

    def peer_expected(self) -> bool: ...

    async def replicate(
        self, uuid: str, term: int, origin: str, result: WriteCode | None
    ) -> Replication: ...

    async def withdraw(self, uuid: str, term: int, origin: str) -> None: ...


class SingleNode:
    """A node without a pair: always the one that writes; nobody to tell."""

    def may_write(self) -> bool:
        return True

    def answers_requests(self) -> bool:
        return True

    def term(self) -> int:
        return 0

    def highest_term(self) -> int:
        return 0

    def master_hint(self) -> str | None:
        return None

    def peer_expected(self) -> bool:
        return False

    async def replicate(
        self, uuid: str, term: int, origin: str, result: WriteCode | None
    ) -> Replication:
        return Replication.CONFIRMED

    async def withdraw(self, uuid: str, term: int, origin: str) -> None:
        return None


class Writer(Protocol):
    """What the service needs of a device's poller (DevicePoller)."""

    async def write(self, ops: Any, guard: Callable[[], bool]) -> list[OpResult]: ...


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    uuid: str
    code: WriteCode
    message: str = ""
    tags: dict[str, WriteCode] = field(default_factory=dict)
    master: str | None = None  # where to write instead, when not master

    def neuron(self) -> dict[str, Any]:
        """The MQTT response, Neuron's shape."""
        return {"uuid": self.uuid, "error": int(self.code)}

    def rest(self) -> dict[str, Any]:
        body: dict[str, Any] = {"uuid": self.uuid, "error": int(self.code)}
        if self.message:
            body["message"] = self.message
        if self.tags:
            body["tags"] = [{"name": n, "error": int(c)} for n, c in self.tags.items()]
        if self.master is not None:
            body["master"] = self.master
        return body


_OUTCOME_CODE: dict[WriteOutcome, WriteCode] = {
    WriteOutcome.DONE: WriteCode.OK,
    WriteOutcome.NOT_SENT: WriteCode.DEVICE_DOWN,
    WriteOutcome.REFUSED: WriteCode.OUTCOME_UNKNOWN,  # after others were written: partial
    WriteOutcome.REJECTED: WriteCode.WRITE_FAILURE,
    WriteOutcome.UNKNOWN: WriteCode.OUTCOME_UNKNOWN,
    WriteOutcome.SKIPPED: WriteCode.WRITE_FAILURE,
}
_PROBLEM_CODE = {
    ValueProblem.TYPE: WriteCode.TYPE_MISMATCH,
    ValueProblem.RANGE: WriteCode.OUT_OF_RANGE,
}
WRITABLE = frozenset({"write", "read_write"})


def summarize(results: list[OpResult]) -> tuple[WriteCode, dict[str, WriteCode], str]:
    """One code for the request, one per tag, and why in words.

    The request's code is its first failure's, except that a batch failing after some of its
    requests were written answers outcome unknown: any other failure means nothing written.
    """
    per_tag: dict[str, WriteCode] = {}
    first: OpResult | None = None
    for result in results:
        code = _OUTCOME_CODE[result.outcome]
        for name in result.op.tags:
            per_tag[name] = code
        if first is None and result.outcome is not WriteOutcome.DONE:
            first = result
    if first is None:
        return WriteCode.OK, per_tag, ""
    where = f"{first.op.request.function} at {first.op.request.start}"
    message = f"FC {where}: {first.outcome.value} (code {first.code})"
    if results[0].outcome is WriteOutcome.DONE:
        return WriteCode.OUTCOME_UNKNOWN, per_tag, f"partly written; {message}"
    return _OUTCOME_CODE[first.outcome], per_tag, message


@dataclass(slots=True)
class WriteCounters:
    """For /metrics: requests by how they ended, and MQTT drops by reason."""

    answered: dict[int, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)

    def answer(self, code: WriteCode) -> None:
        self.answered[int(code)] = self.answered.get(int(code), 0) + 1

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


class WriteService:
    """Executes write requests at most once per uuid, and answers read requests."""

    def __init__(
        self,
        config: Callable[[], TandemConfig],
        writer_of: Callable[[str], Writer | None],
        live: LiveFeed,
        store_path: Path,
    ) -> None:
        self._config = config
        self._writer_of = writer_of
        self._live = live
        self.store = IntentStore(store_path)
        self.authority: Authority = SingleNode()
        self.counters = WriteCounters()
        self._inflight: dict[str, asyncio.Future[WriteAnswer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- writes -------------------------------------------------------------------------------

    async def submit(self, body: WriteBody) -> WriteAnswer:
        try:
            answer = await self._submit(body)
        except IntentStoreError as exc:
            # Only reads and the intent's commit get here, before anything is sent.
            log.error("write %s: %s", body.uuid, exc)
            answer = WriteAnswer(body.uuid, WriteCode.STORE_UNAVAILABLE, str(exc))
        self.counters.answer(answer.code)
        if answer.code not in (WriteCode.OK, WriteCode.NOT_MASTER):
            log.info("write %s: %s %s", body.uuid, answer.code.name, answer.message)
        return answer

    async def _submit(self, body: WriteBody) -> WriteAnswer:
        uuid = body.uuid
        running = self._inflight.get(uuid)
        if running is not None:
            return await asyncio.shield(running)  # a retry of what we are doing: its answer
        known = self.store.get(uuid)
        if known is not None and known.result is not None:
            return WriteAnswer(uuid, known.result, "answered before")
        authority = self.authority
        if not authority.may_write():
            return WriteAnswer(
                uuid, WriteCode.NOT_MASTER, "not master", master=authority.master_hint()
            )
        if known is not None:
            # Started by us before a restart, or by the master we took over from: it may have
            # been written. It is never sent again.
            self._finish(uuid, known.term, known.origin, WriteCode.OUTCOME_UNKNOWN)
            return WriteAnswer(uuid, WriteCode.OUTCOME_UNKNOWN, "started before, result unknown")
        planned = self._plan(body)
        if isinstance(planned, WriteAnswer):
            return planned
        writer, ops = planned
        future: asyncio.Future[WriteAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[uuid] = future
        try:
            answer = await self._execute(uuid, writer, ops)
        except BaseException:
            future.cancel()
            raise
        finally:
            self._inflight.pop(uuid, None)
        future.set_result(answer)
        return answer

    def _plan(self, body: WriteBody) -> tuple[Writer, list[WriteOp]] | WriteAnswer:
        """The requests for ``body``, or the answer why there are none; every tag is checked
        before anything is sent."""
        uuid = body.uuid
        device = next((d for d in self._config().devices if d.name == body.node), None)
        if device is None:
            return WriteAnswer(uuid, WriteCode.NODE_NOT_EXIST, f"no device {body.node!r}")
        group = next((g for g in device.groups if g.name == body.group), None)
        if group is None:
            return WriteAnswer(uuid, WriteCode.GROUP_NOT_EXIST, f"no group {body.group!r}")
        if not isinstance(device, ModbusDevice) or not isinstance(group, GroupConfig):
            return WriteAnswer(uuid, WriteCode.TAG_NOT_WRITABLE, f"{device.protocol}: no writes")
        tags: dict[str, TagConfig] = {t.name: t for t in group.tags}
        items: list[WriteItem] = []
        for request in body.items():
            tag = tags.get(request.tag)
            if tag is None:
                return WriteAnswer(uuid, WriteCode.TAG_NOT_EXIST, f"no tag {request.tag!r}")
            if tag.access not in WRITABLE:
                return WriteAnswer(uuid, WriteCode.TAG_NOT_WRITABLE, f"{tag.name} is read-only")
            try:
                items.append(WriteItem(tag, encode_write(tag, request.value)))
            except WriteValueError as exc:
                return WriteAnswer(uuid, _PROBLEM_CODE[exc.problem], str(exc))
        writer = self._writer_of(device.name)
        if writer is None:
            return WriteAnswer(uuid, WriteCode.DEVICE_DOWN, f"{device.name} is not polled here")
        return writer, plan_writes(device.unit, items)

    async def _execute(self, uuid: str, writer: Writer, ops: list[WriteOp]) -> WriteAnswer:
        authority = self.authority
        term = authority.term()
        origin = self._config().node
        if not self.store.begin(uuid, term, origin):
            return WriteAnswer(uuid, WriteCode.OUTCOME_UNKNOWN, "started concurrently")
        if authority.peer_expected():
            said = await authority.replicate(uuid, term, origin, None)
            if said is not Replication.CONFIRMED:
                code = (
                    WriteCode.NOT_MASTER
                    if said is Replication.REJECTED
                    else WriteCode.NOT_REPLICATED
                )
                self._withdraw(uuid, term, origin, tell_peer=said is Replication.UNREACHABLE)
                return WriteAnswer(uuid, code, f"peer: {said.value}; nothing sent")
        results = await writer.write(ops, authority.may_write)
        if results and results[0].outcome is WriteOutcome.REFUSED:
            # Fenced before the first byte: nothing was sent, the master we lost to may run it.
            self._withdraw(uuid, term, origin, tell_peer=True)
            return WriteAnswer(uuid, WriteCode.NOT_MASTER, "lost the right to write; not sent")
        code, per_tag, message = summarize(results)
        self._finish(uuid, term, origin, code)
        return WriteAnswer(uuid, code, message, per_tag if len(per_tag) > 1 else {})

    def _withdraw(self, uuid: str, term: int, origin: str, *, tell_peer: bool) -> None:
        """Nothing was sent: forget the intent here (and on the peer), so a retry may run."""
        try:
            self.store.forget(uuid)
        except IntentStoreError as exc:  # kept without a result: a retry answers 4003
            log.error("write %s: %s", uuid, exc)
        if tell_peer:
            self._spawn(self.authority.withdraw(uuid, term, origin))

    def _finish(self, uuid: str, term: int, origin: str, code: WriteCode) -> None:
        """Record the result here and stream it to the peer (in the background)."""
        try:
            self.store.finish(uuid, code)
        except IntentStoreError as exc:  # the intent is kept: a retry answers 4003, never runs
            log.error("write %s: result %s not recorded: %s", uuid, int(code), exc)
        if self.authority.peer_expected():
            self._spawn(self.authority.replicate(uuid, term, origin, code))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def writable_keys(self) -> list[str]:
        return [
            f"{d.name}/{g.name}/{t.name}"
            for d in self._config().devices
            if isinstance(d, ModbusDevice)
            for g in d.groups
            for t in g.tags
            if isinstance(t, TagConfig) and t.access in WRITABLE
        ]

    # --- the peer's intents -------------------------------------------------------------------

    def merge_remote(
        self,
        uuid: str,
        term: int,
        origin: str,
        result: WriteCode | None,
        withdrawn: bool = False,
    ) -> bool:
        """An intent (or result, or a withdrawal) the master streamed; False rejects a stale
        master's intent."""
        if withdrawn:
            self.store.forget(uuid)
            return True
        if result is None and self.authority.may_write():
            return False  # we are the master: whoever sends this was fenced by our term
        if result is None and term < self.authority.highest_term():
            return False
        self.store.merge(uuid, term, origin, result)
        return True

    # --- reads --------------------------------------------------------------------------------

    def read(self, body: ReadBody) -> dict[str, Any]:
        """Neuron's read response: the group's latest values (or each tag's error)."""
        device = next((d for d in self._config().devices if d.name == body.node), None)
        if device is None:
            return {"uuid": body.uuid, "error": int(WriteCode.NODE_NOT_EXIST)}
        group = next((g for g in device.groups if g.name == body.group), None)
        if group is None:
            return {"uuid": body.uuid, "error": int(WriteCode.GROUP_NOT_EXIST)}
        sample = self._live.latest(body.node, body.group)
        tags: list[dict[str, Any]] = []
        for tag in group.tags:
            if sample is None:
                tags.append({"name": tag.name, "error": int(WriteCode.TAG_NOT_READY)})
            elif tag.name in sample.errors:
                tags.append({"name": tag.name, "error": sample.errors[tag.name]})
            else:
                tags.append({"name": tag.name, "value": json_safe(sample.values.get(tag.name))})
        return {"uuid": body.uuid, "node": body.node, "group": body.group, "tags": tags}

    def close(self) -> None:
        self.store.close()
