"""Limits at run time: the cgroup manager and the watchdog, wired for the runners.

Theory of operation: at start the cgroup support is detected (v2, v1 or none) and, where
there is one, every worker gets a cgroup of its own (limits set, frozen and killed as a whole
on stop, removed when the worker is gone). What the kernel enforces there — memory
(``memory.max``/``memory.limit_in_bytes``, an OOM kill), processes (``pids.max``, a refused
fork) and cpu (a CFS quota, which throttles) — the watchdog leaves to it. It samples, every
``SAMPLE_PERIOD``, only the workers with a limit nothing else holds (no cgroup, or no
controller for that kind), in one sweep of /proc (:mod:`supervisor.core.sampler`), and asks
the pure ``evaluate`` for a verdict; a breach kills that worker's tree through its runner,
with the breach as the recorded reason.

An idle supervisor does no periodic work it does not need (DESIGN §14): the watchdog task
sleeps until the next thing due — a sample of the watched workers, or the lineage sweep
(:mod:`supervisor.core.orphans`, every ``LINEAGE_PERIOD`` while any worker runs) — and with
no worker at all it waits, without a timer, until the lineage says a worker was added or has
exited. ``status``/``top``/``/metrics`` and the history sample everyone on demand (at most
once per ``USAGE_TTL``): a worker confined in its cgroup from the cgroup's own counters
(:mod:`supervisor.core.cgroup_meter`), the others with the /proc sweep.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import structlog

from supervisor.config import Extension
from supervisor.core.cgroup_meter import CgroupMeter
from supervisor.core.cgroups import Cgroups, Support, WorkerCgroup, detect
from supervisor.core.keeper import Keeper
from supervisor.core.orphans import Lineage
from supervisor.core.sampler import Sampler, tree_pids
from supervisor.rules.limits import SAMPLE_PERIOD, Breach, History, WatchLimits, evaluate

if TYPE_CHECKING:
    from supervisor.core.runner import Runner

__all__ = ["LINEAGE_PERIOD", "USAGE_TTL", "LimitsEnforcer", "aligned"]

log = structlog.get_logger("spctl.limits")

USAGE_TTL = 0.5
# Whose each process is (orphans.Lineage.sweep): 1.6 ms for 20 single-process workers on an
# idle machine, 4 ms on a busy one (tests/bench/bench_idle.py), so every 2 s — on the same
# clock grid as the history's point, one wakeup for both. What waits on it: adopting an
# orphan, killing an unattributable one, a cgroup escape (two sweeps: within 4 s); an orphan
# of a worker that exits is handled at that exit, whatever the period.
LINEAGE_PERIOD = 2.0
# The kinds a worker's cgroup enforces, by the controller that does it.
_CONTROLLERS = {"memory": "memory", "processes": "pids", "cpu": "cpu"}


def aligned(period: float, now: float | None = None) -> float:
    """The next multiple of ``period`` on the monotonic clock after ``now``: timers of the
    same period wake the process once, together."""
    now = time.monotonic() if now is None else now
    return (now // period + 1) * period


class LimitsEnforcer:
    def __init__(self, keeper: Keeper | None = None) -> None:
        self.support = Support(mode="none", reason="not started")
        self.cgroups: Cgroups | None = None
        self._keeper = keeper
        # Whose each process is (orphans, escapes): swept by the watchdog task, every worker.
        self.lineage = Lineage(keeper, on_change=self._changed_now)
        self.sampler = Sampler()
        self.meter = CgroupMeter()
        self.history: dict[str, History] = {}
        self._usage_at = 0.0
        self._usage_pids: dict[str, int] = {}
        self._usage_fds = False
        self._changed = anyio.Event()

    @property
    def mode(self) -> str:
        """As reported by ``status --json``: cgroup v2 | cgroup v1 | rlimit+watchdog."""
        return self.support.mode if self.cgroups is not None else "rlimit+watchdog"

    @property
    def reason(self) -> str:
        return self.support.reason

    def start(self, *, enabled: bool = True) -> None:
        self.support = detect(disabled=not enabled)
        if self.support.mode == "none":
            return
        try:
            self.cgroups = Cgroups(self.support)
        except OSError as exc:
            self.support = Support(mode="none", reason=f"cannot create cgroups: {exc}")
            self.cgroups = None
            return
        for swept in self.cgroups.swept:
            name, paths, killed = swept.name, [str(p) for p in swept.paths], swept.killed
            if killed:
                log.warning("stale cgroup emptied", cgroup=name, paths=paths, killed=killed)
            else:
                log.info("stale cgroup removed", cgroup=name, paths=paths)
            if not swept.removed:
                log.warning("stale cgroup not removed", cgroup=name, paths=paths)
        if self._keeper is not None:
            for parent in self.cgroups.parents:  # it empties them if we die
                self._keeper.watch_cgroup(str(parent))

    def close(self) -> None:
        """Kill what is left of every worker's tree, then remove the cgroups."""
        self.lineage.close()
        if self.cgroups is not None:
            self.cgroups.close()
            self.cgroups = None

    # ----- for the runners -----

    def cgroup_for(self, ext: Extension) -> WorkerCgroup | None:
        """A new cgroup for one worker of ``ext``; None without cgroup support."""
        if self.cgroups is None:
            return None
        return self.cgroups.create(ext.name, ext.limits)

    def kill_tree(self, pid: int) -> None:
        for member in tree_pids(pid):
            try:
                os.kill(member, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue

    def watch_limits(self, ext: Extension, pid: int | None = None) -> WatchLimits:
        """What the watchdog must enforce for worker ``pid`` of ``ext``: its limits less what
        the kernel holds for it — the kinds whose controller its cgroup has, once the worker
        is in that cgroup (under a CPU quota the kernel throttles: no kill for CPU; memory and
        processes are refused or OOM-killed by the kernel). Without ``pid``: as for a worker
        in its cgroup."""
        controllers = self.support.controllers if self.cgroups is not None else frozenset()
        if pid is not None and self.lineage.cgroup_of(pid) is None:
            controllers = frozenset()  # no cgroup for this one (refused, or not moved into it)
        enforced = {kind for kind, c in _CONTROLLERS.items() if c in controllers}
        return WatchLimits.from_config(ext.limits, enforced=enforced)

    # ----- the watchdog -----

    def _changed_now(self) -> None:
        self._changed.set()

    def watched(self, runners: Mapping[str, Runner]) -> dict[str, tuple[Runner, WatchLimits]]:
        """The running workers the watchdog must sample, with what it enforces for each."""
        return {
            name: (r, limits)
            for name, r in runners.items()
            if r.pid is not None and not (limits := self.watch_limits(r.ext, r.pid)).empty
        }

    async def watch(self, runners: Mapping[str, Runner]) -> None:
        """Sample the watched workers every SAMPLE_PERIOD and sweep the lineage every
        LINEAGE_PERIOD, each only while there is something to do, until cancelled."""
        tick = time.monotonic()
        sweep_at = aligned(LINEAGE_PERIOD)
        while True:
            watched = self.watched(runners)
            for name in list(self.history):
                if name not in watched:
                    del self.history[name]
                    self.sampler.forget(name)
            now = time.monotonic()
            if not watched:
                tick = now  # a newly watched worker is sampled at once, then every period
            due = [tick + SAMPLE_PERIOD] if watched else []
            if self.lineage.workers:
                due.append(sweep_at)
            changed = self._changed
            if not due:
                await changed.wait()  # no timer at all: a worker added or exited wakes us
                self._changed = anyio.Event()
                continue
            with anyio.move_on_after(max(0.0, min(due) - now)):
                await changed.wait()
                self._changed = anyio.Event()
                continue  # re-plan: a new worker may need sampling
            now = time.monotonic()
            if now >= sweep_at:
                sweep_at = aligned(LINEAGE_PERIOD, now)
                self.lineage.sweep()
            if watched and now >= tick + SAMPLE_PERIOD:
                # A fixed rate: the sweep's own duration does not stretch the period (far
                # behind, after a stall, it starts afresh).
                tick = tick + SAMPLE_PERIOD if now - tick < 2 * SAMPLE_PERIOD else now
                self._sample_watched(self.watched(runners))

    def _sample_watched(self, watched: Mapping[str, tuple[Runner, WatchLimits]]) -> None:
        pids = {name: r.pid for name, (r, _) in watched.items() if r.pid is not None}
        samples = self.sampler.sample(pids, fds=False)  # openFiles is an rlimit, not watched
        for name, sample in samples.items():
            runner, limits = watched[name]
            runner.usage = sample
            verdict, self.history[name] = evaluate(
                sample, limits, self.history.get(name, History())
            )
            if isinstance(verdict, Breach):
                log.warning("limit breached", extension=name, reason=verdict.reason)
                self.history[name] = History()
                runner.breach(verdict.reason)

    def refresh_usage(self, runners: Mapping[str, Runner], *, fds: bool = True) -> None:
        """Sample everyone for ``status``/``top``/the history (cached for USAGE_TTL): a worker
        confined in its cgroup from the cgroup's counters, the others with one /proc sweep.
        ``fds=False`` (the history) skips counting open descriptors."""
        now = time.monotonic()
        pids = {name: r.pid for name, r in runners.items() if r.pid is not None}
        fresh = now - self._usage_at < USAGE_TTL and pids == self._usage_pids
        if fresh and (self._usage_fds or not fds):
            return  # nothing started or stopped since the last sweep, and it is recent
        self._usage_at, self._usage_pids, self._usage_fds = now, pids, fds
        swept: dict[str, int] = {}
        for name, pid in pids.items():
            group = self.lineage.cgroup_of(pid)
            sample = self.meter.sample(name, group, fds=fds) if group is not None else None
            if sample is None:
                swept[name] = pid
            else:
                runners[name].usage = sample
        self.meter.retain(pids.keys() - swept.keys())
        for name, sample in self.sampler.sample(swept, fds=fds).items():
            runners[name].usage = sample
