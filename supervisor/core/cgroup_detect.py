"""Where our cgroups are and what we may do there: cgroup v2 or v1 discovery, read-only.

Theory of operation: :func:`detect` reads ``/proc/self/cgroup`` and ``/proc/self/mountinfo``
(no writes) and finds where *our own* cgroup lives in each hierarchy and whether we may create
children there. It prefers cgroup v2 when the memory controller can be delegated to our
children, then cgroup v1 when its memory, pids or cpu controller is writable, else ``none``.
``SPCTL_CGROUPS`` = ``off`` | ``v1`` | ``v2`` | ``auto`` (default) overrides the choice.
The result, :class:`Support`, is what :class:`supervisor.core.cgroups.Cgroups` builds on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.core.cgroup_io import read as _read

__all__ = [
    "LIMITING",
    "V1_CONTROLLERS",
    "Hierarchy",
    "Mount",
    "Support",
    "detect",
    "parse_mountinfo",
    "parse_proc_cgroup",
]


V1_CONTROLLERS = frozenset({"memory", "pids", "cpu", "cpuacct", "freezer"})
LIMITING = frozenset({"memory", "pids", "cpu"})  # what makes a setup worth using
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Hierarchy:
    """Our own cgroup in one hierarchy and the controllers we use there."""

    controllers: frozenset[str]
    path: Path


@dataclass(frozen=True)
class Support:
    """What the kernel lets us do, found once at start."""

    mode: str  # "cgroup v2" | "cgroup v1" | "none"
    reason: str
    hierarchies: tuple[Hierarchy, ...] = ()

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset().union(*(h.controllers for h in self.hierarchies))


def detect(
    disabled: bool = False, environ: Mapping[str, str] | None = None, *, proc: Path = Path("/proc")
) -> Support:
    """Find the strongest usable cgroup setup; never writes anything."""
    env = os.environ if environ is None else environ
    choice = env.get("SPCTL_CGROUPS", "auto").strip().lower() or "auto"
    if disabled:
        return Support("none", "cgroups disabled by configuration")
    if choice in {"off", "0", "no", "false"}:
        return Support("none", f"SPCTL_CGROUPS={env['SPCTL_CGROUPS']}")
    if choice not in {"auto", "v1", "v2"}:
        return Support("none", f"SPCTL_CGROUPS={env['SPCTL_CGROUPS']} is not off|v1|v2|auto")
    try:
        own = parse_proc_cgroup((proc / "self/cgroup").read_text())
        mounts = parse_mountinfo((proc / "self/mountinfo").read_text())
    except OSError as e:
        return Support("none", f"cannot read /proc: {e.strerror}")
    attempts = {"v2": _detect_v2, "v1": _detect_v1}
    why: list[str] = []
    for name in ("v2", "v1") if choice == "auto" else (choice,):
        found = attempts[name](own, mounts, require_memory=choice == "auto")
        if isinstance(found, Support):
            return Support(found.mode, "; ".join([found.reason, *why]), found.hierarchies)
        why.append(f"{name}: {found}")
    if os.geteuid() != 0 and choice == "auto":
        why.insert(0, "not root")
    return Support("none", "; ".join(why))


@dataclass(frozen=True)
class Mount:
    root: str  # the cgroup path mounted at ``point``
    point: Path
    fstype: str
    options: frozenset[str]  # super options: for v1, the controllers of the hierarchy


def parse_proc_cgroup(text: str) -> list[tuple[frozenset[str], str]]:
    """``/proc/self/cgroup`` → (controllers, path) per hierarchy; v2 has no controllers."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((frozenset(c for c in parts[1].split(",") if c), parts[2]))
    return out


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of ``/proc/self/mountinfo``."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in {"cgroup", "cgroup2"}:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        out.append(Mount(fields[3], Path(point), tail[0], frozenset(tail[2].split(","))))
    return out


def _resolve(mount: Mount, path: str) -> Path | None:
    """The directory of cgroup ``path`` under ``mount``, None when the mount does not show it."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return mount.point / path[len(root) :].lstrip("/")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path / "cgroup.procs", os.W_OK)


def _detect_v2(
    own: list[tuple[frozenset[str], str]], mounts: list[Mount], *, require_memory: bool
) -> Support | str:
    paths = [p for controllers, p in own if not controllers]
    dirs = [d for m in mounts if m.fstype == "cgroup2" for p in paths if (d := _resolve(m, p))]
    if not dirs:
        return "no cgroup2 mount shows our cgroup"
    path = dirs[0]
    if not _writable(path):
        return f"{path} is not writable"
    available = frozenset(_read(path / "cgroup.controllers").split()) & LIMITING
    if require_memory and "memory" not in available:
        return f"no memory controller in {path}"
    if blocker := _v2_blocker(path, available):
        return blocker
    return Support(
        "cgroup v2",
        f"{path} is writable; controllers: {', '.join(sorted(available)) or 'none'}",
        (Hierarchy(available, path),),
    )


def _v2_blocker(own: Path, controllers: frozenset[str]) -> str | None:
    """Why controllers cannot be enabled for our children, or None when they can.

    A non-root cgroup with processes in it cannot enable controllers for children. Ours may be
    emptied into a leaf (see :meth:`Cgroups._enable_v2`), but only when every process in it is
    ours: that is a delegated cgroup (systemd ``Delegate=yes``); a login session's is not.
    """
    if controllers <= set(_read(own / "cgroup.subtree_control").split()):
        return None
    if not (own / "cgroup.type").exists():
        return None  # the root cgroup: exempt from the no-internal-processes rule
    strangers = [p for p in _read(own / "cgroup.procs").split() if not _ours(int(p))]
    if strangers:
        return f"{own} holds {len(strangers)} processes that are not ours: not delegated to us"
    return None


def _ours(pid: int) -> bool:
    """``pid`` is this process or one of its descendants."""
    me = os.getpid()
    for _ in range(64):  # a chain of parents; bounded against a loop through reused pids
        if pid == me:
            return True
        if pid <= 1:
            return False
        try:
            pid = int(_read(Path(f"/proc/{pid}/stat")).rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            return False
    return False


def _detect_v1(
    own: list[tuple[frozenset[str], str]], mounts: list[Mount], *, require_memory: bool
) -> Support | str:
    found: list[Hierarchy] = []
    for controllers, path in own:
        wanted = controllers & V1_CONTROLLERS
        if not wanted:
            continue
        for mount in mounts:
            where = _resolve(mount, path) if mount.fstype == "cgroup" else None
            if where is not None and controllers <= mount.options and _writable(where):
                found.append(Hierarchy(wanted, where))
                break
    usable = frozenset().union(*(h.controllers for h in found))
    if not usable & LIMITING:
        return "no writable memory, pids or cpu hierarchy"
    return Support("cgroup v1", f"writable controllers: {', '.join(sorted(usable))}", tuple(found))
