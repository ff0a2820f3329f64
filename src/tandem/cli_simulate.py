"""`tandem simulate-plc`: its options, and their errors as exit codes.

Apart from cli.py because this command is a test and demo tool with many options of its own;
the simulators in tandem.sim know nothing of typer or exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tandem.logs import setup_logging
from tandem.signals import interrupt_on_sigint

EXIT_RUNTIME = 1
EXIT_CONFIG = 2

Port = Annotated[int, typer.Option(help="TCP port to listen on (0: any free port)")]
Host = Annotated[str, typer.Option(help="address to listen on")]
LoadRegisters = Annotated[
    int, typer.Option(help="extra holding registers from address 100, for load tests")
]
Ports = Annotated[int, typer.Option(min=1, help="serve this many TCP ports (PORT, PORT+1, ...)")]
Units = Annotated[
    str, typer.Option(help="unit ids to answer, e.g. 1-3,7 (others stay silent); default all")
]
Slow = Annotated[
    list[str] | None,
    typer.Option(help="UNIT:MS: that unit answers MS milliseconds late (repeatable)"),
]
Rtu = Annotated[
    str | None, typer.Option(help="serve Modbus RTU on this serial device (e.g. a socat PTY)")
]
RtuOverTcp = Annotated[
    bool, typer.Option("--rtu-over-tcp", help="RTU framing on the TCP port(s): a gateway")
]
Preset = Annotated[
    Path | None,
    typer.Option(help='JSON of known contents, e.g. {"holding": {"40": [258, 772]}}'),
]
WriteLog = Annotated[
    Path | None,
    typer.Option(help="append every write received to this file, one JSON line each"),
]
OpcUa = Annotated[
    int | None,
    typer.Option("--opcua", min=0, help="serve OPC UA on this port instead of Modbus"),
]
Bad = Annotated[
    list[str] | None,
    typer.Option(help="--opcua: NAME=STATUS pins a bad status, e.g. Sine=BadSensorFailure"),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def unit_list(text: str) -> list[int]:
    """``1,2,5-7`` as [1, 2, 5, 6, 7]; raises BadParameter on anything else."""
    units: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            units += range(int(low), int(high or low) + 1)
    except ValueError:
        raise typer.BadParameter(f"not a unit list: {text!r} (e.g. 1,2,5-7)") from None
    if not all(1 <= u <= 247 for u in units):
        raise typer.BadParameter("unit ids are 1..247")
    return units


def slow_units(specs: list[str]) -> dict[int, float]:
    """``UNIT:MS`` pairs as {unit: seconds}."""
    slow: dict[int, float] = {}
    for spec in specs:
        unit, sep, ms = spec.partition(":")
        try:
            if not sep:
                raise ValueError
            slow[int(unit)] = float(ms) / 1000.0
        except ValueError:
            raise typer.BadParameter(f"--slow takes UNIT:MS, e.g. 2:1500, not {spec!r}") from None
    return slow


def simulate_plc(
    port: Port = 5020,
    host: Host = "127.0.0.1",
    load_registers: LoadRegisters = 1000,
    ports: Ports = 1,
    units: Units = "",
    slow: Slow = None,
    rtu: Rtu = None,
    rtu_over_tcp: RtuOverTcp = False,
    preset: Preset = None,
    write_log: WriteLog = None,
    opcua: OpcUa = None,
    bad: Bad = None,
    verbose: Verbose = False,
) -> None:
    """Run a PLC simulator: Modbus TCP, RTU on a serial device, RTU over TCP, or OPC UA."""
    from tandem.sim.plc import load_preset
    from tandem.sim.plc import main as sim_main

    setup_logging("text", verbose)
    interrupt_on_sigint()  # Ctrl-C stops it, even started as a background job
    if opcua is not None:
        _simulate_opcua(host, opcua, bad or [])
        return
    where = rtu if rtu is not None else f"{host}:{port}"
    contents = None
    if preset is not None:
        try:
            contents = load_preset(preset.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"{preset}: {exc}", EXIT_CONFIG) from None
    try:
        sim_main(
            host,
            port,
            load_registers,
            ports=ports,
            units=unit_list(units),
            slow=slow_units(slow or []),
            framing="rtu" if rtu_over_tcp else "mbap",
            rtu_device=rtu,
            preset=contents,
            write_log=str(write_log) if write_log is not None else None,
        )
    except ValueError as exc:  # a preset that overlaps the time-driven map
        raise _fail(f"tandem simulate-plc: {exc}", EXIT_CONFIG) from None
    except (OSError, RuntimeError) as exc:  # pymodbus reports a busy port as RuntimeError
        raise _fail(f"tandem simulate-plc: cannot listen on {where}: {exc}", EXIT_RUNTIME) from None


def _simulate_opcua(host: str, port: int, bad: list[str]) -> None:
    from tandem.sim.opcua import main as opcua_main

    try:
        opcua_main(host, port, bad)
    except ValueError as exc:
        raise _fail(f"tandem simulate-plc: {exc}", EXIT_CONFIG) from None
    except OSError as exc:
        message = f"tandem simulate-plc: cannot listen on {host}:{port}: {exc}"
        raise _fail(message, EXIT_RUNTIME) from None


__all__ = ["simulate_plc", "slow_units", "unit_list"]
