"""Kernel-enforced limits: one cgroup per worker, beneath the supervisor's own cgroup.

Theory of operation: :func:`detect` (:mod:`supervisor.core.cgroup_detect`) finds, without
writing anything, where our own cgroup lives and whether v2 or v1 lets us create children.
:class:`Cgroups` (one per supervisor, this module) makes ``<own>/<prefix>-<pid>/`` in each
hierarchy and one child below it per worker, a :class:`WorkerCgroup`
(:mod:`supervisor.core.cgroup_worker`: limits, counters, OOM, kill, removal); nothing is ever
created or written outside our own cgroup. When our own v2 cgroup holds processes (systemd
``Delegate=yes``), controllers cannot be enabled for its children, so its processes are
first moved into the leaf ``<own>/<prefix>-supervisor``.

The names of the three modules are all importable from here, as before the split.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import threading
import time
from pathlib import Path

from supervisor.core.cgroup_detect import (
    Hierarchy,
    Mount,
    Support,
    detect,
    parse_mountinfo,
    parse_proc_cgroup,
)
from supervisor.core.cgroup_io import plus as _plus
from supervisor.core.cgroup_io import read as _read
from supervisor.core.cgroup_io import rmdir as _rmdir
from supervisor.core.cgroup_io import write as _write
from supervisor.core.cgroup_worker import WorkerCgroup
from supervisor.core.cgroup_worker import apply_limits as _apply
from supervisor.rules.limits import LimitsLike

__all__ = [
    "Cgroups",
    "Hierarchy",
    "Mount",
    "Support",
    "WorkerCgroup",
    "detect",
    "parse_mountinfo",
    "parse_proc_cgroup",
]


class Cgroups:
    """The supervisor's cgroups: a parent per hierarchy and a child per worker."""

    def __init__(self, support: Support, *, prefix: str = "spctl") -> None:
        """Create ``<own>/<prefix>-<pid>/`` (removing such parents left by dead supervisors).

        Raises OSError when the parent cannot be created or prepared.
        """
        self.support = support
        self._prefix = prefix
        self._parents: dict[Hierarchy, Path] = {}
        # The live worker groups (create and remove run in threads: the lock guards it). A
        # group leaves when it is removed, so a crash loop does not grow it.
        self._children: set[WorkerCgroup] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)  # next() is atomic: create() runs in threads
        try:
            for h in support.hierarchies:
                own = h.path
                if support.mode == "cgroup v2":
                    if own.name == f"{prefix}-supervisor":  # we moved ourselves there before
                        own = own.parent
                    if h.controllers:
                        self._enable_v2(own, h.controllers)
                self._sweep_stale(own)
                parent = own / f"{prefix}-{os.getpid()}"
                parent.mkdir(exist_ok=True)
                self._parents[h] = parent
                if support.mode == "cgroup v2" and h.controllers:
                    _write(parent / "cgroup.subtree_control", _plus(h.controllers))
        except OSError:
            self.close()
            raise

    def __enter__(self) -> Cgroups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sweep_stale(self, own: Path) -> None:
        pattern = re.compile(rf"{re.escape(self._prefix)}-(\d+)")
        for entry in own.iterdir():
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_dir() or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
                continue  # its supervisor is alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            for child in entry.iterdir():
                if child.is_dir():
                    _rmdir(child, 0)
            _rmdir(entry, 0)

    def _enable_v2(self, own: Path, controllers: frozenset[str]) -> None:
        """Enable our controllers for our children. Processes in our own cgroup forbid that
        (no internal processes), so they are first moved into a leaf of it."""
        missing = controllers - set(_read(own / "cgroup.subtree_control").split())
        if not missing:
            return
        try:
            _write(own / "cgroup.subtree_control", _plus(missing))
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            leaf = own / f"{self._prefix}-supervisor"
            leaf.mkdir(exist_ok=True)
            for pid in _read(own / "cgroup.procs").split():
                with contextlib.suppress(ProcessLookupError):
                    _write(leaf / "cgroup.procs", pid)
            _write(own / "cgroup.subtree_control", _plus(missing))

    def create(self, name: str, limits: LimitsLike) -> WorkerCgroup | None:
        """A new cgroup for one worker of ``name`` with ``limits`` set; None in mode "none".

        Raises OSError when the kernel refuses (nothing is left behind then).
        """
        if not self._parents:
            return None
        leaf = f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:64]}-{next(self._numbers)}"
        dirs: dict[str, Path] = {}
        paths: list[Path] = []
        v2 = self.support.mode == "cgroup v2"
        try:
            for h, parent in self._parents.items():
                path = parent / leaf
                path.mkdir()
                paths.append(path)
                for controller in [""] if v2 else sorted(h.controllers):
                    dirs[controller] = path
            group = WorkerCgroup(self.support.mode, dirs, tuple(paths), self._forget)
            _apply(group, limits, self.support.controllers)
        except OSError:
            for path in paths:
                _rmdir(path, 0)
            raise
        with self._lock:
            self._children.add(group)
        return group

    @property
    def tracked(self) -> int:
        """How many worker groups exist (created and not yet removed)."""
        with self._lock:
            return len(self._children)

    def _forget(self, group: WorkerCgroup) -> None:
        with self._lock:
            self._children.discard(group)

    def close(self, timeout: float = 1.0) -> None:
        """Kill what is left in our children, remove them and the parent(s)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            children = list(self._children)
        for group in children:
            if group.pids():
                group.kill(max(0.0, deadline - time.monotonic()))
            group.remove(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._children.clear()
        for parent in self._parents.values():
            _rmdir(parent, deadline)
        self._parents.clear()
