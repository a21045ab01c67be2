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
    health_interval: Annotated[
        float, typer.Option("--health-interval", help="Seconds between health pings.")
    ] = 5.0,
    health_timeout: Annotated[
        float, typer.Option("--health-timeout", help="Seconds a worker has to answer a ping.")
    ] = 3.0,
    cgroups: Annotated[
        bool,
        typer.Option(
            "--cgroups/--no-cgroups",
            help="Kernel-enforced limits through cgroups where available (also SPCTL_CGROUPS=off).",
        ),
    ] = True,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-text", help="Log format (default: JSON unless a tty)."),
    ] = None,
) -> None:
    """Run the supervisor in the foreground (systemd runs exactly this)."""
    import logging
    import os

    from supervisor.core.health import HealthSettings
    from supervisor.core.serve import ServeOptions
    from supervisor.core.serve import serve as run_serve
    from supervisor.logs import configure

    debug = "extensions:" in os.environ.get("DEBUG", "")
    configure(json=log_json, level=logging.DEBUG if debug else logging.INFO)
    try:
        health = HealthSettings(interval=health_interval, deadline=health_timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    opts = ServeOptions(
        extensions=extensions, socket=sock or socket_path(), health=health, cgroups=cgroups
    )
    code = run_serve(opts)
    raise typer.Exit(code)
