"""The hub -> warden fact queue and channel: order kept, data merged, few writes."""

from __future__ import annotations

import asyncio
import socket

from tandem.ha.channel import Channel
from tandem.ha.facts import FactQueue
from tandem.ha.messages import CODEC
from tandem.ha.types import Acked, BarrierDone, Fact, Polled

KEY = "plc1/fast"


async def test_fact_queue_data_waits_and_merges_control_flushes_everything_in_order() -> None:
    sent: list[Fact] = []
    queue = FactQueue(sent.append, data_delay=0.05)
    queue.add(Acked({KEY: 5}))
    queue.add(Acked({KEY: 7}))
    await asyncio.sleep(0.01)
    assert sent == []  # data waits for more to merge with
    queue.add(Polled({KEY: (8, 8)}))
    queue.add(BarrierDone(3, True))  # control: out at the end of this loop step, after the data
    await asyncio.sleep(0)
    assert sent == [Acked({KEY: 7}), Polled({KEY: (8, 8)}), BarrierDone(3, True)]
    queue.add(Polled({KEY: (9, 9)}))
    await asyncio.sleep(0.08)
    assert sent[-1] == Polled({KEY: (9, 9)}) and len(sent) == 4


async def test_channel_one_loop_step_one_write_messages_arrive_in_order() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a = await Channel.open(ours, CODEC)
    b = await Channel.open(theirs, CODEC)
    writes = 0
    transport_write = a._writer.write

    def counting(data: bytes) -> None:
        nonlocal writes
        writes += 1
        transport_write(data)

    a._writer.write = counting  # type: ignore[method-assign]
    for slot in range(5):
        a.send(Acked({KEY: slot}))
    await asyncio.sleep(0)
    got = [await b.receive() for _ in range(5)]
    assert got == [Acked({KEY: s}) for s in range(5)] and writes == 1
    a.send(BarrierDone(1, False))
    a.close()  # what is queued leaves before the close
    assert await b.receive() == BarrierDone(1, False)
    assert await b.receive() is None
    b.close()
