"""A preset served by the real simulator reads back as given, over Modbus TCP."""

from __future__ import annotations

import asyncio
import contextlib

from pymodbus.client import AsyncModbusTcpClient

from tandem.sim.plc import Preset, serve


async def test_serve_preset_reads_back_in_every_table() -> None:
    preset: Preset = {
        "holding": {40: [0x4142, 7], 150: [3, 4]},
        "input": {20: [9, 8]},
        "coil": {8: [1, 0, 1], 40: [1, 1]},
        "discrete": {17: [1, 0, 1]},
    }
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve("127.0.0.1", 0, load_registers=0, preset=preset, on_ready=ready.set_result)
    )
    try:
        port = await asyncio.wait_for(ready, 10)
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        try:
            assert (await client.read_holding_registers(40, count=2)).registers == [0x4142, 7]
            assert (await client.read_input_registers(20, count=2)).registers == [9, 8]
            assert (await client.read_coils(8, count=3)).bits[:3] == [True, False, True]
            assert (await client.read_coils(40, count=2)).bits[:2] == [True, True]
            assert (await client.read_holding_registers(150, count=2)).registers == [3, 4]
            assert (await client.read_discrete_inputs(16, count=4)).bits[:4] == [
                False, True, False, True,
            ]  # fmt: skip
        finally:
            client.close()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
