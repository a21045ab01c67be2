"""``spctl top``: a live table of every extension's resource use, refreshed like ``top``.

The last column is a sparkline (▁▂▃▄▅▆▇█) of the last minutes of memory (or CPU with
``--spark cpu``), from the core's ``history`` (the one the status page draws from); without
it (an older core) the column is left out.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from supervisor.cli.ctl import JsonOpt, SocketOpt, connected
from supervisor.cli.render import duration, table
from supervisor.control.client import RpcError
from supervisor.rules.history import sparkline

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


SPARK_WIDTH = 30  # points: one per 2 s, the last minute


def _trend(history: dict[str, Any] | None, name: str, key: str) -> str:
    series = ((history or {}).get("series") or {}).get(name) or {}
    values = (series.get(key) or [])[-SPARK_WIDTH:]
    # memory from the window's lowest value (its trend), CPU from zero (how busy)
    known = [v for v in values if v is not None]
    floor = min(known) if key == "rss" and known else 0.0
    line = sparkline(values, SPARK_WIDTH, floor=floor)
    return line if line.strip() else "-"


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


def render(
    status: dict[str, Any], history: dict[str, Any] | None = None, spark: str = "memory"
) -> str:
    """The table; with ``history`` (the core's answer) a sparkline column of ``spark``."""
    sup = status["supervisor"]
    head = (
        f"spctl pid {sup['pid']}  up {duration(sup.get('uptime'))}  "
        f"limits: {sup.get('limits_enforcement', '?')}  {time.strftime('%H:%M:%S')}"
    )
    rows = [_row(e) for e in status["extensions"]]
    cols = ["NAME", "STATE", "PID", "RSS", "CPU", "PROCS", "FDS", "RESTARTS", "LIMIT USED"]
    if history is not None:
        key = "cpu" if spark == "cpu" else "rss"
        cols.append(f"{spark.upper()} (LAST {SPARK_WIDTH * history.get('period', 2):.0f} S)")
        for row, ext in zip(rows, status["extensions"], strict=True):
            row.append(_trend(history, ext["name"], key))
    return head + "\n\n" + table(cols, rows)


def _history(client: Any) -> dict[str, Any] | None:
    try:
        history: dict[str, Any] = client.call("history", None)
    except RpcError:
        return None  # an older core: no sparklines
    return history


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
    spark: Annotated[
        str, typer.Option("--spark", help="What the sparkline column shows: memory or cpu.")
    ] = "memory",
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """Live resource use per extension: state, pid, RSS, CPU, processes, open files, headroom,
    and a sparkline of the last minute."""
    if spark not in ("memory", "cpu"):
        raise typer.BadParameter(f"--spark must be memory or cpu, got {spark!r}")
    with connected(sock, timeout=10.0) as client:
        try:
            while True:
                status = client.call("status", None)
                if json_:
                    print(json.dumps(status, default=str))
                else:
                    if not once and sys.stdout.isatty():
                        print("\x1b[H\x1b[2J", end="")  # home + clear, like top
                    print(render(status, _history(client), spark), flush=True)
                if once:
                    return
                time.sleep(interval)  # the refresh period of a live view
        except KeyboardInterrupt:
            return
