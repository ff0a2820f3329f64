"""`tandem user`, `tandem token`, `tandem certs`: a node's credentials, from the command line.

They work on the node's data dir (from its config) and take effect on a running node at once:
the node re-reads its users and tokens files when they change.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from tandem.errors import ConfigError, TandemError
from tandem.security.roles import Role

EXIT_RUNTIME = 1
EXIT_CONFIG = 2

user_app = typer.Typer(help="Dashboard users: add, list, remove, change a password.")
token_app = typer.Typer(help="Machine tokens for scripts and tools (Authorization: Bearer).")
certs_app = typer.Typer(help="TLS certificates for a pair: a private CA and one per node.")

ConfigOption = Annotated[Path, typer.Option("-c", "--config", help="the node's YAML config")]
RoleOption = Annotated[str, typer.Option("--role", help="viewer, operator or admin")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _data_dir(config_file: Path) -> Path:
    from tandem.config.hub import load_config

    try:
        return load_config(config_file).data_dir
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_CONFIG) from None


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise _fail(f"--role must be one of {[r.value for r in Role]}", EXIT_CONFIG) from None


def read_secret_file(path: Path, what: str) -> str:
    """A secret from a file (`-` for standard input), without its trailing newline."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{path}: cannot read the {what}: {exc.strerror}", EXIT_CONFIG) from None
    return text.rstrip("\r\n")


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return read_secret_file(password_file, "password")
    if not sys.stdin.isatty():
        raise _fail("no terminal to ask for the password: use --password-file", EXIT_CONFIG)
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="read the password from this file ('-': stdin)"),
]


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="the user name to log in with")],
    config_file: ConfigOption,
    role: RoleOption = "viewer",
    password_file: PasswordFile = None,
) -> None:
    """Add a user; the password is asked twice (or read from --password-file)."""
    from tandem.security.users import UserStore

    store = UserStore(_data_dir(config_file))
    chosen = _role(role)
    try:
        user = store.add(name, chosen, _password(password_file))
    except TandemError as exc:
        raise _fail(f"tandem user add: {exc}", EXIT_RUNTIME) from None
    typer.echo(f"added user {user.name} ({user.role.value}) to {store.path}")


@user_app.command("list")
def user_list(config_file: ConfigOption) -> None:
    """List users and their roles."""
    from tandem.security.users import UserStore

    try:
        users = UserStore(_data_dir(config_file)).list()
    except TandemError as exc:
        raise _fail(f"tandem user list: {exc}", EXIT_RUNTIME) from None
    for user in users:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created))
        typer.echo(f"{user.name}\t{user.role.value}\tcreated {created}")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="the user to remove")], config_file: ConfigOption
) -> None:
    """Remove a user; their open logins end with the next request."""
    from tandem.security.users import UserStore

    try:
        UserStore(_data_dir(config_file)).remove(name)
    except TandemError as exc:
        raise _fail(f"tandem user remove: {exc}", EXIT_RUNTIME) from None
    typer.echo(f"removed user {name}")


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="the user")],
    config_file: ConfigOption,
    password_file: PasswordFile = None,
) -> None:
    """Set a new password for a user."""
    from tandem.security.users import UserStore

    try:
        UserStore(_data_dir(config_file)).set_password(name, _password(password_file))
    except TandemError as exc:
        raise _fail(f"tandem user passwd: {exc}", EXIT_RUNTIME) from None
    typer.echo(f"password of {name} changed")


@token_app.command("create")
def token_create(
    config_file: ConfigOption,
    role: RoleOption = "viewer",
    name: Annotated[str | None, typer.Option("--name", help="a name to list and revoke")] = None,
    expires: Annotated[
        float | None, typer.Option("--expires", help="days until the token stops working")
    ] = None,
) -> None:
    """Create a token; it is printed once, as the last line of stdout, and never stored."""
    from tandem.security.tokens import TokenStore

    store = TokenStore(_data_dir(config_file))
    chosen = _role(role)
    try:
        info, token = store.create(chosen, name, expires)
    except TandemError as exc:
        raise _fail(f"tandem token create: {exc}", EXIT_RUNTIME) from None
    until = (
        "never" if info.expires is None else time.strftime("%Y-%m-%d", time.localtime(info.expires))
    )
    typer.echo(f"token {info.id} {info.name!r} ({info.role.value}), expires {until}:")
    typer.echo(token)


@token_app.command("list")
def token_list(config_file: ConfigOption) -> None:
    """List tokens: id, name, role, expiry (never the token)."""
    from tandem.security.tokens import TokenStore

    try:
        tokens = TokenStore(_data_dir(config_file)).list()
    except TandemError as exc:
        raise _fail(f"tandem token list: {exc}", EXIT_RUNTIME) from None
    now = time.time()
    for t in tokens:
        until = (
            "never" if t.expires is None else time.strftime("%Y-%m-%d", time.localtime(t.expires))
        )
        state = " EXPIRED" if t.expired(now) else ""
        typer.echo(f"{t.id}\t{t.name}\t{t.role.value}\texpires {until}{state}")


@token_app.command("revoke")
def token_revoke(
    id_or_name: Annotated[str, typer.Argument(help="the token's id or name")],
    config_file: ConfigOption,
) -> None:
    """Revoke a token; a running node refuses it from the next request on."""
    from tandem.security.tokens import TokenStore

    try:
        info = TokenStore(_data_dir(config_file)).revoke(id_or_name)
    except TandemError as exc:
        raise _fail(f"tandem token revoke: {exc}", EXIT_RUNTIME) from None
    typer.echo(f"revoked token {info.id} {info.name!r}")


@certs_app.command("init")
def certs_init(
    directory: Annotated[Path, typer.Option("--dir", help="where to write the files")],
    node: Annotated[
        list[str], typer.Option("--node", help="NAME=ADDRESS of a node (repeat per node)")
    ],
    cluster: Annotated[str, typer.Option(help="a name for the CA")] = "tandem",
    port: Annotated[int, typer.Option(help="the API port, for the printed peer_url")] = 8085,
) -> None:
    """Make a CA and a certificate per node (keys 0600), and print the config to add."""
    from tandem.security.certs import init_pair, parse_node

    try:
        nodes = [parse_node(text) for text in node]
    except ValueError as exc:
        raise _fail(f"--node: {exc}", EXIT_CONFIG) from None
    try:
        made = init_pair(directory, nodes, cluster)
    except (TandemError, OSError) as exc:
        raise _fail(f"tandem certs init: {exc}", EXIT_RUNTIME) from None
    ca = (directory / "ca.pem").resolve()
    typer.echo(f"wrote {ca} and {directory / 'ca.key'} (keep ca.key offline)")
    for files in made:
        peers = [f for f in made if f is not files]
        typer.echo(f"\n# {files.name}: add to its config")
        typer.echo("api:\n  tls:")
        typer.echo(f"    cert_file: {files.cert_file.resolve()}")
        typer.echo(f"    key_file: {files.key_file.resolve()}")
        for peer in peers[:1]:
            host = f"[{peer.address}]" if ":" in peer.address else peer.address
            typer.echo(f"ha:\n  peer_url: https://{host}:{port}")
            typer.echo(f"  peer_tls:\n    ca_file: {ca}")
            typer.echo(
                f"    # or pin the peer's certificate instead: fingerprint: {peer.fingerprint}"
            )


def token_from(token: str | None, token_file: Path | None) -> str | None:
    """--token, else --token-file, else $TANDEM_TOKEN."""
    if token:
        return token.strip()
    if token_file is not None:
        return read_secret_file(token_file, "token").strip()
    value = os.environ.get("TANDEM_TOKEN", "").strip()
    return value or None


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="a machine token (visible to other users in the process list: prefer "
        "$TANDEM_TOKEN or --token-file)",
    ),
]
TokenFileOption = Annotated[
    Path | None, typer.Option("--token-file", help="read the token from this file")
]
CaFileOption = Annotated[
    Path | None,
    typer.Option("--ca-file", envvar="TANDEM_CA_FILE", help="CA to verify an https node with"),
]
SecretFileOption = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        help="file with the cluster secret both nodes share ('-': stdin; or $TANDEM_SECRET); "
        "default: a new random one",
    ),
]
