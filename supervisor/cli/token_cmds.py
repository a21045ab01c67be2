"""``spctl token add|list|remove``: the MCP front's per-client tokens (the clients file).

The file is ``<state dir>/clients.toml`` unless ``--clients-file`` names another (the same flag
as ``spctl serve``'s). ``add`` prints the new token once and keeps only its sha256; the running
front picks up every change on the next request (it re-reads the file when it changes).

Exit codes: 0 ok; 1 refused (no such client, a client of that name exists, the file is bad);
2 usage error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from supervisor.cli.render import table

if TYPE_CHECKING:  # imported by the verbs themselves: other verbs start without them (~80 ms)
    from supervisor.rules.clients import Clients

__all__ = ["app"]

EXIT_REFUSED = 1

app = typer.Typer(
    help="Per-client bearer tokens for the MCP front (the clients file).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ClientsFileOpt = Annotated[
    Path | None,
    typer.Option("--clients-file", help="The clients file (default: <state dir>/clients.toml)."),
]


def _fail(message: str) -> typer.Exit:
    print(f"spctl: {message}", file=sys.stderr)
    return typer.Exit(EXIT_REFUSED)


def _read(path: Path) -> Clients:
    from supervisor.clients_file import load
    from supervisor.rules.clients import Clients, ClientsError

    try:
        return load(path)
    except FileNotFoundError:
        return Clients()
    except ClientsError as exc:
        raise _fail(str(exc)) from None


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The client's name (shown in logs).")],
    allow: Annotated[
        list[str],
        typer.Option(
            "--allow",
            help="What it may reach: SERVER or SERVER__NAME globs (repeat; e.g. 'notes__*').",
        ),
    ],
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="Only tools the server annotates readOnlyHint."),
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a client of that name (a new token).")
    ] = False,
    clients_file: ClientsFileOpt = None,
) -> None:
    """Add a client: prints its new token once (only its sha256 is kept)."""
    import secrets

    from supervisor.clients_file import default_path, locked, save
    from supervisor.rules.clients import Client, check_glob, check_name, hash_token

    problems = [p for p in (check_name(name), *map(check_glob, allow)) if p is not None]
    if problems:
        for problem in problems:
            print(f"spctl: {problem}", file=sys.stderr)
        raise typer.Exit(2)
    path = clients_file or default_path(operator=True)
    token = "spctl_" + secrets.token_urlsafe(32)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client = Client(name, hash_token(token), tuple(allow), read_only, created)
    try:
        with locked(path):
            clients = _read(path)
            if clients.get(name) is not None and not replace:
                raise _fail(f"{path}: a client named {name!r} exists (--replace: a new token)")
            save(path, clients.with_client(client))
    except OSError as exc:
        raise _fail(f"{path}: cannot write: {exc.strerror or exc}") from None
    print(token)
    print(
        f"client {name!r} added to {path}; the token above is shown only now "
        "(send it as 'Authorization: Bearer <token>')",
        file=sys.stderr,
    )


@app.command("list")
def list_(clients_file: ClientsFileOpt = None) -> None:
    """The clients: names, what they may reach, when added (never tokens or hashes)."""
    from supervisor.clients_file import default_path

    path = clients_file or default_path(operator=True)
    clients = _read(path)
    if not clients.clients:
        print(f"no clients in {path}", file=sys.stderr)
        return
    rows = [
        [c.name, " ".join(c.allow), "yes" if c.read_only else "", c.created or ""]
        for c in clients.clients
    ]
    print(table(["NAME", "ALLOW", "READ-ONLY", "CREATED"], rows))


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The client to remove.")],
    clients_file: ClientsFileOpt = None,
) -> None:
    """Remove a client: its token stops working at once."""
    from supervisor.clients_file import default_path, locked, save

    path = clients_file or default_path(operator=True)
    try:
        with locked(path):
            clients = _read(path)
            if clients.get(name) is None:
                raise _fail(f"{path}: no client named {name!r}")
            save(path, clients.without(name))
    except OSError as exc:
        raise _fail(f"{path}: cannot write: {exc.strerror or exc}") from None
    print(f"client {name!r} removed from {path}", file=sys.stderr)
