"""A worker's usage from its cgroup's own counters: no walk of /proc.

Theory of operation: a worker in a cgroup of its own (:mod:`supervisor.core.cgroup_worker`) has
its whole tree counted by the kernel, so ``status``, ``top``, ``/metrics`` and the history
read three small files instead of sweeping the process table
(:mod:`supervisor.core.sampler`):

- memory: the resident memory of the group's processes (``/proc/<pid>/statm`` of each pid
  the cgroup lists: no tree walk), the same figure the /proc sweep gives; beside it what the
  cgroup is *charged* — ``memory.current`` (v2) or ``memory.usage_in_bytes`` (v1), the number
  the kernel enforces the memory limit on, each page counted once, page cache included, and
  without the pages a worker forked from the zygote shares with it (charged where they were
  first touched);
- CPU: ``usage_usec`` of ``cpu.stat`` (v2) or ``cpuacct.usage`` in ns (v1), the tree's CPU
  time since the cgroup was made (one per worker incarnation: ``cpu_seconds``); cores are its
  change between two readings over the wall time between them (0.0 at the first);
- processes: the pids in ``cgroup.procs``; open descriptors are counted in ``/proc/<pid>/fd``
  of those pids, only when asked (``status``; the history draws memory and CPU only).

So a sample costs one read of ``cgroup.procs``, two counters and one ``statm`` per process.

A counter the setup lacks (no memory or cpuacct hierarchy in v1) reads as 0. Files are read
with one ``os.read`` each: a cgroup file is a few bytes, and the group may vanish between two
reads (then the worker is gone, and :meth:`CgroupMeter.sample` returns None).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.core.cgroup_worker import WorkerCgroup
from supervisor.rules.limits import Sample

__all__ = ["CgroupMeter"]


@dataclass(frozen=True)
class _Files:
    memory: str | None
    cpu: str | None  # v2 cpu.stat (usage_usec on its first line) or v1 cpuacct.usage (ns)
    cpu_ns: bool
    procs: str


def _files(group: WorkerCgroup) -> _Files:
    if group.mode == "cgroup v2":
        d = str(group.paths[0])
        return _Files(f"{d}/memory.current", f"{d}/cpu.stat", False, f"{d}/cgroup.procs")
    memory, cpuacct = group.directory("memory"), group.directory("cpuacct")
    return _Files(
        None if memory is None else f"{memory}/memory.usage_in_bytes",
        None if cpuacct is None else f"{cpuacct}/cpuacct.usage",
        True,
        f"{group.paths[0]}/cgroup.procs",
    )


def _read(path: str, size: int = 256) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, size)]
        while size > 256 and len(chunks[-1]) == size:  # cgroup.procs of a big tree
            chunks.append(os.read(fd, size))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _number(data: bytes | None) -> int:
    """The first integer in ``data`` (``usage_usec 123`` or ``123``); 0 when there is none."""
    if not data:
        return 0
    for word in data.split(None, 2)[:2]:
        if word.isdigit():
            return int(word)
    return 0


@dataclass
class _Last:
    group: WorkerCgroup
    files: _Files
    at: float | None = None
    cpu: float = 0.0


class CgroupMeter:
    """Samples worker cgroups; keeps the last CPU reading of each for the rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, _Last] = {}

    def sample(self, name: str, group: WorkerCgroup, *, fds: bool = True) -> Sample | None:
        """The usage of ``name``'s worker in ``group``; None when the group is gone."""
        last = self._last.get(name)
        if last is None or last.group is not group:
            last = self._last[name] = _Last(group, _files(group))
        files = last.files
        procs = _read(files.procs, 65536)
        if procs is None:
            return None
        pids = [int(p) for p in procs.split()]
        charged = _number(_read(files.memory)) if files.memory else None
        rss = sum(_rss(pid) for pid in set(pids))
        raw = _number(_read(files.cpu)) if files.cpu else 0
        cpu_seconds = raw / 1e9 if files.cpu_ns else raw / 1e6
        at = self._clock()
        cores = 0.0
        if last.at is not None and at > last.at:
            cores = max(0.0, cpu_seconds - last.cpu) / (at - last.at)
        last.at, last.cpu = at, cpu_seconds
        open_files = sum(_count_fds(pid) for pid in pids) if fds else 0
        return Sample(
            rss=rss,
            cpu=cores,
            processes=len(set(pids)),  # v1 may list a pid twice
            open_files=open_files,
            at=at,
            cpu_seconds=cpu_seconds,
            source="cgroup",
            charged=charged,
        )

    def retain(self, names: set[str]) -> None:
        """Forget the workers not in ``names``."""
        for name in self._last.keys() - names:
            del self._last[name]


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (``statm``'s second field); 0 when it is gone."""
    data = _read(f"/proc/{pid}/statm")
    try:
        return int(data.split()[1]) * _PAGE if data else 0
    except (IndexError, ValueError):
        return 0


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
