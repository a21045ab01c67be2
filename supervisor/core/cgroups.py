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
import signal
import threading
import time
from dataclasses import dataclass
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
from supervisor.core.cgroup_io import tree as _tree
from supervisor.core.cgroup_io import write as _write
from supervisor.core.cgroup_worker import WorkerCgroup
from supervisor.core.cgroup_worker import apply_limits as _apply
from supervisor.rules.limits import LimitsLike

__all__ = [
    "Cgroups",
    "Hierarchy",
    "Mount",
    "Support",
    "Swept",
    "WorkerCgroup",
    "detect",
    "parse_mountinfo",
    "parse_proc_cgroup",
]


@dataclass(frozen=True)
class Swept:
    """A stale parent of a dead supervisor: its directories, the pids killed in it, whether
    every directory could be removed."""

    name: str
    paths: tuple[Path, ...]
    killed: list[int]
    removed: bool


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
        self.swept: list[Swept] = []  # what _sweep_stale found, for serve's log
        try:
            owns: list[tuple[Hierarchy, Path]] = []
            for h in support.hierarchies:
                own = h.path
                if support.mode == "cgroup v2":
                    if own.name == f"{prefix}-supervisor":  # we moved ourselves there before
                        own = own.parent
                    if h.controllers:
                        self._enable_v2(own, h.controllers)
                owns.append((h, own))
            self._sweep_stale(owns)
            for h, own in owns:
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

    def _sweep_stale(self, owns: list[tuple[Hierarchy, Path]]) -> None:
        """Empty and remove the ``<prefix>-<pid>`` parents of dead supervisors.

        A supervisor killed with its keeper (or before it) leaves its groups behind, maybe
        with processes in them, maybe frozen: see :meth:`_empty`. What was found is kept in
        ``swept`` for serve's log.
        """
        pattern = re.compile(rf"{re.escape(self._prefix)}-(\d+)")
        stale: dict[str, list[tuple[Hierarchy, Path]]] = {}
        for h, own in owns:
            for entry in _subdirs(own):
                match = pattern.fullmatch(entry.name)
                if not match or int(match.group(1)) == os.getpid():
                    continue
                try:
                    os.kill(int(match.group(1)), 0)
                    continue  # its supervisor is alive
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
                stale.setdefault(entry.name, []).append((h, entry))
        budget = time.monotonic() + 5.0  # serve's start must not wait on stuck tasks for long
        for name, parents in stale.items():
            killed, removed = self._empty(parents) if time.monotonic() < budget else ([], False)
            self.swept.append(Swept(name, tuple(p for _, p in parents), killed, removed))

    def _empty(self, parents: list[tuple[Hierarchy, Path]]) -> tuple[list[int], bool]:
        """Freeze a stale parent (its freezer freezes every cgroup beneath), SIGKILL every
        member of every cgroup beneath it in every hierarchy, thaw them all — a keeper killed
        halfway may have left them frozen, and frozen tasks die only once thawed — then remove
        them, deepest first. Bounded: at most ~2 s however stuck. Returns (pids, removed)."""
        deadline = time.monotonic() + 2.0
        dirs = [d for _, parent in parents for d in _tree(parent)]
        freezers = [p for h, p in parents if "freezer" in h.controllers]
        v2 = self.support.mode == "cgroup v2"

        def members() -> set[int]:
            return {int(p) for d in dirs for p in _read(d / "cgroup.procs").split()}

        killed = members()
        if killed:
            for _, parent in parents:
                if v2 and (parent / "cgroup.kill").exists():
                    _write(parent / "cgroup.kill", 1)  # atomic, forks included
            for freezer in freezers:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "FROZEN")
                while "FROZEN" not in _read(freezer / "freezer.state"):
                    if time.monotonic() > deadline - 1.5:
                        break
                    time.sleep(0.001)
            while pids := members():
                killed |= pids
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for d in dirs:
                    state = "freezer.state" if not v2 else "cgroup.freeze"
                    if (d / state).exists():
                        with contextlib.suppress(OSError):
                            _write(d / state, "THAWED" if not v2 else 0)
                wait = min(deadline, time.monotonic() + 0.05)
                while members() and time.monotonic() < wait:
                    time.sleep(0.002)  # tasks leave a cgroup a moment after they die
                if time.monotonic() > deadline:
                    break
        removed = all([_rmdir(d, deadline) for d in dirs])
        return sorted(killed), removed

    @property
    def parents(self) -> tuple[Path, ...]:
        """Our ``<prefix>-<pid>`` directories, one per hierarchy (the keeper watches them)."""
        return tuple(self._parents.values())

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


def _subdirs(path: Path) -> list[Path]:
    """The directories in ``path``; none when it is gone (or unreadable)."""
    try:
        return [entry for entry in path.iterdir() if entry.is_dir()]
    except OSError:
        return []
