"""Killing what a worker leaves behind, with nothing but the os module: for the keeper (which
must stay light: it imports only os, sys, signal and time) and for the supervisor.

- :func:`kill_trees`: SIGKILL processes, told apart from later ones with their pids by their
  start time, and their descendants; each is stopped (SIGSTOP) before its children are
  listed, so none forks away between the listing and the kill.
- :func:`marked`: the processes whose environment carries a supervisor's lineage mark
  (``SPCTL_LINEAGE=<pid>.<start>.<serial>``: see :mod:`supervisor.core.orphans`).
- :func:`freeze`, :func:`kill_cgroups`, :func:`remove_cgroups`: every process in a cgroup
  tree, frozen first where a freezer is (v1 ``freezer.state``, v2 ``cgroup.freeze``;
  ``cgroup.kill`` on v2), then the emptied directories, deepest first.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = [
    "LINEAGE",
    "children",
    "freeze",
    "kill_cgroups",
    "kill_trees",
    "lineage_prefix",
    "marked",
    "remove_cgroups",
    "start_time",
]

LINEAGE = "SPCTL_LINEAGE"  # the worker's mark, inherited by what the extension starts


def start_time(pid: int | str) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def lineage_prefix(pid: int) -> str | None:
    """``<pid>.<start>.``: what every worker's mark of supervisor ``pid`` starts with."""
    start = start_time(pid)
    return None if start is None else f"{pid}.{start}."


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except OSError:
        return False


def children(pid: int | str) -> list[int]:
    """Direct children of ``pid`` (``"self"`` too), of every thread; [] when it is gone."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def kill_trees(roots: set[tuple[int, int]] | frozenset[tuple[int, int]]) -> list[int]:
    """SIGKILL each ``(pid, start)`` that is still that process, and its descendants.

    Each is stopped (SIGSTOP) before its children are listed, so none forks away between the
    listing and the kill. Returns the pids signalled.
    """
    stack = [pid for pid, start in roots if pid > 1 and start_time(pid) == start]
    found: list[int] = []
    seen: set[int] = {os.getpid()}
    while stack:
        pid = stack.pop()
        if pid in seen or not _signal(pid, signal.SIGSTOP):
            continue
        seen.add(pid)
        found.append(pid)
        stack.extend(children(pid))
    for pid in found:
        _signal(pid, signal.SIGKILL)
    return found


def marked(needle: bytes) -> set[tuple[int, int]]:
    """Every process whose environment has an entry starting with ``needle``."""
    out: set[tuple[int, int]] = set()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if env.startswith(needle) or b"\0" + needle in env:
            start = start_time(name)
            if start is not None:
                out.add((int(name), start))
    return out


def _write(path: str, value: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(fd, value.encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def freeze(cgroup: str, frozen: bool) -> bool:
    """Freeze (or thaw) a whole subtree: v1 freezer.state, v2 cgroup.freeze."""
    if os.path.exists(f"{cgroup}/freezer.state"):
        state = "FROZEN" if frozen else "THAWED"
        if not _write(f"{cgroup}/freezer.state", state):
            return False
        deadline = time.monotonic() + 0.5
        while frozen and state not in _read(f"{cgroup}/freezer.state"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)  # FREEZING → FROZEN: the kernel has no event for it here
        return True
    return _write(f"{cgroup}/cgroup.freeze", "1" if frozen else "0")


def _tree(cgroup: str) -> list[str]:
    """``cgroup`` and every cgroup beneath it, deepest first (the order to remove them)."""
    out: list[str] = []
    for top, dirs, _ in os.walk(cgroup, topdown=False):
        out.extend(f"{top}/{d}" for d in dirs)
    return [*out, cgroup]


def kill_cgroups(cgroups: list[str], frozen: list[str]) -> None:
    """SIGKILL every member of every watched cgroup tree, then thaw the frozen ones."""
    for cgroup in cgroups:
        if os.path.exists(f"{cgroup}/cgroup.kill"):
            _write(f"{cgroup}/cgroup.kill", "1")  # v2: atomic, forks included
        for path in _tree(cgroup):
            for pid in _read(f"{path}/cgroup.procs").split():
                _signal(int(pid), signal.SIGKILL)
    for cgroup in frozen:
        freeze(cgroup, False)  # frozen tasks die only once thawed


def remove_cgroups(cgroups: list[str]) -> None:
    """Remove the emptied cgroups, deepest first, waiting at most 1 s for members to leave."""
    deadline = time.monotonic() + 1.0
    for cgroup in cgroups:
        for path in _tree(cgroup):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.002)  # tasks leave a cgroup a moment after they die
