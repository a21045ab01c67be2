"""``spctl mcp [SERVER]``: serve MCP over stdio through the running supervisor.

The SDK is imported inside the command, so the other verbs stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from supervisor.cli.ctl import SocketOpt
from supervisor.control.paths import client_socket_path

__all__ = ["mcp"]


def mcp(
    server: Annotated[
        str | None,
        typer.Argument(
            help="Serve only this MCP server, under its own names "
            "(default: every server, names prefixed server__name)."
        ),
    ] = None,
    sock: SocketOpt = None,
    reconnect: Annotated[
        bool,
        typer.Option(
            help="When the supervisor goes away (a restart), keep serving and reconnect; "
            "--no-reconnect exits 1 instead."
        ),
    ] = True,
) -> None:
    """Serve MCP over stdin/stdout (for a desktop client such as Claude Desktop).

    Exit codes: 0 the client closed stdin; 1 no such MCP server, or the supervisor went away
    (with --no-reconnect); 3 no supervisor is running.
    """
    import anyio

    from supervisor.logs import configure
    from supervisor.mcp.stdio import serve_stdio

    configure(json=None)  # to stderr: stdout is the MCP wire
    raise typer.Exit(anyio.run(serve_stdio, sock or client_socket_path(), server, reconnect))
