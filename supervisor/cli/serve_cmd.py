"""``spctl serve``: the core is imported only here, so other verbs start fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from supervisor.control.paths import socket_path

__all__ = ["serve"]


def serve(
    extensions: Annotated[
        Path, typer.Option("--extensions", help="The extensions directory.")
    ] = Path("extensions"),
    sock: Annotated[
        Path | None, typer.Option("--socket", help="Control socket path (default: see README).")
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-text", help="Log format (default: JSON unless a tty)."),
    ] = None,
) -> None:
    """Run the supervisor in the foreground (systemd runs exactly this)."""
    from supervisor.core.serve import ServeOptions
    from supervisor.core.serve import serve as run_serve
    from supervisor.logs import configure

    configure(json=log_json)
    code = run_serve(ServeOptions(extensions=extensions, socket=sock or socket_path()))
    raise typer.Exit(code)
