"""What a lazy MCP server advertised, kept on disk so it can be listed before it runs.

Why: a lazy server (``lazy: true``) is started by the first call that needs it, but MCP clients
list tools first and call only what they were shown. So the supervisor lists a lazy server's
last known catalog while it is stopped. The catalog is learned when the server starts (the
worker's ``ready`` carries it) and replaced whenever it changes; this cache keeps it across
supervisor restarts, so a lazy server is not started just to be listed again.

Each entry is ``<state dir>/catalogs/<name>.json`` holding the catalog and a *fingerprint* of
the configuration that produced it (everything that decides what the worker runs: path,
command, config, env, python, …; not ``enabled``, ``lazy``, timeouts, limits, restart
settings or the ``tools``/``prompts``/``resources`` filters, which are applied to the whole
catalog when it is listed). An entry whose fingerprint no longer matches the configuration is
ignored: the server is started once to learn its catalog again. Secret values never reach the
disk: they enter the fingerprint as their redacted form, so changing only a secret keeps the
entry.

A file that cannot be read or parsed is ignored (and replaced by the next save); saving is
atomic (write to a temporary file, then rename), and a failure to save is reported to the
caller, never raised into the supervisor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from supervisor.atomic import write_atomic
from supervisor.config import Extension
from supervisor.config.values import thaw

__all__ = ["CatalogCache", "fingerprint"]

# Settings that do not change what the worker runs, hence not what it advertises.
_NOT_IN_FINGERPRINT = frozenset(
    {
        "enabled",
        "lazy",
        "idle_timeout",
        "timeout",
        "stop_timeout",
        "start_timeout",
        "limits",
        "restart",
        "tools",  # the filters decide what is advertised of the catalog, not the catalog
        "prompts",
        "resources",
    }
)


def fingerprint(ext: Extension) -> str:
    """A digest of the settings of ``ext`` that decide what its worker runs."""
    parts = {
        f.name: thaw(getattr(ext, f.name))
        for f in dataclasses.fields(ext)
        if f.compare and f.name not in _NOT_IN_FINGERPRINT
    }
    text = json.dumps(parts, sort_keys=True, default=repr)  # Secret → its redacted repr
    return hashlib.sha256(text.encode()).hexdigest()


class CatalogCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._known: dict[str, tuple[str, dict[str, Any]]] = {}  # what the file holds, by name

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"  # names are [a-z0-9-]: no path tricks

    def load(self, ext: Extension) -> dict[str, Any] | None:
        """The cached catalog of ``ext``, or None (absent, unreadable, or from another config)."""
        try:
            raw = json.loads(self._path(ext.name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("fingerprint") != fingerprint(ext):
            return None
        catalog = raw.get("catalog")
        if not isinstance(catalog, dict):
            return None
        self._known[ext.name] = (raw["fingerprint"], catalog)
        return catalog

    def save(self, ext: Extension, catalog: dict[str, Any]) -> str | None:
        """Store ``catalog`` for ``ext`` (unless the file holds it already: a lazy server starts
        again and again with the same tools); returns an error text instead of raising."""
        stamp = fingerprint(ext)
        if self._known.get(ext.name) == (stamp, catalog):
            return None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            text = json.dumps({"fingerprint": stamp, "catalog": catalog})
            write_atomic(self._path(ext.name), text.encode(), fsync=False)
        except (OSError, TypeError, ValueError) as exc:
            return f"cannot cache the catalog of {ext.name} in {self.directory}: {exc}"
        self._known[ext.name] = (stamp, catalog)
        return None

    def forget(self, name: str) -> None:
        self._known.pop(name, None)
        with contextlib.suppress(OSError):
            self._path(name).unlink()
