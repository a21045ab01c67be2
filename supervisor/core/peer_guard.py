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

__all__ = ["PeerGuard", "read_cgroup", "read_stat"]


def _read(path: str) -> bytes | None:
    # os.open/os.read: a file object costs more than the read, and every connection walks
    # a handful of these
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) from ``/proc/<pid>/stat``; None when it is
    gone or a zombie."""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    fields = data.rpartition(b")")[2].split()  # the name may hold spaces and ")"
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[1]), int(fields[19])  # fields 4 and 22 of stat(5)


def read_cgroup(pid: int) -> str | None:
    """The text of ``/proc/<pid>/cgroup`` (None when it is gone)."""
    data = _read(f"/proc/{pid}/cgroup")
    return data.decode(errors="replace") if data is not None else None


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
        self._core_start: int | None = None

    def known(self) -> Known:
        core = os.getpid()
        if self._core_start is None:
            stat = read_stat(core)
            self._core_start = stat[1] if stat is not None else 0
        runners = self._fleet.runners
        front = self._front()
        return Known(
            core=core,
            core_start=self._core_start,
            workers={r.pid: name for name, r in runners.items() if r.pid is not None},
            front=front.pid if front is not None else None,
            keeper=self._keeper.pid,
            # Cgroups makes "<own>/spctl-<our pid>/" the parent of every worker's group
            cgroup_parent=f"spctl-{core}" if self._limits.cgroups is not None else None,
            cgroup_names={_path_safe(name): name for name in runners},
        )

    def __call__(self, pid: int) -> str | None:
        return refusal(pid, self.known(), read_stat, read_cgroup)
