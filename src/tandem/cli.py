"""The `tandem` command line: thin wrappers that parse arguments and call into the package.

Exit codes: 0 success; 1 runtime failure (e.g. a node that cannot be reached); 2 bad usage or
a config that does not validate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from tandem.errors import ConfigError
from tandem.logs import setup_logging

app = typer.Typer(
    name="tandem",
    help="High-availability industrial edge data hub (Modbus TCP -> MQTT) with a "
    "keepalived-compatible VRRP failover engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate and convert configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2

LogFormat = Annotated[str, typer.Option("--log-format", help="text or json")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


@app.command()
def keepalived(
    config_file: Annotated[
        Path, typer.Option("-f", "--use-file", help="keepalived.conf to run")
    ] = Path("/etc/keepalived/keepalived.conf"),
    test: Annotated[
        bool, typer.Option("-t", "--config-test", help="check the config and exit")
    ] = False,
    udp: Annotated[
        bool, typer.Option("--udp", help="carry adverts over UDP instead of IP protocol 112")
    ] = False,
    udp_port: Annotated[int, typer.Option(help="UDP port with --udp")] = 5112,
    no_vips: Annotated[
        bool, typer.Option("--no-vips", help="do not add or remove virtual addresses")
    ] = False,
    stats_file: Annotated[
        Path, typer.Option("--stats-file", help="where SIGUSR1 writes the JSON snapshot")
    ] = Path("/tmp/tandem-keepalived.json"),
    log_format: LogFormat = "text",
    verbose: Verbose = False,
) -> None:
    """Run the failover engine from keepalived's own config file (drop-in mode)."""
    from tandem.config.keepalived import check_file, parse_file

    if test:
        problems = check_file(config_file)
        for p in problems:
            typer.echo(str(p), err=True)
        if problems:
            raise typer.Exit(EXIT_CONFIG)
        typer.echo(f"{config_file}: configuration OK")
        return
    setup_logging(log_format, verbose)
    try:
        cfg = parse_file(config_file)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    from tandem.engine import EngineOptions, run_engine

    options = EngineOptions(
        transport="udp" if udp else "raw",
        udp_port=udp_port,
        manage_vips=not no_vips,
        stats_file=stats_file,
    )
    try:
        code = asyncio.run(run_engine(cfg, options))
    except OSError as exc:
        raise _fail(f"tandem keepalived: {exc}", EXIT_RUNTIME) from None
    raise typer.Exit(code)


@app.command("simulate-plc")
def simulate_plc(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 5020,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    load_registers: Annotated[
        int, typer.Option(help="extra holding registers from address 100, for load tests")
    ] = 1000,
    verbose: Verbose = False,
) -> None:
    """Run a Modbus TCP PLC simulator (counter, sine, ramp, coils, load registers)."""
    from tandem.sim.plc import main as sim_main

    setup_logging("text", verbose)
    sim_main(host, port, load_registers)


@config_app.command("validate")
def config_validate(
    config_file: Annotated[Path, typer.Argument(help="a Tandem YAML config")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Check a Tandem config; print every problem as file:line: field: message."""
    from tandem.config.hub import load_config

    try:
        load_config(config_file)
    except ConfigError as exc:
        if as_json:
            problems = [dataclasses.asdict(p) for p in exc.problems]
            typer.echo(json.dumps({"ok": False, "problems": problems}))
        else:
            for p in exc.problems:
                typer.echo(str(p), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if as_json:
        typer.echo(json.dumps({"ok": True, "file": str(config_file)}))
    else:
        typer.echo(f"{config_file}: configuration OK")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("interrupted")
        sys.exit(130)
