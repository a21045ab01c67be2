"""Kernel-enforced limits: one cgroup per worker, beneath the supervisor's own cgroup.

Theory of operation: :func:`detect` reads ``/proc/self/cgroup`` and ``/proc/self/mountinfo``
(no writes) and finds where *our own* cgroup lives in each hierarchy and whether we may create
children there. It prefers cgroup v2 when the memory controller can be delegated to our
children, then cgroup v1 when its memory, pids or cpu controller is writable, else ``none``.
``SPCTL_CGROUPS`` = ``off`` | ``v1`` | ``v2`` | ``auto`` (default) overrides the choice.

:class:`Cgroups` (one per supervisor) makes ``<own>/<prefix>-<pid>/`` in each hierarchy and
one child below it per worker (:class:`WorkerCgroup`); nothing is ever created or written
outside our own cgroup. Per worker:

- v2: ``memory.max`` (+ ``memory.swap.max`` 0), ``memory.oom.group`` 1 (an OOM kill takes
  the whole group), ``pids.max``, ``cpu.max``; killed atomically with ``cgroup.kill``. When our
  own cgroup holds processes (systemd ``Delegate=yes``), controllers cannot be enabled for its
  children, so its processes are first moved into the leaf ``<own>/<prefix>-supervisor``.
- v1: a child in every writable memory, pids, cpu, cpuacct and freezer hierarchy:
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap is no escape),
  ``pids.max``, ``cpu.cfs_quota_us``/``cpu.cfs_period_us``. v1 OOM kills one process, not the
  group; the ``oom_kill`` counter of ``memory.oom_control`` tells that it happened. Killing
  freezes the group (no fork can escape), SIGKILLs every task, then thaws it.

Files are written with a single ``os.write`` so the kernel's errno surfaces at once. All
calls are synchronous and short (milliseconds); :meth:`WorkerCgroup.kill` and
:meth:`WorkerCgroup.remove` wait at most ``timeout`` seconds for the group to empty.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control) → dict."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _rmdir(path: Path, deadline: float) -> bool:
    """rmdir, retrying while the cgroup still has members (they are dying); False on timeout."""
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.002)  # tasks leave a cgroup a moment after they are killed


class WorkerCgroup:
    """One worker's cgroup (one directory per hierarchy in v1, a single one in v2)."""

    def __init__(self, mode: str, dirs: Mapping[str, Path], paths: tuple[Path, ...]) -> None:
        self.mode = mode
        self._dirs = dict(dirs)  # controller → directory ("" → the v2 directory)
        self.paths = paths

    def _dir(self, controller: str) -> Path | None:
        return self._dirs.get("" if self.mode == "cgroup v2" else controller)

    def add(self, pid: int) -> None:
        """Move process ``pid`` (not its existing children) into the group in every hierarchy.

        Raises ProcessLookupError when it has exited, OSError when the kernel refuses.
        """
        for path in self.paths:
            _write(path / "cgroup.procs", pid)

    def pids(self) -> set[int]:
        """Every process in the group (zombies are not listed)."""
        return {int(p) for path in self.paths for p in _read(path / "cgroup.procs").split()}

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
        return all([_rmdir(path, deadline) for path in self.paths])


class Cgroups:
    """The supervisor's cgroups: a parent per hierarchy and a child per worker."""

    def __init__(self, support: Support, *, prefix: str = "spctl") -> None:
        """Create ``<own>/<prefix>-<pid>/`` (removing such parents left by dead supervisors).

        Raises OSError when the parent cannot be created or prepared.
        """
        self.support = support
        self._prefix = prefix
        self._parents: dict[Hierarchy, Path] = {}
        self._children: list[WorkerCgroup] = []
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
            group = WorkerCgroup(self.support.mode, dirs, tuple(paths))
            _apply(group, limits, self.support.controllers)
        except OSError:
            for path in paths:
                _rmdir(path, 0)
            raise
        self._children.append(group)
        return group

    def close(self, timeout: float = 1.0) -> None:
        """Kill what is left in our children, remove them and the parent(s)."""
        deadline = time.monotonic() + timeout
        for group in list(self._children):
            if group.pids():
                group.kill(max(0.0, deadline - time.monotonic()))
            group.remove(max(0.0, deadline - time.monotonic()))
        self._children.clear()
        for parent in self._parents.values():
            _rmdir(parent, deadline)
        self._parents.clear()


def _plus(controllers: frozenset[str] | set[str]) -> str:
    return " ".join(f"+{c}" for c in sorted(controllers))


def _apply(group: WorkerCgroup, limits: LimitsLike, controllers: frozenset[str]) -> None:
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
