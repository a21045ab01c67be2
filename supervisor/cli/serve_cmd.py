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
        Path | None,
        typer.Option("--socket", help="Control socket path (default: see docs/operations.md)."),
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
    listen: Annotated[
        str,
        typer.Option("--listen", help="Where the MCP front listens (HOST:PORT; port 0: any free)."),
    ] = "127.0.0.1:8765",
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Require this bearer token from MCP clients."),
    ] = None,
    clients_file: Annotated[
        Path | None,
        typer.Option(
            "--clients-file",
            help="Per-client tokens for MCP clients (default: <state dir>/clients.toml, "
            "if it exists; see spctl token).",
        ),
    ] = None,
    front: Annotated[
        bool, typer.Option("--front/--no-front", help="Run the MCP front (/mcp over HTTP).")
    ] = True,
    front_max_connections: Annotated[
        int | None,
        typer.Option(
            "--front-max-connections",
            min=1,
            help="Connections the MCP front serves at once; more get 503 (default 1000).",
        ),
    ] = None,
    front_header_timeout: Annotated[
        float | None,
        typer.Option(
            "--front-header-timeout",
            help="Seconds an MCP client has to send a request's head (default 10).",
        ),
    ] = None,
    front_keepalive_timeout: Annotated[
        float | None,
        typer.Option(
            "--front-keepalive-timeout",
            help="Seconds the MCP front keeps an idle connection between requests (default 5).",
        ),
    ] = None,
    front_max_sessions: Annotated[
        int | None,
        typer.Option(
            "--front-max-sessions",
            min=1,
            help="2025-era MCP sessions kept across all URLs; then the oldest idle goes "
            "(default 1000).",
        ),
    ] = None,
    front_session_idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--front-session-idle-timeout",
            help="Seconds an idle 2025-era MCP session is kept (default 1800).",
        ),
    ] = None,
    status_page: Annotated[
        bool,
        typer.Option(
            "--status-page/--no-status-page",
            help="Serve the live status page at / on the MCP front (actions need a token).",
        ),
    ] = True,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Reload when servers.yaml or modules.yaml change (debounced; as spctl reload).",
        ),
    ] = False,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit/--no-audit",
            help="Record every routed call in <state dir>/audit.jsonl (see spctl audit).",
        ),
    ] = True,
    audit_max_bytes: Annotated[
        int,
        typer.Option(
            "--audit-max-bytes",
            min=1024,
            help="Size at which the audit log is rotated (3 files are kept; default 16 MiB).",
        ),
    ] = 16 * 1024 * 1024,
    audit_bodies: Annotated[
        bool,
        typer.Option(
            "--audit-bodies",
            help="Also record call arguments (redacted secrets, cut to 1 KiB).",
        ),
    ] = False,
    zygote: Annotated[
        bool | None,
        typer.Option(
            "--zygote/--no-zygote",
            help="Fork workers on spctl's own interpreter from a pre-imported zygote "
            "(also SPCTL_ZYGOTE=on|off; default on).",
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-text", help="Log format (default: JSON unless a tty)."),
    ] = None,
) -> None:
    """Run the supervisor in the foreground (systemd runs exactly this)."""
    import logging
    import os

    from supervisor.core.serve import ServeOptions
    from supervisor.core.serve import serve as run_serve
    from supervisor.core.zygote import switch_problem
    from supervisor.logs import configure
    from supervisor.rules.health import HealthSettings

    if zygote is not None:  # read by supervisor.core.process when it spawns
        os.environ["SPCTL_ZYGOTE"] = "on" if zygote else "off"
    if (problem := switch_problem()) is not None:
        raise typer.BadParameter(problem)
    debug = "extensions:" in os.environ.get("DEBUG", "")
    configure(json=log_json, level=logging.DEBUG if debug else logging.INFO)
    try:
        health = HealthSettings(interval=health_interval, deadline=health_timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    times = {
        "--front-header-timeout": front_header_timeout,
        "--front-keepalive-timeout": front_keepalive_timeout,
        "--front-session-idle-timeout": front_session_idle_timeout,
    }
    for flag, seconds in times.items():
        if seconds is not None and not 0 < seconds < float("inf"):
            raise typer.BadParameter(f"{flag} must be a positive number of seconds")
    clients = _clients_file(clients_file) if front else None
    from supervisor.control.paths import state_dir
    from supervisor.core.audit import AuditOptions
    from supervisor.core.front import FrontOptions
    from supervisor.rules.audit import AUDIT_FILE

    opts = ServeOptions(
        extensions=extensions,
        socket=sock or socket_path(),
        health=health,
        cgroups=cgroups,
        front=FrontOptions(
            listen=listen,
            token_file=token_file,
            clients_file=clients,
            max_connections=front_max_connections,
            header_timeout=front_header_timeout,
            keepalive_timeout=front_keepalive_timeout,
            max_sessions=front_max_sessions,
            session_idle_timeout=front_session_idle_timeout,
            status_page=status_page,
        )
        if front
        else None,
        watch=watch,
        audit=AuditOptions(
            path=state_dir() / AUDIT_FILE, max_bytes=audit_max_bytes, bodies=audit_bodies
        )
        if audit
        else None,
    )
    code = run_serve(opts)
    raise typer.Exit(code)


def _clients_file(given: Path | None) -> Path:
    """The clients file the front is to use, checked now so a bad one stops ``serve`` with its
    reason: ``--clients-file`` (which must exist), else the state directory's (the front
    starts requiring tokens once ``spctl token add`` creates it: it re-reads the file)."""
    from supervisor.clients_file import default_path, load
    from supervisor.rules.clients import ClientsError

    path = given or default_path()
    try:
        load(path)
    except FileNotFoundError:
        if given is not None:
            raise typer.BadParameter(
                f"{path} does not exist (spctl token add creates it)"
            ) from None
    except ClientsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clients-file") from None
    return path.absolute()
