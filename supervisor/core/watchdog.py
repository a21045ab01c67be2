"""Limits at run time: the cgroup manager and the psutil watchdog, wired for the runners.

Theory of operation: at start the cgroup support is detected (v2, v1 or none) and, where
there is one, every worker gets a cgroup of its own (limits set, frozen and killed as a whole
on stop, removed when the worker is gone). Every ``SAMPLE_PERIOD`` the watchdog samples the
process trees of the workers that have a limit it must watch (memory, processes, and cpu where
no cgroup quota throttles it) in one sweep and asks the pure ``evaluate`` for a verdict; a
breach kills that worker's tree through its runner, with the breach as the recorded reason.
Workers without such limits cost the watchdog nothing; ``status``/``top`` sample everyone on
demand (at most once per ``USAGE_TTL``).
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
from supervisor.core.cgroups import Cgroups, Support, WorkerCgroup, detect
from supervisor.core.keeper import Keeper
from supervisor.core.orphans import Lineage
from supervisor.core.sampler import Sampler, tree_pids
from supervisor.rules.limits import SAMPLE_PERIOD, Breach, History, WatchLimits, evaluate

if TYPE_CHECKING:
    from supervisor.core.runner import Runner

__all__ = ["LINEAGE_EVERY", "USAGE_TTL", "LimitsEnforcer"]

log = structlog.get_logger("spctl.limits")

USAGE_TTL = 0.5
# Whose each process is (orphans.Lineage.sweep) is read every other sweep (500 ms): ~5 ms for
# 20 workers of 4 processes on a busy machine, too much to do four times a second for nothing.
LINEAGE_EVERY = 2


class LimitsEnforcer:
    def __init__(self, keeper: Keeper | None = None) -> None:
        self.support = Support(mode="none", reason="not started")
        self.cgroups: Cgroups | None = None
        self._keeper = keeper
        # Whose each process is (orphans, escapes): swept with the watchdog, for every worker.
        self.lineage = Lineage(keeper)
        self.sampler = Sampler()
        self.history: dict[str, History] = {}
        self._usage_at = 0.0
        self._usage_pids: dict[str, int] = {}

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

    def watch_limits(self, ext: Extension) -> WatchLimits:
        controllers = self.support.controllers if self.cgroups is not None else frozenset()
        # Under a cgroup CPU quota the kernel throttles: the watchdog must not kill for CPU.
        enforced = {"cpu"} if "cpu" in controllers else set()
        return WatchLimits.from_config(ext.limits, enforced=enforced)

    # ----- the watchdog -----

    async def watch(self, runners: Mapping[str, Runner]) -> None:
        """Sweep the watched workers every SAMPLE_PERIOD until cancelled."""
        tick = time.monotonic()
        ticks = 0
        while True:
            # A fixed rate: the sweep's own duration does not stretch the period.
            tick += SAMPLE_PERIOD
            now = time.monotonic()
            if tick < now:
                tick = now
            await anyio.sleep(tick - now)
            ticks += 1
            if ticks % LINEAGE_EVERY == 0:
                self.lineage.sweep()
            watched = {
                name: (r, limits)
                for name, r in runners.items()
                if r.pid is not None and not (limits := self.watch_limits(r.ext)).empty
            }
            for name in list(self.history):
                if name not in watched:
                    del self.history[name]
                    self.sampler.forget(name)
            if not watched:
                continue
            pids = {name: r.pid for name, (r, _) in watched.items() if r.pid is not None}
            samples = self.sampler.sample(pids)
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

    def refresh_usage(self, runners: Mapping[str, Runner]) -> None:
        """Sample everyone for ``status``/``top`` (cached for USAGE_TTL)."""
        now = time.monotonic()
        pids = {name: r.pid for name, r in runners.items() if r.pid is not None}
        if now - self._usage_at < USAGE_TTL and pids == self._usage_pids:
            return  # nothing started or stopped since the last sweep, and it is recent
        self._usage_at = now
        self._usage_pids = pids
        for name, sample in self.sampler.sample(pids).items():
            runners[name].usage = sample
