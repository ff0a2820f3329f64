"""The write service's decisions with a fake writer and authority: at most once per uuid."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tandem.api.live import LiveFeed
from tandem.api.view import Status
from tandem.config.hub import TandemConfig
from tandem.hub.modbus.writer import OpResult, WriteOp, WriteOutcome
from tandem.writes.codes import WriteCode
from tandem.writes.requests import ReadBody, WriteBody
from tandem.writes.service import Replication, WriteService
from tandem.writes.store import IntentStore


def config(tmp_path: Path) -> TandemConfig:
    return TandemConfig.model_validate(
        {
            "node": "n1",
            "data_dir": str(tmp_path),
            "devices": [
                {
                    "name": "plc",
                    "host": "127.0.0.1",
                    "groups": [
                        {
                            "name": "g",
                            "tags": [
                                {"name": "w", "address": 50, "access": "write"},
                                {"name": "r", "address": 51},
                            ],
                        }
                    ],
                }
            ],
        }
    )


class FakeWriter:
    def __init__(self, outcome: WriteOutcome = WriteOutcome.DONE) -> None:
        self.outcome = outcome
        self.calls: list[list[WriteOp]] = []
        self.guards: list[bool] = []
        self.gate: asyncio.Event | None = None

    async def write(self, ops: list[WriteOp], guard: Callable[[], bool]) -> list[OpResult]:
        self.calls.append(list(ops))
        if self.gate is not None:
            await self.gate.wait()
        self.guards.append(guard())
        return [OpResult(op, self.outcome) for op in ops]


class FakeAuthority:
    def __init__(self) -> None:
        self.master = True
        self.peer = False
        self.peer_says = Replication.CONFIRMED
        self.sent: list[tuple[str, int, str, WriteCode | None]] = []

    def may_write(self) -> bool:
        return self.master

    def answers_requests(self) -> bool:
        return self.master

    def term(self) -> int:
        return 3

    def highest_term(self) -> int:
        return 3

    def master_hint(self) -> str | None:
        return None if self.master else "http://peer:8080"

    def peer_expected(self) -> bool:
        return self.peer

    async def replicate(
        self, uuid: str, term: int, origin: str, result: WriteCode | None
    ) -> Replication:
        self.sent.append((uuid, term, origin, result))
        return self.peer_says

    async def withdraw(self, uuid: str, term: int, origin: str) -> None:
        self.sent.append((uuid, term, origin, None))


def make(tmp_path: Path, writer: FakeWriter) -> tuple[WriteService, FakeAuthority]:
    cfg = config(tmp_path)
    live = LiveFeed(lambda: Status(node="n1", role="SINGLE"))
    service = WriteService(lambda: cfg, lambda name: writer, live, tmp_path / "w.sqlite3")
    authority = FakeAuthority()
    service.authority = authority
    return service, authority


def req(uuid: str, **extra: Any) -> WriteBody:
    fields: dict[str, Any] = {"uuid": uuid, "node": "plc", "group": "g", "tag": "w", "value": 5}
    fields.update(extra)
    return WriteBody.model_validate(fields)


async def test_write_service_retried_uuid_gets_recorded_answer_without_writing(
    tmp_path: Path,
) -> None:
    writer = FakeWriter()
    service, _ = make(tmp_path, writer)
    assert (await service.submit(req("a"))).code is WriteCode.OK
    assert (await service.submit(req("a", value=6))).code is WriteCode.OK
    assert len(writer.calls) == 1


async def test_write_service_intent_without_result_is_outcome_unknown_never_executed(
    tmp_path: Path,
) -> None:
    writer = FakeWriter()
    service, _ = make(tmp_path, writer)
    # What the old master streamed before it died: the intent, no result.
    assert service.merge_remote("b", 3, "other", None) is False  # we are master: refused
    service.store.merge("b", 2, "other", None)
    answer = await service.submit(req("b"))
    assert answer.code is WriteCode.OUTCOME_UNKNOWN
    assert writer.calls == []
    assert (await service.submit(req("b"))).code is WriteCode.OUTCOME_UNKNOWN


async def test_write_service_backup_neither_writes_nor_records(tmp_path: Path) -> None:
    writer = FakeWriter()
    service, authority = make(tmp_path, writer)
    authority.master = False
    answer = await service.submit(req("c"))
    assert answer.code is WriteCode.NOT_MASTER and answer.master == "http://peer:8080"
    assert service.store.get("c") is None and writer.calls == []
    # As a backup it keeps the master's intents and results.
    assert service.merge_remote("c", 3, "other", None)
    assert service.merge_remote("c", 3, "other", WriteCode.OK)
    assert service.store.get("c").result is WriteCode.OK  # type: ignore[union-attr]
    assert service.merge_remote("d", 2, "stale", None) is False  # a lower term than ours


async def test_write_service_peer_must_confirm_intent_before_the_write(tmp_path: Path) -> None:
    writer = FakeWriter()
    service, authority = make(tmp_path, writer)
    authority.peer = True
    assert (await service.submit(req("e"))).code is WriteCode.OK
    await asyncio.sleep(0)
    assert [s[3] for s in authority.sent] == [None, WriteCode.OK]  # intent, then result
    authority.peer_says = Replication.UNREACHABLE
    assert (await service.submit(req("f"))).code is WriteCode.NOT_REPLICATED
    authority.peer_says = Replication.REJECTED
    assert (await service.submit(req("g"))).code is WriteCode.NOT_MASTER
    assert len(writer.calls) == 1
    # Nothing was sent for f: once the peer confirms, a retry of the same uuid runs.
    authority.peer_says = Replication.CONFIRMED
    assert (await service.submit(req("f"))).code is WriteCode.OK
    assert len(writer.calls) == 2


async def test_write_service_concurrent_retry_waits_for_the_running_write(tmp_path: Path) -> None:
    writer = FakeWriter()
    writer.gate = asyncio.Event()
    service, _ = make(tmp_path, writer)
    first = asyncio.create_task(service.submit(req("h")))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(service.submit(req("h")))
    await asyncio.sleep(0.01)
    writer.gate.set()
    assert (await first).code is WriteCode.OK and (await second).code is WriteCode.OK
    assert len(writer.calls) == 1


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (WriteOutcome.NOT_SENT, WriteCode.DEVICE_DOWN),
        (WriteOutcome.REJECTED, WriteCode.WRITE_FAILURE),
        (WriteOutcome.UNKNOWN, WriteCode.OUTCOME_UNKNOWN),
    ],
)
async def test_write_service_outcomes_map_to_codes_and_are_recorded(
    tmp_path: Path, outcome: WriteOutcome, code: WriteCode
) -> None:
    service, _ = make(tmp_path, FakeWriter(outcome))
    assert (await service.submit(req("i"))).code is code
    assert service.store.get("i").result is code  # type: ignore[union-attr]


async def test_write_service_read_only_and_unknown_tags_are_refused_unrecorded(
    tmp_path: Path,
) -> None:
    writer = FakeWriter()
    service, _ = make(tmp_path, writer)
    assert (await service.submit(req("j", tag="r"))).code is WriteCode.TAG_NOT_WRITABLE
    assert (await service.submit(req("k", tag="zz"))).code is WriteCode.TAG_NOT_EXIST
    assert (await service.submit(req("l", value="x"))).code is WriteCode.TYPE_MISMATCH
    assert (await service.submit(req("m", value=-1))).code is WriteCode.OUT_OF_RANGE
    assert writer.calls == [] and service.store.get("j") is None


def test_intent_store_survives_reopen_and_keeps_first_result(tmp_path: Path) -> None:
    store = IntentStore(tmp_path / "i.sqlite3")
    assert store.begin("u", 1, "a") and not store.begin("u", 2, "b")
    store.finish("u", WriteCode.OK)
    store.finish("u", WriteCode.OUTCOME_UNKNOWN)
    store.close()
    again = IntentStore(tmp_path / "i.sqlite3")
    intent = again.get("u")
    assert intent is not None and intent.term == 1 and intent.result is WriteCode.OK


async def test_write_service_fenced_before_sending_forgets_the_intent(tmp_path: Path) -> None:
    writer = FakeWriter(WriteOutcome.REFUSED)
    service, _ = make(tmp_path, writer)
    assert (await service.submit(req("n"))).code is WriteCode.NOT_MASTER
    assert service.store.get("n") is None  # not final: the master we lost to may run it
    writer.outcome = WriteOutcome.DONE
    assert (await service.submit(req("n"))).code is WriteCode.OK


def test_write_service_read_before_first_poll_is_tag_not_ready(tmp_path: Path) -> None:
    service, _ = make(tmp_path, FakeWriter())
    answer = service.read(ReadBody(uuid="r", node="plc", group="g"))
    assert answer["tags"] == [{"name": "w", "error": 3011}, {"name": "r", "error": 3011}]
    assert service.read(ReadBody(uuid="r", node="plc", group="x"))["error"] == 2106


async def test_write_service_unwritable_intent_store_refuses_before_sending(
    tmp_path: Path,
) -> None:
    writer = FakeWriter()
    cfg = config(tmp_path)
    live = LiveFeed(lambda: Status(node="n1", role="SINGLE"))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the data dir should be")
    service = WriteService(lambda: cfg, lambda name: writer, live, blocked / "w.sqlite3")
    answer = await service.submit(req("o"))
    assert answer.code is WriteCode.STORE_UNAVAILABLE and writer.calls == []
    # The disk comes back: the store opens on the next request.
    blocked.unlink()
    blocked.mkdir()
    assert (await service.submit(req("o"))).code is WriteCode.OK
    assert len(writer.calls) == 1


def test_summarize_batch_failing_after_a_write_is_outcome_unknown() -> None:
    from tandem.config.hub import TagConfig
    from tandem.hub.modbus.writer import WriteItem, plan_writes
    from tandem.writes.service import summarize

    a = TagConfig(name="a", address=50, access="write")
    b = TagConfig(name="b", address=60, access="write")
    ops = plan_writes(1, [WriteItem(a, (1,)), WriteItem(b, (2,))])
    partial = [OpResult(ops[0], WriteOutcome.DONE), OpResult(ops[1], WriteOutcome.NOT_SENT)]
    code, per_tag, _ = summarize(partial)
    assert code is WriteCode.OUTCOME_UNKNOWN
    assert per_tag == {"a": WriteCode.OK, "b": WriteCode.DEVICE_DOWN}
    none = [OpResult(ops[0], WriteOutcome.REJECTED), OpResult(ops[1], WriteOutcome.SKIPPED)]
    assert summarize(none)[0] is WriteCode.WRITE_FAILURE
