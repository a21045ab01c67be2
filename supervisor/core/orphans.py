"""Whose is each process: the descendants of every worker, adopted orphans, cgroup escapes.

Theory of operation: an extension may start processes that leave its worker's process group
(``setsid``) and, after a double fork, its tree: they are re-parented to spctl, the child
subreaper. Nothing of an extension may outlive it, so every such process is attributed to the
worker it came from, and killed with it:

- **Known descendants.** Every ``LINEAGE_PERIOD`` (2 s, :meth:`Lineage.sweep`), each
  worker's tree is read (:class:`~supervisor.core.sampler.ProcessTable`: parents, groups)
  and every member is remembered as ``(pid, start time)``, so a later process with a reused
  pid is never taken for it. A member that leaves the worker's group is told to the keeper
  too, which kills it if spctl dies (``+p``).
- **The lineage mark.** Every worker is started with ``SPCTL_LINEAGE=<spctl pid>.<spctl
  start>.<serial>`` in its environment; the worker keeps it for the extension, so whatever it
  starts inherits it (``/proc/<pid>/environ`` is the environment a process was started with).
  A double fork takes milliseconds, faster than any sweep; the mark still tells whose it is.
  The keeper also kills every process with its supervisor's mark when spctl dies.
- **Adopted orphans.** A child of ours that we did not spawn (not a worker, not the keeper) is
  an orphan re-parented to us. It belongs to the live worker it is known for or whose mark it
  carries, and is watched with that worker's tree from then on. Otherwise — its worker is
  gone, or it is unattributable (no mark, never seen) — it is killed at once, with its
  descendants (each stopped before its children are listed), and the log says so.
- **A worker's end.** :meth:`Lineage.exited` (after its group was reaped, before the runner
  hears of the exit: "stopped" means the whole tree is gone) kills every live known
  descendant and adopted orphan of that worker, then looks for new orphans. ``spctl stop``,
  a crash and a graceful shutdown all end this way; :meth:`Lineage.close` kills what is left.
- **cgroup escapes.** A worker in a cgroup of its own must keep its tree in it (or beneath
  it). A member seen outside it (in any hierarchy) in two sweeps in a row — a root extension
  can write a pid into another cgroup's ``cgroup.procs`` — is killed, and so is the worker,
  with the reason recorded ("pid N (comm) moved out of its cgroup …").
  Where a member is comes from its ``/proc/<pid>/cgroup``, compared with the worker's own
  paths as they were once it was in its group: one small read per member, not a read of
  every hierarchy's ``cgroup.procs`` per worker.

A mark can be forged or scrubbed: a forged one only ties a process to another worker of the
same spctl (it dies with that one); a scrubbed one makes an orphan unattributable, killed on
adoption. Without a child subreaper (``prctl`` refused) nothing is re-parented to us and only
the known descendants are handled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from supervisor.core.cgroups import WorkerCgroup
from supervisor.core.kill import LINEAGE, kill_trees, lineage_prefix, start_time
from supervisor.core.process import WorkerProcess, managed
from supervisor.core.sampler import ProcessTable

__all__ = ["Lineage"]

log = structlog.get_logger("spctl.orphans")

Key = tuple[int, int]  # (pid, start time): one process, never a later one with its pid


class KeeperLike(Protocol):
    @property
    def pid(self) -> int | None: ...
    def watch_process(self, pid: int, start: int) -> None: ...
    def unwatch_process(self, pid: int, start: int) -> None: ...


@dataclass(eq=False)
class _Worker:
    pid: int
    pgid: int
    serial: str
    name: str
    cgroup: WorkerCgroup | None  # only once the worker is in it
    kill: Callable[[str], None]  # the runner kills the worker with this reason
    known: set[Key] = field(default_factory=set)  # descendants seen, adopted orphans included
    adopted: set[Key] = field(default_factory=set)  # orphans re-parented to us, ours now
    suspects: set[Key] = field(default_factory=set)  # outside its cgroup in the last sweep
    # hierarchy id → the worker's cgroup path there, from its /proc/<pid>/cgroup once it was
    # in the group: a member is inside when its own paths are these or beneath (None: ask the
    # group's cgroup.procs instead)
    where: dict[str, str] | None = None


class Lineage:
    """The attribution of processes to workers; one per supervisor, used on the loop thread."""

    def __init__(
        self, keeper: KeeperLike | None = None, on_change: Callable[[], None] | None = None
    ) -> None:
        """``on_change()`` is called when a worker is added or has exited (the watchdog
        re-plans its timers then, instead of polling for new workers)."""
        self._keeper = keeper
        self._on_change = on_change
        self._workers: dict[int, _Worker] = {}
        self._told: set[Key] = set()  # what the keeper watches
        self._killed: set[Key] = set()  # SIGKILLed, maybe not dead yet: not killed twice
        prefix = lineage_prefix(os.getpid())
        self._mark = f"{LINEAGE}={prefix}".encode() if prefix else None

    def add(
        self,
        proc: WorkerProcess,
        name: str,
        cgroup: WorkerCgroup | None,
        kill: Callable[[str], None],
    ) -> None:
        """A worker is up (and in ``cgroup``, if it has one): its tree is watched from now."""
        serial = proc.mark.rsplit(".", 1)[-1]
        worker = _Worker(proc.pid, proc.pgid, serial, name, cgroup, kill)
        if cgroup is not None:
            worker.where = _where(proc.pid, cgroup)
        self._workers[proc.pid] = worker
        if self._on_change is not None:
            self._on_change()

    def exited(self, pid: int) -> None:
        """Worker ``pid`` is gone and its group reaped: kill what is left of its tree."""
        worker = self._workers.pop(pid, None)
        if worker is not None:
            self._kill(worker.known | worker.adopted, worker.name, "its worker exited")
        self._adopt(ProcessTable(()))
        if worker is not None and self._on_change is not None:
            self._on_change()

    @property
    def workers(self) -> int:
        """How many live workers are watched (no sweep is needed without any)."""
        return len(self._workers)

    def cgroup_of(self, pid: int) -> WorkerCgroup | None:
        """The cgroup worker ``pid`` is confined in (it was moved into it); None otherwise."""
        worker = self._workers.get(pid)
        return worker.cgroup if worker is not None else None

    def close(self) -> None:
        """At shutdown: kill every known descendant and orphan left."""
        for pid in list(self._workers):
            self.exited(pid)
        self._adopt(ProcessTable(()))

    def sweep(self) -> None:
        """Learn every worker's tree, adopt (or kill) orphans, catch cgroup escapes."""
        roots = [pid for w in self._workers.values() for pid, _ in (*w.adopted, (w.pid, 0))]
        table = ProcessTable(roots)
        self._killed = {key for key in self._killed if table.start(key[0]) == key[1]}
        self._adopt(table)
        for worker in list(self._workers.values()):
            members = self._learn(worker, table)
            if worker.cgroup is not None:
                self._check_confined(worker, members, table)
        self._tell_keeper(table)

    # -- attribution ----------------------------------------------------------------------

    def _learn(self, worker: _Worker, table: ProcessTable) -> set[Key]:
        """Its tree now (from the worker and from each orphan it adopted); remembered."""
        members: set[Key] = set()
        for root in [worker.pid, *(pid for pid, _ in worker.adopted)]:
            for pid in table.tree(root):
                start = table.start(pid)
                if start is not None and pid != worker.pid:
                    members.add((pid, start))
        alive = {key for key in worker.known if table.start(key[0]) == key[1]}
        worker.known = alive | members
        worker.adopted = {key for key in worker.adopted if key in alive}
        return members

    def _adopt(self, table: ProcessTable) -> None:
        """Our children that we did not spawn: a live worker's, or killed."""
        keeper = self._keeper.pid if self._keeper is not None else None
        for pid in table.children(os.getpid()):
            start = table.start(pid)
            if start is None or managed(pid) or pid == keeper:
                continue
            key = (pid, start)
            if key in self._killed:
                continue
            owner = self._owner(key)
            if owner is None:
                why = "unattributable" if self._serial(pid) is None else "its worker is gone"
                self._kill({key}, None, why)
            elif key not in owner.adopted:
                owner.adopted.add(key)
                owner.known.add(key)
                log.info("orphan adopted", extension=owner.name, pid=pid, comm=_comm(pid))

    def _owner(self, key: Key) -> _Worker | None:
        for worker in self._workers.values():
            if key in worker.known:
                return worker
        serial = self._serial(key[0])
        return next((w for w in self._workers.values() if w.serial == serial), None)

    def _serial(self, pid: int) -> str | None:
        """The serial of our mark in ``pid``'s environment, if it carries one of ours."""
        if self._mark is None:
            return None
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            return None
        for entry in env.split(b"\0"):
            if entry.startswith(self._mark):
                return entry[len(self._mark) :].decode(errors="replace")
        return None

    # -- killing --------------------------------------------------------------------------

    def _kill(self, keys: set[Key], name: str | None, why: str) -> None:
        alive = {key for key in keys if start_time(key[0]) == key[1]} - self._killed
        for pid in kill_trees(alive):
            log.warning("orphan killed", extension=name, pid=pid, reason=why)
            if (start := start_time(pid)) is not None:
                self._killed.add((pid, start))
        for key in keys:
            self._forget(key)

    def _check_confined(self, worker: _Worker, members: set[Key], table: ProcessTable) -> None:
        """Members outside the worker's cgroup in two sweeps in a row: kill them and it."""
        assert worker.cgroup is not None
        tree = members | worker.adopted
        if (start := table.start(worker.pid)) is not None:
            tree.add((worker.pid, start))  # the worker itself may move out too
        if worker.where is not None:  # one read of /proc/<pid>/cgroup per member
            where = worker.where
            outside = {key for key in tree if not _inside(key[0], where)}
        else:
            out = worker.cgroup.outside({pid for pid, _ in tree})
            outside = {key for key in tree if key[0] in out}
        confirmed, worker.suspects = outside & worker.suspects, outside - worker.suspects
        for pid, start in sorted(confirmed):
            if table.start(pid) != start:
                continue
            comm = _comm(pid)
            leaf = worker.cgroup.paths[0].name if worker.cgroup.paths else "?"
            log.warning("escaped its cgroup", extension=worker.name, pid=pid, comm=comm)
            worker.kill(f"pid {pid} ({comm}) moved out of its cgroup {leaf}")  # the reason first
            kill_trees({(pid, start)})

    def _tell_keeper(self, table: ProcessTable) -> None:
        """The keeper watches every live descendant that left its worker's process group."""
        if self._keeper is None:
            return
        wanted: set[Key] = set()
        for worker in self._workers.values():
            for pid, start in worker.known:
                if table.pgrp(pid) != worker.pgid:
                    wanted.add((pid, start))
        for key in wanted - self._told:
            self._keeper.watch_process(*key)
        for key in self._told - wanted:
            self._keeper.unwatch_process(*key)
        self._told = wanted

    def _forget(self, key: Key) -> None:
        if key in self._told and self._keeper is not None:
            self._keeper.unwatch_process(*key)
        self._told.discard(key)


def _cgroup_paths(pid: int) -> dict[str, str] | None:
    """hierarchy id → cgroup path of ``pid`` (``/proc/<pid>/cgroup``); None when it is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        out[hierarchy] = rest.partition(":")[2]
    return out


def _where(pid: int, cgroup: WorkerCgroup) -> dict[str, str] | None:
    """The hierarchies of ``cgroup`` as ``pid`` (in it) sees them: those whose path ends in the
    group's leaf, one per directory of the group; None when that does not add up."""
    paths = _cgroup_paths(pid)
    if paths is None or not cgroup.paths:
        return None
    leaf = cgroup.paths[0].name
    where = {h: p for h, p in paths.items() if p.rsplit("/", 1)[-1] == leaf}
    return where if len(where) == len(cgroup.paths) else None


def _inside(pid: int, where: dict[str, str]) -> bool:
    """Is ``pid`` in the worker's cgroup (or beneath it) in every one of its hierarchies? A
    process that is gone is not outside."""
    paths = _cgroup_paths(pid)
    if paths is None:
        return True
    for hierarchy, path in where.items():
        mine = paths.get(hierarchy)
        if mine is None or (mine != path and not mine.startswith(path + "/")):
            return False
    return True


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
