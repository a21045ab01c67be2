"""The control socket's peer rule fed from the running supervisor (:mod:`supervisor.rules.peers`).

``PeerGuard(pid)`` gathers what the core knows at that moment (worker pids, the front, the
keeper, whether workers have cgroups) and reads ``/proc`` for the pure rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from supervisor.rules.peers import Known, refusal

if TYPE_CHECKING:
    from supervisor.core.fleet import Fleet
    from supervisor.core.front import Front
    from supervisor.core.keeper import Keeper
    from supervisor.core.watchdog import LimitsEnforcer

__all__ = ["PeerGuard", "read_cgroup", "read_ppid"]


def read_ppid(pid: int) -> int | None:
    """The parent pid from ``/proc/<pid>/stat`` (None when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the name may hold spaces and ")"
    except (OSError, IndexError):
        return None
    if len(fields) < 2 or fields[0] == b"Z":
        return None
    return int(fields[1])


def read_cgroup(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except OSError:
        return None


def _path_safe(name: str) -> str:
    # as Cgroups.create names a worker's group: "<this>-<n>"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]


class PeerGuard:
    """``guard(pid)`` → why that peer is refused, or None (for ``ControlServer(refuse=…)``)."""

    def __init__(
        self,
        fleet: Fleet,
        keeper: Keeper,
        limits: LimitsEnforcer,
        front: Callable[[], Front | None],
    ) -> None:
        self._fleet, self._keeper, self._limits, self._front = fleet, keeper, limits, front

    def known(self) -> Known:
        core = os.getpid()
        runners = self._fleet.runners
        front = self._front()
        return Known(
            core=core,
            workers={r.pid: name for name, r in runners.items() if r.pid is not None},
            front=front.pid if front is not None else None,
            keeper=self._keeper.pid,
            # Cgroups makes "<own>/spctl-<our pid>/" the parent of every worker's group
            cgroup_parent=f"spctl-{core}" if self._limits.cgroups is not None else None,
            cgroup_names={_path_safe(name): name for name in runners},
        )

    def __call__(self, pid: int) -> str | None:
        return refusal(pid, self.known(), read_ppid, read_cgroup)
