"""One extension's status, as ``spctl status`` (and ``--json``) shows it: plain data."""

from __future__ import annotations

import time
from typing import Any

from supervisor.config import Extension
from supervisor.rules.limits import Sample, WatchLimits, headroom
from supervisor.rules.states import State, StateMachine

__all__ = ["snapshot", "usage"]


def snapshot(
    ext: Extension,
    sm: StateMachine,
    *,
    pid: int | None,
    restarts: int,
    last_exit: str | None,
    error: dict[str, Any] | None,
    metadata: dict[str, Any],
    sample: Sample | None,
) -> dict[str, Any]:
    now = time.monotonic()
    state, since = sm.state, sm.since
    live = sample if pid else None
    return {
        "name": ext.name,
        "kind": ext.kind,
        "type": ext.type,
        "enabled": ext.enabled,
        "state": state.value,
        "reason": sm.reason,
        "pid": pid,
        "since": time.time() - (now - since),
        "uptime": (now - since) if state is State.RUNNING else None,
        "restarts": restarts,
        "last_exit": last_exit,
        "error": error,
        "metadata": metadata,
        "usage": usage(live),
        "headroom": headroom(live, WatchLimits.from_config(ext.limits)) if live else {},
    }


def usage(sample: Sample | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    return {
        "rss": sample.rss,
        "cpu": round(sample.cpu, 4),
        "processes": sample.processes,
        "open_files": sample.open_files,
    }
