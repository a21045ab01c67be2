"""``spctl top``: a live table of every extension's resource use, refreshed like ``top``."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from supervisor.cli.ctl import JsonOpt, SocketOpt, connected
from supervisor.cli.render import duration, table

__all__ = ["top"]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def _row(ext: dict[str, Any]) -> list[str]:
    usage = ext.get("usage") or {}
    head = ext.get("headroom") or {}
    used = [f"{k} {_pct(v)}" for k, v in sorted(head.items()) if v is not None]
    return [
        ext["name"],
        ext.get("state", "-"),
        str(ext.get("pid") or "-"),
        _size(usage.get("rss")),
        "-" if usage.get("cpu") is None else f"{usage['cpu'] * 100:.1f}%",
        str(usage.get("processes", "-")),
        str(usage.get("open_files", "-")),
        str(ext.get("restarts", 0)),
        ", ".join(used) or "-",
    ]


def render(status: dict[str, Any]) -> str:
    sup = status["supervisor"]
    head = (
        f"spctl pid {sup['pid']}  up {duration(sup.get('uptime'))}  "
        f"limits: {sup.get('limits_enforcement', '?')}  {time.strftime('%H:%M:%S')}"
    )
    rows = [_row(e) for e in status["extensions"]]
    cols = ["NAME", "STATE", "PID", "RSS", "CPU", "PROCS", "FDS", "RESTARTS", "LIMIT USED"]
    return head + "\n\n" + table(cols, rows)


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """Live resource use per extension: state, pid, RSS, CPU, processes, open files, headroom."""
    with connected(sock, timeout=10.0) as client:
        try:
            while True:
                status = client.call("status", None)
                if json_:
                    print(json.dumps(status, default=str))
                else:
                    if not once and sys.stdout.isatty():
                        print("\x1b[H\x1b[2J", end="")  # home + clear, like top
                    print(render(status), flush=True)
                if once:
                    return
                time.sleep(interval)  # the refresh period of a live view
        except KeyboardInterrupt:
            return
