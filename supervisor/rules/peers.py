"""Who may use the control socket: operators, never an extension (DESIGN.md §11).

Theory of operation: the socket's file mode lets in our uid and root, and an extension may well
run as either. So each connection's peer pid (SO_PEERCRED) is judged by where the process sits:

1. its ancestry is walked (``/proc/<pid>/stat``'s ppid) up to the supervisor, pid 1 or a
   process older than the supervisor (which cannot descend from it: an operator's shell ends
   the walk after a step or two): a peer that is a worker or descends from one is in that
   extension's process tree;
2. a peer in one of the workers' cgroups (below ``spctl-<core pid>/``) belongs to that
   extension, whatever its ancestry (an extension can double-fork, not leave its cgroup);
3. a peer whose ancestry reaches the supervisor through a direct child that is neither the MCP
   front nor the keeper (workers were caught by 1) is an orphan the supervisor adopted as the
   child subreaper: a process an extension double-forked and left behind.

Operators' ``spctl`` processes descend from a shell, not from the supervisor; the front is the
supervisor's own child and is let in. A peer that cannot be traced (gone, or its ancestry
changing under three walks) is refused: it could have sent a request and exited.

Pure: the /proc readers are passed in and return None for a process that is gone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Known", "refusal"]

_MAX_DEPTH = 4096  # far deeper than any real process tree: a loop in a racing read ends here
_WALKS = 3
_LEAF_NUMBER = re.compile(r"-\d+$")


@dataclass(frozen=True)
class Known:
    """What the supervisor knows of its own processes when a peer connects."""

    core: int  # the supervisor's pid
    core_start: int = 0  # its start time (``/proc/<pid>/stat`` field 22, clock ticks)
    workers: Mapping[int, str] = field(default_factory=dict)  # worker pid → extension name
    front: int | None = None  # the MCP front's pid, when it runs
    keeper: int | None = None  # the keeper's pid
    # The workers' cgroups are the directories below this one ("spctl-<core pid>"), each named
    # ``<extension>-<n>`` with the name made path-safe; None without cgroups.
    cgroup_parent: str | None = None
    cgroup_names: Mapping[str, str] = field(default_factory=dict)  # path-safe name → name


def refusal(
    pid: int,
    known: Known,
    read_stat: Callable[[int], tuple[int, int] | None],
    read_cgroup: Callable[[int], str | None],
) -> str | None:
    """Why peer ``pid`` is refused (the text after "refused: "), or None to let it in.

    ``read_stat(p)``: the parent pid and start time of ``p``; ``read_cgroup(p)``: the text of
    ``/proc/<p>/cgroup``; both None when ``p`` is gone.
    """
    if pid <= 0:
        return "the peer's pid is not visible in the supervisor's pid namespace"
    for _ in range(_WALKS):
        walk = _walk(pid, known, read_stat)
        if walk is not None:
            break
    else:
        return f"cannot trace pid {pid}'s ancestry (its parents keep changing)"
    refused, adopted_by = walk
    if refused is not None:
        return refused
    cgroup = read_cgroup(pid)
    if cgroup is None:
        return f"pid {pid} is gone"
    if (ext := _worker_cgroup(cgroup, known)) is not None:
        return f"pid {pid} is in extension {ext}'s cgroup"
    if adopted_by is not None:
        of = "" if adopted_by == pid else f" descends from pid {adopted_by}, which"
        return f"pid {pid}{of} was adopted by the supervisor: a process an extension left behind"
    return None


def _walk(
    pid: int, known: Known, read_stat: Callable[[int], tuple[int, int] | None]
) -> tuple[str | None, int | None] | None:
    """One walk up from ``pid``: (a refusal or None, the unknown direct child of the core on the
    way: an adopted orphan, or None); None when an ancestor vanished meanwhile (walk again)."""
    p, adopted, depth = pid, None, 0
    while True:
        if (ext := known.workers.get(p)) is not None:
            return f"pid {pid} is in extension {ext}'s process tree", None
        if p == known.core or p <= 1:
            return None, adopted
        if depth > _MAX_DEPTH:
            return f"cannot trace pid {pid}'s ancestry (deeper than {_MAX_DEPTH})", None
        stat = read_stat(p)
        if stat is None:
            return (f"pid {pid} is gone", None) if p == pid else None
        parent, started = stat
        if started < known.core_start:  # older than the supervisor: not one of its descendants
            return None, adopted
        if parent == known.core and p not in (known.front, known.keeper):
            adopted = p
        p, depth = parent, depth + 1


def _worker_cgroup(text: str, known: Known) -> str | None:
    """The extension whose worker cgroup holds the process, from ``/proc/<pid>/cgroup``."""
    if known.cgroup_parent is None:
        return None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        components = parts[2].split("/")
        for i, name in enumerate(components[:-1]):
            if name == known.cgroup_parent and components[i + 1]:
                leaf = _LEAF_NUMBER.sub("", components[i + 1])
                return known.cgroup_names.get(leaf, leaf)
    return None
