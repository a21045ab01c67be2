"""Where an extension came from (DESIGN §9: "keep the full name and version as provenance"):
``spctl add`` records it in ``extensions/spctl.lock`` ``[origins.NAME]`` — the source it was
given (``registry:io.github.x/time``, ``./server.json``, ``pypi:mcp-server-time``), the
registry's (or the package's) name and version, and when — beside the comment it writes above
the entry. ``spctl remove`` takes it out; ``spctl lock`` never touches it. ``spctl status EXT``
shows it, with the entry's ``install:``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from supervisor.config import Extension
from supervisor.install.integrity import current_lock
from supervisor.install.lockfile import LockError
from supervisor.install.pins import extensions_root

__all__ = ["ORIGIN_SECTION", "describe", "origin_of", "origin_table"]

ORIGIN_SECTION = "origins"


def origin_table(
    source: str, name: str, version: str, *, now: float | None = None
) -> dict[str, Any]:
    """``[origins.NAME]`` for what ``spctl add SOURCE`` added."""
    when = (
        datetime.datetime.fromtimestamp(now, datetime.UTC)
        if now is not None
        else datetime.datetime.now(datetime.UTC)
    )
    return {
        "source": source,
        "name": name,
        "version": version,
        "added": when.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }


def describe(table: Any, install: str | None) -> str | None:
    """One line for people: ``io.github.x/time 1.0.0 (spctl add registry:…, 2026-12-03);
    install: pypi:…``; None when there is nothing to say."""
    parts = []
    if isinstance(table, Mapping) and all(
        isinstance(table.get(k), str) for k in ("source", "name", "version")
    ):
        added = table.get("added")
        day = f", {added[:10]}" if isinstance(added, str) and added else ""
        parts.append(f"{table['name']} {table['version']} (spctl add {table['source']}{day})")
    if install:
        parts.append(f"install: {install}")
    return "; ".join(parts) or None


def origin_of(ext: Extension) -> str | None:
    """``describe`` for ``ext``, from the lock beside its registry (read only when it changed)."""
    install = ext.environment.install if ext.environment is not None else None
    if ext.kind == "front":
        return None
    try:
        table = current_lock(extensions_root(ext)).get(ORIGIN_SECTION, {}).get(ext.name)
    except (LockError, OSError, AttributeError):
        table = None
    return describe(table, install)
