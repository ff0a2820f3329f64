"""`tandem config import-neuron`, and the hub half of `tandem config import-keepalived`.

The imported config is printed, or written into a file only its owner can read: it holds the
cluster secret and maybe the broker's password.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from tandem.errors import ConfigError

EXIT_RUNTIME = 1
EXIT_CONFIG = 2

SkipUnsupported = Annotated[
    bool, typer.Option("--skip-unsupported", help="import the rest, noting what is left out")
]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def hub_half(
    hub: Path | None, neuron: Path | None, skip_unsupported: bool, to_file: bool
) -> tuple[Any, tuple[object, ...]]:
    """What import-keepalived puts beside the ha section: --hub's sections or a Neuron import.

    Returns the hub part (None: an empty devices list) and the Neuron import's notes.
    """
    from tandem.config.migrate import generated_hub_part, hub_part
    from tandem.config.neuron import NeuronOptions, import_neuron_file

    if neuron is not None:
        options = NeuronOptions(
            skip_unsupported=skip_unsupported, keep_password=to_file, names_node=False
        )
        imported = import_neuron_file(neuron, options)
        origin = f"imported from the Neuron export {neuron.name}"
        return generated_hub_part(imported.hub_block, origin), imported.notes
    if hub is None:
        return None, ()
    try:
        hub_text = hub.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{hub}: cannot read: {exc.strerror}", EXIT_CONFIG) from None
    return hub_part(hub_text, str(hub)), ()


def emit_import(notes: Iterable[object], text: str, output: Path | None) -> None:
    """Notes on stderr; the config on stdout, or in a file created mode 0600."""
    from tandem.files import write_atomic
    from tandem.security.store import PRIVATE_MODE

    for note in notes:
        typer.echo(str(note), err=True)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_atomic(output, text, mode=PRIVATE_MODE)
    except OSError as exc:
        raise _fail(f"{output}: {exc.strerror}", EXIT_RUNTIME) from None
    typer.echo(f"wrote {output} (mode 0600)", err=True)


def import_neuron_command(
    export: Annotated[
        Path, typer.Argument(help="GET /api/v2/global/config (or global/drivers) as JSON")
    ],
    node: Annotated[str | None, typer.Option("--node", help="this node's name")] = None,
    all_groups: Annotated[
        bool, typer.Option("--all-groups", help="also groups no MQTT app subscribes to")
    ] = False,
    skip_unsupported: SkipUnsupported = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write YAML here")] = None,
) -> None:
    """Convert a Neuron/NeuronEX export into a native config: devices, groups, tags, mqtt.

    Explains every mapping on stderr; refuses what has no equivalent, naming the node, group
    and tag. Writes the YAML to stdout (without the broker password) or --output (mode 0600).
    """
    from tandem.config.neuron import NeuronOptions, import_neuron_file

    options = NeuronOptions(
        node=node,
        skip_unsupported=skip_unsupported,
        all_groups=all_groups,
        keep_password=output is not None,
    )
    try:
        result = import_neuron_file(export, options)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    emit_import(result.notes, result.yaml_text, output)
