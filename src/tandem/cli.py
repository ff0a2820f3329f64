"""The `tandem` command line: thin wrappers that parse arguments and call into the package.

Exit codes: 0 success; 1 runtime failure (e.g. a node that cannot be reached); 2 bad usage or
a config that does not validate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tandem.cli_import import SkipUnsupported, emit_import, hub_half, import_neuron_command
from tandem.cli_security import (
    CaFileOption,
    SecretFileOption,
    TokenFileOption,
    TokenOption,
    certs_app,
    read_secret_file,
    token_app,
    token_from,
    user_app,
)
from tandem.cli_simulate import simulate_plc
from tandem.errors import ConfigError, TandemError
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
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(certs_app, name="certs")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
DEFAULT_URL = "http://127.0.0.1:8085"

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
        problems = check_file(config_file, scripts=True)
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


@app.command()
def run(
    config_file: Annotated[Path, typer.Option("-c", "--config", help="the node's YAML config")],
    log_format: LogFormat = "text",
    verbose: Verbose = False,
) -> None:
    """Run a Tandem node (hub, API, and HA when configured) until SIGTERM or Ctrl-C."""
    from tandem.supervisor import run_node

    setup_logging(log_format, verbose)
    try:
        code = asyncio.run(run_node(config_file))
    except ConfigError as exc:
        for p in exc.problems:
            typer.echo(str(p), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except (TandemError, OSError) as exc:
        raise _fail(f"tandem run: {exc}", EXIT_RUNTIME) from None
    raise typer.Exit(code)


@app.command()
def status(
    urls: Annotated[
        list[str] | None,
        typer.Option("--url", help="a node's API base URL; repeat to compare nodes"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw status JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each node")] = 3.0,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    ca_file: CaFileOption = None,
) -> None:
    """Show the status of one or more running nodes side by side (needs a viewer token)."""
    client = _api_client(token_from(token, token_file), ca_file, timeout)
    with client:
        results = _fetch_statuses(client, urls or [DEFAULT_URL])
    reachable = [(url, body) for url, body, _ in results if body is not None]
    for url, _, error in results:
        if error is not None:
            typer.echo(f"cannot reach {url}: {error}", err=True)
    if as_json:
        bodies = [body for _, body in reachable]
        if bodies:
            typer.echo(json.dumps(bodies[0] if len(results) == 1 else bodies, indent=2))
    elif reachable:
        from rich.console import Console

        Console().print(_status_table(reachable))
    if len(reachable) < len(results):
        raise typer.Exit(EXIT_RUNTIME)


def _api_client(token: str | None, ca_file: Path | None, timeout: float) -> Any:
    """An HTTP client with the caller's token, verifying https nodes against `ca_file`."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify: Any = True
    if ca_file is not None:
        import ssl

        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise _fail(f"--ca-file {ca_file}: {exc}", EXIT_CONFIG) from None
    return httpx.Client(headers=headers, verify=verify, timeout=timeout, trust_env=False)


def _refusal_hint(response: Any) -> str:
    if response.status_code == 401:
        return " (give a token: --token-file, $TANDEM_TOKEN; see `tandem token create`)"
    if response.status_code == 403:
        return " (this token's role may not do this)"
    return ""


def _fetch_statuses(
    client: Any, urls: list[str]
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """(url, status body or None, error or None) for each node, in the order given."""
    import httpx

    results: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for url in urls:
        try:
            response = client.get(f"{url.rstrip('/')}/api/v1/status")
            if response.status_code in (401, 403):
                results.append((url, None, f"HTTP {response.status_code}{_refusal_hint(response)}"))
                continue
            response.raise_for_status()
            results.append((url, response.json(), None))
        except (httpx.HTTPError, ValueError) as exc:
            results.append((url, None, str(exc) or type(exc).__name__))
    return results


def _status_rows(body: dict[str, Any]) -> dict[str, str]:
    """The fields a person checks first, as display strings; HA rows only when HA reports."""
    devices = body.get("devices") or []
    publisher = body.get("publisher") or {}
    outbox = body.get("outbox") or {}
    rows = {
        "node": str(body.get("node", "?")),
        "role": str(body.get("role", "?")),
        "term": str(body.get("term", "?")),
        "standby mode": str(body.get("standby_mode") or "-"),
        "devices connected": (f"{sum(1 for d in devices if d.get('connected'))}/{len(devices)}"),
        "outbox depth": str(outbox.get("depth", "?")),
        "publish rate": f"{float(publisher.get('publish_rate', 0.0)):.1f} msg/s",
        "broker connected": "yes" if publisher.get("connected") else "no",
    }
    if outbox.get("fault"):
        rows["outbox"] = f"NOT WRITABLE: {outbox['fault']}"
    if outbox.get("recovered_to"):
        rows["outbox recovered"] = f"corrupt file moved to {outbox['recovered_to']}"
    vrrp = body.get("vrrp")
    if vrrp:
        rows["priority"] = f"{vrrp.get('priority', '?')} (base {vrrp.get('base_priority', '?')})"
    ha = body.get("ha")
    if ha:
        last = ha.get("last_failover") or {}
        failover = "-"
        if last:
            when = ""
            if isinstance(last.get("ts_ms"), int):
                when = time.strftime("%H:%M:%S", time.localtime(last["ts_ms"] / 1000))
            failover = " ".join(str(x) for x in (when, last.get("reason", "")) if x) or "-"
            if last.get("gap_ms") is not None:
                failover += f" (gap {last['gap_ms']} ms)"
        ours, theirs = ha.get("config_version"), ha.get("peer_config_version")
        config = f"{ours or '?'} (peer {theirs or '?'})"
        if ours and theirs and ours != theirs:
            config += " DIFFERS"
        rows |= {
            "peer": f"{ha.get('peer') or '?'} ({ha.get('peer_state') or 'unknown'})",
            "watermark lag": "-" if ha.get("watermark_lag") is None else str(ha["watermark_lag"]),
            "last failover": failover,
            "config version": config,
        }
        if ha.get("switchover"):
            rows["switchover"] = ha["switchover"]
    return rows


def _status_table(nodes: list[tuple[str, dict[str, Any]]]) -> Any:
    """One column per node, one row per field, so two nodes of a pair read side by side."""
    from rich.table import Table

    table = Table(title="Tandem status")
    table.add_column("")
    rows = [_status_rows(body) for _, body in nodes]
    for url, _ in nodes:
        table.add_column(url)
    names: list[str] = []
    for r in rows:
        names += [n for n in r if n not in names]
    for name in names:
        table.add_row(name, *(r.get(name, "-") for r in rows))
    return table


@app.command()
def switchover(
    url: Annotated[
        str, typer.Option("--url", help="either node of the pair; a backup forwards to its master")
    ] = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw result JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the handover")] = 15.0,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    ca_file: CaFileOption = None,
) -> None:
    """Planned switchover: the master hands its role to the standby with no gap or duplicate.

    Needs an operator (or admin) token.
    """
    import httpx

    try:
        with _api_client(token_from(token, token_file), ca_file, timeout) as client:
            response = client.post(f"{url.rstrip('/')}/api/v1/switchover")
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc or type(exc).__name__}", EXIT_RUNTIME) from None
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text}
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    if response.status_code != 200:
        reason = body.get("detail") or body.get("reason") or response.text
        hint = _refusal_hint(response)
        code = response.status_code
        raise _fail(f"switchover refused by {url} (HTTP {code}): {reason}{hint}", EXIT_RUNTIME)
    if not as_json:
        typer.echo(f"switchover done: {body.get('to', '?')} is master now")


@app.command()
def demo(
    scenario: Annotated[
        str | None,
        typer.Option(help="run unattended: 'failover' (kill -9, switchback, switchover, SIGTERM)"),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="shorter waits (CI)")] = False,
    standby: Annotated[str, typer.Option(help="hot or cold standby for the pair")] = "hot",
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="keep configs and logs here (not removed)")
    ] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="plain output")] = False,
    verbose: Verbose = False,
) -> None:
    """Run a PLC simulator, a broker and a two-node pair on loopback, and watch failover live."""
    from tandem.demo import DemoOptions, run_demo

    if standby not in ("hot", "cold"):
        raise _fail("--standby must be hot or cold", EXIT_CONFIG)
    setup_logging("text", verbose)
    if not verbose:
        # The live view owns the screen; the nodes' own logs are in the work dir.
        logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(
        scenario=scenario,
        quick=quick,
        standby=standby,  # type: ignore[arg-type]
        workdir=workdir,
        no_color=no_color,
    )
    raise typer.Exit(run_demo(options))


app.command("simulate-plc")(simulate_plc)


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


@config_app.command("import-keepalived")
def config_import_keepalived(
    keepalived_conf: Annotated[Path, typer.Argument(help="the keepalived.conf to convert")],
    hub: Annotated[
        Path | None,
        typer.Option("--hub", help="native config whose devices/mqtt/outbox/api to keep"),
    ] = None,
    node: Annotated[str | None, typer.Option("--node", help="this node's name")] = None,
    peer_url: Annotated[
        str | None, typer.Option("--peer-url", help="the peer's API (default: first unicast_peer)")
    ] = None,
    secret_file: SecretFileOption = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="vrrp_instance to convert, if several")
    ] = None,
    recovery: Annotated[
        str | None, typer.Option("--recovery", help="automatic or manual (overrides nopreempt)")
    ] = None,
    drop_check: Annotated[
        list[str] | None,
        typer.Option("--drop-check", help="track script/interface to give up (repeatable)"),
    ] = None,
    neuron: Annotated[
        Path | None,
        typer.Option("--neuron", help="Neuron/NeuronEX export whose devices and MQTT to import"),
    ] = None,
    skip_unsupported: SkipUnsupported = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write YAML here")] = None,
) -> None:
    """Convert a keepalived.conf (and its scripts) into a native Tandem config.

    Explains every mapping on stderr; writes the YAML to stdout or --output (mode 0600).
    """
    from tandem.config.keepalived import parse_file
    from tandem.config.migrate import ImportOptions, import_keepalived, read_scripts

    if recovery not in (None, "automatic", "manual"):
        raise _fail("--recovery must be automatic or manual", EXIT_CONFIG)
    if not keepalived_conf.is_file():
        raise _fail(f"{keepalived_conf}: no such file", EXIT_CONFIG)
    if hub is not None and neuron is not None:
        raise _fail("--hub and --neuron both give the hub half: use one", EXIT_CONFIG)
    try:
        cfg = parse_file(keepalived_conf)
        hub_config, neuron_notes = hub_half(hub, neuron, skip_unsupported, output is not None)
        options = ImportOptions(
            node=node,
            peer_url=peer_url,
            secret=_import_secret(secret_file),
            instance=instance,
            recovery=recovery,  # type: ignore[arg-type]
            drop_checks=frozenset(drop_check or ()),
        )
        result = import_keepalived(cfg, read_scripts(cfg), options, hub_config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    emit_import((*neuron_notes, *result.notes), result.yaml_text, output)


config_app.command("import-neuron")(import_neuron_command)


def _import_secret(secret_file: Path | None) -> str | None:
    """--secret-file, else $TANDEM_SECRET, else None (the import makes a new one)."""
    if secret_file is not None:
        return read_secret_file(secret_file, "secret")
    return os.environ.get("TANDEM_SECRET") or None


@config_app.command("export-keepalived")
def config_export_keepalived(
    config_file: Annotated[Path, typer.Argument(help="a Tandem YAML config with an ha section")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="directory for keepalived.conf and scripts")
    ] = Path("."),
    script_dir: Annotated[
        str | None,
        typer.Option("--script-dir", help="where the scripts will live (default: the -o dir)"),
    ] = None,
    service: Annotated[str, typer.Option(help="systemd unit keepalived starts/stops")] = "tandem",
) -> None:
    """Write keepalived.conf and scripts that start/stop the hub (cold standby, as in the guide)."""
    from pathlib import PurePosixPath

    from tandem.config.export import export_keepalived, write_files
    from tandem.config.hub import load_config

    try:
        config = load_config(config_file)
        scripts_at = PurePosixPath(script_dir or str(output.resolve()))
        files = export_keepalived(config, scripts_at, service, config_file.name)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    try:
        written = write_files(files, output)
    except OSError as exc:
        raise _fail(f"{output}: {exc}", EXIT_RUNTIME) from None
    for path in written:
        typer.echo(f"wrote {path}", err=True)


@config_app.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every config key (docs/configuration.md)."""
    from tandem.config.reference import render_reference

    typer.echo(render_reference(), nl=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("interrupted")
        sys.exit(130)
