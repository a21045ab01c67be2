"""One worker's cgroup: limits written at creation, usage counters, OOM, kill, removal.

- v2: ``memory.max`` (+ ``memory.swap.max`` 0), ``memory.oom.group`` 1 (an OOM kill takes
  the whole group), ``pids.max``, ``cpu.max``; killed atomically with ``cgroup.kill``.
- v1: a directory in every writable memory, pids, cpu, cpuacct and freezer hierarchy:
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap is no escape),
  ``pids.max``, ``cpu.cfs_quota_us``/``cpu.cfs_period_us``. v1 OOM kills one process, not the
  group; the ``oom_kill`` counter of ``memory.oom_control`` tells that it happened. Killing
  freezes the group (no fork can escape), SIGKILLs every task, then thaws it.

All calls are synchronous and short (milliseconds); :meth:`WorkerCgroup.kill` and
:meth:`WorkerCgroup.remove` wait at most ``timeout`` seconds for the group to empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from supervisor.core.cgroup_io import keyed as _keyed
from supervisor.core.cgroup_io import read as _read
from supervisor.core.cgroup_io import rmdir as _rmdir
from supervisor.core.cgroup_io import write as _write
from supervisor.rules.limits import LimitsLike

__all__ = ["CFS_PERIOD_US", "WorkerCgroup", "apply_limits"]

CFS_PERIOD_US = 100_000


class WorkerCgroup:
    """One worker's cgroup (one directory per hierarchy in v1, a single one in v2)."""

    def __init__(
        self,
        mode: str,
        dirs: Mapping[str, Path],
        paths: tuple[Path, ...],
        on_removed: Callable[[WorkerCgroup], None] | None = None,
    ) -> None:
        self.mode = mode
        self._dirs = dict(dirs)  # controller → directory ("" → the v2 directory)
        self.paths = paths
        self._on_removed = on_removed  # the registry forgets it once its directories are gone

    def _dir(self, controller: str) -> Path | None:
        return self._dirs.get("" if self.mode == "cgroup v2" else controller)

    def directory(self, controller: str) -> Path | None:
        """The group's directory for ``controller`` (v2: the one directory); None without it."""
        return self._dir(controller)

    def add(self, pid: int) -> None:
        """Move process ``pid`` (not its existing children) into the group in every hierarchy.

        Raises ProcessLookupError when it has exited, OSError when the kernel refuses.
        """
        for path in self.paths:
            _write(path / "cgroup.procs", pid)

    def pids(self) -> set[int]:
        """Every process in the group (zombies are not listed)."""
        return {int(p) for path in self.paths for p in _read(path / "cgroup.procs").split()}

    def members(self) -> list[set[int]]:
        """The processes of the group in each of its directories (one per hierarchy), with
        those of the cgroups an extension made beneath it (still under its limits): a process
        moved out of one hierarchy's group shows missing from that set only."""
        out: list[set[int]] = []
        for path in self.paths:
            dirs = [path, *(Path(top) / d for top, sub, _ in os.walk(path) for d in sub)]
            out.append({int(p) for d in dirs for p in _read(d / "cgroup.procs").split()})
        return out

    def outside(self, pids: set[int]) -> set[int]:
        """Those of ``pids`` that are not in the group (nor beneath it) in every hierarchy.

        Cheap in the common case: one read of each directory's ``cgroup.procs``; the cgroups
        an extension made beneath its group are walked only when a pid is missing from it.
        """
        out: set[int] = set()
        for path in self.paths:
            missing = pids - _procs(path)
            if missing:
                below = [Path(top) / d for top, sub, _ in os.walk(path) for d in sub]
                for d in below:
                    missing -= _procs(d)
                out |= missing
        return out

    def kill(self, timeout: float = 1.0) -> bool:
        """SIGKILL every process in the group; True when it is empty within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        if self.mode == "cgroup v2" and (self.paths[0] / "cgroup.kill").exists():
            _write(self.paths[0] / "cgroup.kill", 1)  # atomic, forks included
            return self._wait_empty(deadline)
        while pids := self.pids():
            frozen = self._freeze(True, deadline)  # a frozen task cannot fork a new one
            for pid in pids | self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if frozen:
                self._freeze(False, deadline)  # frozen tasks die only once thawed
            if self._wait_empty(min(deadline, time.monotonic() + 0.05)):
                return True
            if time.monotonic() > deadline:
                return False
        return True

    def _freeze(self, frozen: bool, deadline: float) -> bool:
        """Freeze or thaw the group; False when this setup has no freezer."""
        if self.mode == "cgroup v2":
            state, value = self.paths[0] / "cgroup.freeze", "1" if frozen else "0"
            done = self.paths[0] / "cgroup.events", f"frozen {value}"
        elif (freezer := self._dir("freezer")) is not None:
            state, value = freezer / "freezer.state", "FROZEN" if frozen else "THAWED"
            done = state, value
        else:
            return False
        try:
            _write(state, value)
        except OSError:
            return False
        while done[1] not in _read(done[0]) and time.monotonic() < deadline:
            time.sleep(0.001)
        return True

    def _wait_empty(self, deadline: float) -> bool:
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def oom_killed(self) -> bool:
        """The kernel's OOM killer killed a process of this group (since it was created)."""
        if self.mode == "cgroup v2":
            events = _keyed(_read(self.paths[0] / "memory.events"))
            return events.get("oom_kill", 0) > 0 or events.get("oom_group_kill", 0) > 0
        memory = self._dir("memory")
        return (
            memory is not None
            and _keyed(_read(memory / "memory.oom_control")).get("oom_kill", 0) > 0
        )

    def usage(self) -> dict[str, int]:
        """What the kernel counts: memory, memory_peak (bytes), pids, cpu_usec, throttled_usec,
        nr_throttled, oom_kills; only the keys this setup provides."""
        out: dict[str, int] = {}

        def put(key: str, path: Path | None, name: str, scale: int = 1) -> None:
            text = _read(path / name).strip() if path is not None else ""
            if text.isdigit():
                out[key] = int(text) // scale

        memory, pids, cpu = self._dir("memory"), self._dir("pids"), self._dir("cpu")
        cpu_stat = _keyed(_read(cpu / "cpu.stat")) if cpu is not None else {}
        if self.mode == "cgroup v2":
            put("memory", memory, "memory.current")
            put("memory_peak", memory, "memory.peak")
            events = _keyed(_read(memory / "memory.events")) if memory is not None else {}
            if "oom_kill" in events:
                out["oom_kills"] = events["oom_kill"]
            for key in ("usage_usec", "throttled_usec", "nr_throttled"):
                if key in cpu_stat:
                    out[key.replace("usage_", "cpu_")] = cpu_stat[key]
        else:
            put("memory", memory, "memory.usage_in_bytes")
            put("memory_peak", memory, "memory.max_usage_in_bytes")
            oom = _keyed(_read(memory / "memory.oom_control")) if memory is not None else {}
            if "oom_kill" in oom:
                out["oom_kills"] = oom["oom_kill"]
            put("cpu_usec", self._dir("cpuacct"), "cpuacct.usage", 1000)
            if "throttled_time" in cpu_stat:
                out["throttled_usec"] = cpu_stat["throttled_time"] // 1000
            if "nr_throttled" in cpu_stat:
                out["nr_throttled"] = cpu_stat["nr_throttled"]
        put("pids", pids, "pids.current")
        return out

    def remove(self, timeout: float = 1.0) -> bool:
        """Remove the group's directories (idempotent); True when all are gone.

        Waits up to ``timeout`` s for members to leave; it kills nothing (see :meth:`kill`).
        """
        deadline = time.monotonic() + timeout
        gone = all([_rmdir(path, deadline) for path in self.paths])
        if gone and self._on_removed is not None:
            self._on_removed(self)
        return gone


def apply_limits(group: WorkerCgroup, limits: LimitsLike, controllers: frozenset[str]) -> None:
    memory, pids, cpu = group._dir("memory"), group._dir("pids"), group._dir("cpu")
    if limits.memory is not None and memory is not None and "memory" in controllers:
        if group.mode == "cgroup v2":
            _write(memory / "memory.max", limits.memory)
            if (memory / "memory.swap.max").exists():
                _write(memory / "memory.swap.max", 0)
            _write(memory / "memory.oom.group", 1)
        else:
            _write(memory / "memory.limit_in_bytes", limits.memory)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory)
    if limits.processes is not None and pids is not None and "pids" in controllers:
        _write(pids / "pids.max", limits.processes)
    if limits.cpu is not None and cpu is not None and "cpu" in controllers:
        quota = max(1000, round(limits.cpu * CFS_PERIOD_US))
        if group.mode == "cgroup v2":
            _write(cpu / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        else:
            _write(cpu / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(cpu / "cpu.cfs_quota_us", quota)


def _procs(path: Path) -> set[int]:
    """The pids in ``path/cgroup.procs``; none when it is gone. One open and a read or two."""
    try:
        fd = os.open(path / "cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return set()
    finally:
        os.close(fd)
    return {int(p) for p in b"".join(chunks).split()}
