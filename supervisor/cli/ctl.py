"""Verbs that talk to a running supervisor: status, start, stop, restart.

Exit codes (the same for every verb): 0 ok; 1 refused (unknown extension, cannot start…);
2 usage error; 3 no supervisor is running.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from supervisor.cli.render import duration, front_entry, table
from supervisor.control.client import ControlClient, NotRunning, RpcError
from supervisor.control.paths import client_socket_path
from supervisor.rules.readiness import not_ready
from supervisor.rules.text import safe, safe_lines

__all__ = ["disable", "enable", "logs", "reload", "restart", "start", "status", "stop"]

EXIT_REFUSED = 1
EXIT_NOT_RUNNING = 3

SocketOpt = Annotated[
    Path | None,
    typer.Option("--socket", help="Control socket (default: $SPCTL_SOCKET or the run directory)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@contextlib.contextmanager
def connected(sock: Path | None, timeout: float = 30.0) -> Iterator[ControlClient]:
    """A connection to the supervisor for one verb; its failures become the CLI's exit codes
    (3: nothing is running; 1: refused, with the supervisor's reasons printed)."""
    path = sock or client_socket_path()
    try:
        with ControlClient(path, timeout=timeout) as client:
            yield client
    except NotRunning as exc:
        print(f"spctl: {exc}; start it with `spctl serve`", file=sys.stderr)
        raise typer.Exit(EXIT_NOT_RUNNING) from None
    except RpcError as exc:
        errors = exc.data.get("errors", []) if isinstance(exc.data, dict) else []
        for line in errors:  # e.g. every config error of a refused reload
            print(line, file=sys.stderr)
        print(f"spctl: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_REFUSED) from None
    except TimeoutError as exc:
        print(f"spctl: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_REFUSED) from None


def call_supervisor(sock: Path | None, method: str, *params: Any, timeout: float = 30.0) -> Any:
    with connected(sock, timeout) as client:
        return client.call(method, *params)


def _row(ext: dict[str, Any]) -> list[str]:
    reason = ext.get("reason") or ""
    if ext.get("state") in ("crashed", "backoff", "failed") and ext.get("last_exit"):
        reason = ext["reason"]
    return [
        ext["name"],
        ext.get("kind", "-"),
        ext.get("state", "-"),
        str(ext["pid"]) if ext.get("pid") else "-",
        _spawn(ext),
        duration(ext.get("uptime")),
        str(ext.get("restarts", 0)),
        reason,
    ]


def _spawn(ext: dict[str, Any]) -> str:
    """How its worker was started: forked from spctl's zygote (``fork``) or from that of
    another interpreter (``fork:PYTHON``), or exec'd (``-``: none alive)."""
    if not ext.get("pid"):
        return "-"
    spawn = str(ext.get("spawn") or "")
    if spawn.startswith("zygote:"):
        return "fork:" + spawn.removeprefix("zygote:")
    return "fork" if spawn == "zygote" else "exec"


def status(
    extension: Annotated[str | None, typer.Argument(help="Only this extension.")] = None,
    json_: JsonOpt = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 0 when every enabled non-lazy extension is running, else 1, printing "
            "who is not and why (for scripts; the front's /readyz says the same).",
        ),
    ] = False,
    sock: SocketOpt = None,
) -> None:
    """Show every extension's state, pid, uptime, restarts and last reason."""
    result = call_supervisor(sock, "status", extension)
    if check:
        _check(result["extensions"], json_)
        return
    if json_:
        print(json.dumps(result, indent=2, default=str))
        return
    exts = result["extensions"]
    front = result["supervisor"].get("mcp_front")
    rows = [_row(e) for e in exts] + ([_row(front_entry(front))] if front and not extension else [])
    print(table(["NAME", "KIND", "STATE", "PID", "SPAWN", "UPTIME", "RESTARTS", "REASON"], rows))
    for ext in exts:
        for p in ext.get("routing_problems", []):
            print(safe(f"not routed: {ext['name']}: {p['kind']} {p['name']!r}: {p['reason']}"))
    for ext in exts:
        box = (ext.get("metadata") or {}).get("sandbox")
        if extension is not None and box:
            print(safe(f"sandbox: {box}"))
        if extension is not None and ext.get("spawn_reason"):
            print(safe(f"spawn: exec'd, not forked: {ext['spawn_reason']}"))
        if extension is not None and ext.get("integrity"):
            print(safe(f"integrity: {ext['integrity']}"))
        if extension is not None and ext.get("origin"):
            print(safe(f"origin: {ext['origin']}"))
        err = ext.get("error")
        if extension is not None and err and err.get("traceback"):
            print(f"\nlast error of {ext['name']}:\n{safe_lines(err['traceback'].rstrip())}")


def _check(exts: list[dict[str, Any]], json_: bool) -> None:
    """``status --check``: ready (exit 0) or who is not (exit 1)."""
    waiting = not_ready(exts)
    if json_:
        print(json.dumps({"ready": not waiting, "not_ready": waiting}, indent=2, default=str))
    elif waiting:
        for ext in waiting:
            why = f": {ext['reason']}" if ext.get("reason") else ""
            print(safe(f"not ready: {ext['name']} is {ext['state']}{why}"))
    else:
        print("ready")
    if waiting:
        raise typer.Exit(EXIT_REFUSED)


def _verb(method: str, done: str) -> Any:
    def command(
        extension: Annotated[str, typer.Argument(help="The extension's name.")],
        json_: JsonOpt = False,
        sock: SocketOpt = None,
    ) -> None:
        result = call_supervisor(sock, method, extension, timeout=600.0)
        if json_:
            print(json.dumps(result, indent=2, default=str))
        else:
            pid = f" (pid {result['pid']})" if result.get("pid") else ""
            print(f"{extension}: {done}{pid}")

    command.__doc__ = {
        "start": "Start an extension (clears `failed`); waits until it is running.",
        "stop": "Stop an extension gracefully; waits until its whole process group is gone.",
        "restart": "Stop then start an extension (clears `failed`); waits until it is running.",
    }[method]
    return command


start = _verb("start", "running")
stop = _verb("stop", "stopped")
restart = _verb("restart", "running")


def enable(
    extension: Annotated[str, typer.Argument(help="The extension's name.")],
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """Enable an extension and start it; persists across restarts and reloads."""
    result = call_supervisor(sock, "enable", extension, timeout=600.0)
    _show(result, json_, f"{extension}: enabled, {result.get('state')}")


def disable(
    extension: Annotated[str, typer.Argument(help="The extension's name.")],
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """Stop an extension and keep it disabled across restarts and reloads."""
    result = call_supervisor(sock, "disable", extension, timeout=600.0)
    _show(result, json_, f"{extension}: disabled")


def reload(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """Re-read servers.yaml and modules.yaml and apply only the difference (also: SIGHUP)."""
    result = call_supervisor(sock, "reload", dry_run, timeout=600.0)
    if json_:
        print(json.dumps(result, indent=2))
    else:
        plan = result["plan"]
        rows = [[name, action] for action in plan for name in plan[action]]
        print(table(["EXTENSION", "ACTION"], sorted(rows)))
        print("(dry run: nothing changed)" if dry_run else "applied")
        for err in result["errors"]:
            print(f"error: {err}", file=sys.stderr)
    if result["errors"]:
        raise typer.Exit(EXIT_REFUSED)


def logs(
    extension: Annotated[str, typer.Argument(help="The extension's name.")],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many recent lines.")] = 50,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    sock: SocketOpt = None,
) -> None:
    """Print an extension's recent stdout/stderr lines (kept in memory by the supervisor)."""
    with connected(sock) as client:
        result = client.call("logs", extension, lines, follow)
        for entry in result["lines"]:
            _print_line(*entry)
        if follow:
            try:
                for note in client.notifications():
                    if note.method == "log":
                        _print_line(*note.params)
            except KeyboardInterrupt:
                return


def _print_line(ts: float, stream: str, line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    print(f"{stamp}Z {stream}: {line}", flush=True)


def _show(result: dict[str, Any], json_: bool, text: str) -> None:
    print(json.dumps(result, indent=2, default=str) if json_ else text)
