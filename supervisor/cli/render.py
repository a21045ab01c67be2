"""Human output: plain aligned tables and durations (no rich: the CLI must start fast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from supervisor.rules.text import safe

__all__ = ["duration", "front_entry", "table"]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; every cell's control characters are escaped (an extension's reason or
    tool description must not drive the terminal)."""
    rows = [[safe(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def front_entry(front: Mapping[str, Any]) -> dict[str, Any]:
    """The MCP front (``status``'s ``supervisor.mcp_front``) as a row of the extensions table:
    kind ``front``, and while it runs its URL as the reason."""
    entry = {"name": "mcp-front", "kind": "front", **front}
    if front.get("url") and front.get("state") == "running":
        entry["reason"] = f"listening on {front['url']}"
    return entry
