"""Readiness: whether every extension that should be running is, and who is not (pure).

The one rule behind the front's ``/readyz`` and ``spctl status --check``: an extension counts
when it is enabled and not lazy (a lazy one starts on first use, so it is not expected to
run); a config entry that could not be loaded counts too (it is a ``failed`` row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["not_ready"]

RUNNING = "running"


def not_ready(extensions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``status``'s ``extensions`` that keep the supervisor from being ready, as
    ``{name, state, reason}``; empty when it is ready."""
    return [
        {"name": ext.get("name"), "state": ext.get("state"), "reason": ext.get("reason")}
        for ext in extensions
        if ext.get("enabled", True) and not ext.get("lazy") and ext.get("state") != RUNNING
    ]
