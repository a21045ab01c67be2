"""Measuring whole process trees for the watchdog: one sweep, every worker. Linux only.

Theory of operation: a sweep reads the part of the process table that can hold a worker's
tree: ``/proc/<pid>/stat`` (parent, process group, start time) of the roots, of the
supervisor's own children and of all their descendants, found through
``/proc/<pid>/task/*/children``. That costs per process of our own tree, not per process on the
machine; where the kernel lacks those files, or where we are not a child subreaper (so orphans
are re-parented elsewhere), the whole table is read instead. Each worker's tree is derived from
it: the root, its descendants by parent, and every member of the root's process group with
*their* descendants. The group catches what the parent links miss: a grandchild whose parent
died is re-parented to the supervisor (a child subreaper) but keeps the worker's group. Each
member is measured from that same read of its ``stat`` — RSS, CPU times and its reaped
children's, as psutil would read them there — and, when asked (``fds``), its open descriptors
from ``/proc/<pid>/fd``: one read per process, no second pass (psutil's ``cpu_times`` and
``memory_info`` read ``stat`` and ``statm`` again); the watchdog does not ask for descriptors
(``openFiles`` is an rlimit, not watched), ``status`` does.

CPU is the change in CPU time between two sweeps divided by the wall time between them, so
the first sample of a tree reports 0.0. Per pid the last CPU time is kept (pids are told apart
by their start time, so a reused pid is a new process). CPU of short-lived children is not
lost: when a member reaps a child, the child's total moves into the member's ``children_*``
times; those deltas count, less what was already counted for members that vanished.

This is the only module that reads other processes' usage for the watchdog; it needs no
psutil.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from supervisor.rules.limits import Sample

__all__ = ["ProcessTable", "Sampler", "tree_pids"]


@dataclass(frozen=True)
class _Row:
    ppid: int
    pgrp: int
    start: int  # clock ticks since boot: with the pid, the identity of a process
    gone: bool = False  # a zombie, or exiting (PF_EXITING): no longer in any cgroup
    zombie: bool = False
    cpu: int = 0  # utime + stime, clock ticks
    reaped: int = 0  # cutime + cstime: its reaped children's totals, clock ticks
    rss: int = 0  # resident pages


_PF_EXITING = 0x4
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _row(data: bytes) -> _Row:
    """``/proc/<pid>/stat`` → row. Raises IndexError/ValueError on garbage."""
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    # fields[i] is stat(5)'s field i + 3: state, ppid, pgrp, … flags (9), utime (14), stime,
    # cutime, cstime (17), starttime (22), rss (24).
    fields = data[data.rfind(b")") + 2 :].split()
    zombie = fields[0] in (b"Z", b"X")
    gone = zombie or bool(int(fields[6]) & _PF_EXITING)
    return _Row(
        int(fields[1]),
        int(fields[2]),
        int(fields[19]),
        gone,
        zombie,
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
        int(fields[21]),
    )


def _read_table(proc: str = "/proc") -> dict[int, _Row]:
    """pid → (parent, group, start) for every process; unreadable ones are skipped."""
    table: dict[int, _Row] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # it exited after the directory listing
            continue
        try:
            table[int(entry.name)] = _row(data)
        except (IndexError, ValueError):
            continue
    return table


def _read_row(pid: int, proc: str = "/proc") -> _Row | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return _row(data)
    except (IndexError, ValueError):
        return None


def _children(pid: int | str) -> list[int] | None:
    """Children of ``pid`` from ``/proc/<pid>/task/*/children``; None without that file."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended
            return None  # the kernel has no CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            continue
    return out


def _is_subreaper() -> bool:
    """Are orphans of our descendants re-parented to us (PR_GET_CHILD_SUBREAPER)?"""
    import ctypes

    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(37, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return bool(flag.value)


def _tree_table(roots: Iterable[int]) -> dict[int, _Row]:
    """Like ``_read_table`` but only for what can belong to a worker's tree: the roots, our own
    children (workers, and orphans re-parented to us, which keep their worker's group) and
    their descendants. Costs per process of *our* tree, not per process on the machine."""
    own = _children("self")
    if own is None or not _is_subreaper():
        return _read_table()  # orphans would be re-parented elsewhere: look everywhere
    table: dict[int, _Row] = {}
    stack = [*roots, *own]
    while stack:
        pid = stack.pop()
        if pid in table:
            continue
        row = _read_row(pid)
        if row is None:
            continue
        table[pid] = row
        stack.extend(_children(pid) or ())
    return table


def _members(root: int, table: Mapping[int, _Row], index: _Index) -> list[int]:
    """The tree of ``root``: root, descendants, and the root's process group with theirs."""
    seen: set[int] = set()
    order: list[int] = []
    stack = list(index.groups.get(root, ()))
    if root in table:
        stack.append(root)  # popped first
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        order.append(pid)
        stack.extend(index.children.get(pid, ()))
    return order


@dataclass
class _Index:
    children: dict[int, list[int]] = field(default_factory=dict)
    groups: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Mapping[int, _Row]) -> _Index:
        index = cls()
        for pid, row in table.items():
            index.children.setdefault(row.ppid, []).append(pid)
            index.groups.setdefault(row.pgrp, []).append(pid)
        return index


class ProcessTable:
    """One read of the part of the process table that can hold our workers' trees (and the
    orphans re-parented to us): for :mod:`supervisor.core.orphans`."""

    def __init__(self, roots: Iterable[int]) -> None:
        self._rows = _tree_table(roots)
        self._index = _Index.of(self._rows)

    def tree(self, root: int) -> list[int]:
        """``root`` and its tree (descendants, its group and theirs), as the sampler sees it."""
        return _members(root, self._rows, self._index)

    def children(self, pid: int) -> list[int]:
        return list(self._index.children.get(pid, ()))

    def start(self, pid: int) -> int | None:
        """The start time of a live process (None when absent, a zombie or exiting)."""
        row = self._rows.get(pid)
        return None if row is None or row.gone else row.start

    def pgrp(self, pid: int) -> int | None:
        row = self._rows.get(pid)
        return None if row is None else row.pgrp


def tree_pids(root: int) -> list[int]:
    """``root`` (if it still exists) and every process of its tree, root first; for killing."""
    table = _tree_table([root])
    return _members(root, table, _Index.of(table))


@dataclass(frozen=True)
class _Cpu:
    own: float  # user + system seconds of the process itself
    reaped: float  # children_user + children_system: its reaped children's totals


@dataclass
class _Tree:
    at: float | None = None
    cpu: dict[tuple[int, int], _Cpu] = field(default_factory=dict)
    total: float = 0.0  # CPU seconds over every sweep since the tree was first seen


class Sampler:
    """Samples many process trees in one sweep; keeps what CPU deltas need between sweeps."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._trees: dict[str, _Tree] = {}

    def sample(self, roots: Mapping[str, int], *, fds: bool = True) -> dict[str, Sample]:
        """name → sample of the tree rooted at that pid. Names whose root is gone are left out.
        ``fds=False``: open descriptors are not counted (``open_files`` is 0)."""
        table = _tree_table(roots.values())
        index = _Index.of(table)
        at = self._clock()
        result: dict[str, Sample] = {}
        for name, root in roots.items():
            if root not in table:
                continue
            pids = _members(root, table, index)
            result[name] = self._measure(name, [(pid, table[pid]) for pid in pids], at, fds)
        return result

    def forget(self, name: str) -> None:
        """Drop what is kept about ``name`` (its worker is gone; a new one starts afresh)."""
        self._trees.pop(name, None)

    def _measure(
        self, name: str, rows: Iterable[tuple[int, _Row]], at: float, count_fds: bool
    ) -> Sample:
        tree = self._trees.setdefault(name, _Tree())
        rss = processes = fds = 0
        own = reaped = 0.0
        now: dict[tuple[int, int], _Cpu] = {}
        for pid, row in rows:
            processes += 1  # a zombie too: it still holds a pid (and counts against pids.max)
            if row.zombie:
                continue
            key = (pid, row.start)
            rss += row.rss * _PAGE
            if count_fds:
                fds += _num_fds(pid)
            cpu = now[key] = _Cpu(row.cpu / _TICKS, row.reaped / _TICKS)
            before = tree.cpu.get(key)
            if before is None:
                # New since the last sweep: all its CPU time falls in this interval.
                own += cpu.own
                reaped += cpu.reaped
            else:
                own += max(0.0, cpu.own - before.own)
                reaped += max(0.0, cpu.reaped - before.reaped)
        vanished = sum(c.own + c.reaped for k, c in tree.cpu.items() if k not in now)
        used = own + max(0.0, reaped - vanished)
        cores = 0.0
        if tree.at is not None and at > tree.at:
            cores = used / (at - tree.at)
        tree.at, tree.cpu = at, now
        tree.total += used
        return Sample(
            rss=rss, cpu=cores, processes=processes, open_files=fds, at=at, cpu_seconds=tree.total
        )


def _num_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or another user's
        return 0
