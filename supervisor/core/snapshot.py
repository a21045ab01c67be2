"""One extension's status, as ``spctl status`` (and ``--json``) shows it: plain data."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

from supervisor.config import Extension
from supervisor.core.process import spawn_mode
from supervisor.rules.limits import Sample, WatchLimits, headroom
from supervisor.rules.states import INSTALLING, State, StateMachine

__all__ = ["Observed", "snapshot", "usage"]


class Observed(Protocol):
    """What a snapshot reads (a Runner)."""

    ext: Extension
    sm: StateMachine
    restarts: int
    last_exit: str | None
    start_duration: float | None
    last_error: dict[str, Any] | None
    metadata: dict[str, Any]
    usage: Sample | None
    integrity: str | None  # pinned / unpinned / signed, at its last start

    @property
    def crashes(self) -> Mapping[str, int]: ...  # by rules.exits.crash_reason

    @property
    def installing(self) -> str | None: ...  # its environment is being built

    @property
    def pid(self) -> int | None: ...

    @property
    def spawned(self) -> tuple[str, str] | None: ...  # ("zygote"|"exec", why) of its worker


def snapshot(r: Observed) -> dict[str, Any]:
    now = time.monotonic()
    ext, state, since, pid = r.ext, r.sm.state, r.sm.since, r.pid
    live = r.usage if pid else None
    spawned = r.spawned
    argv = [str(ext.python or sys.executable), "-P", "-m", "worker"]
    installing = r.installing if state is State.STARTING else None
    return {
        "name": ext.name,
        "kind": ext.kind,
        "type": ext.type,
        "enabled": ext.enabled,
        "lazy": ext.lazy,
        # `installing` is a phase of `starting` (states.INSTALLING), shown as a state
        "state": INSTALLING if installing is not None else state.value,
        "reason": installing if installing is not None else r.sm.reason,
        "pid": pid,
        "since": time.time() - (now - since),
        "uptime": (now - since) if state is State.RUNNING else None,
        "restarts": r.restarts,
        "start_duration": r.start_duration,
        "crashes": dict(r.crashes),
        "last_exit": r.last_exit,
        "error": r.last_error,
        "metadata": r.metadata,
        "usage": usage(live),
        "headroom": headroom(live, WatchLimits.from_config(ext.limits)) if live else {},
        "integrity": r.integrity,
        # how its worker was started: forked from the zygote or exec'd (with no worker alive:
        # how the next one would be), and why a worker the zygote could fork was exec'd
        "spawn": spawned[0] if spawned else spawn_mode(argv),
        "spawn_reason": (spawned[1] or None) if spawned else None,
    }


def usage(sample: Sample | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    return {
        "rss": sample.rss,
        "cpu": round(sample.cpu, 4),
        "cpu_seconds": round(sample.cpu_seconds, 4),
        "processes": sample.processes,
        "open_files": sample.open_files,
        "source": sample.source,
        "cgroup_memory": sample.charged,
    }
