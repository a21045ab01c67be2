"""The recent history of every extension, the front and the supervisor (``history`` verb).

Every :data:`~supervisor.rules.history.PERIOD` seconds :meth:`Recorder.run` asks the limits
enforcer for everyone's usage (the same on-demand sampling ``status`` uses, cached for
``USAGE_TTL``, so a status poll in between costs nothing more: a worker in its cgroup is read
from the cgroup's counters, three small files, the others with the /proc sweep), reads the
front's RSS and CPU time from its ``/proc/<pid>/stat`` (one process, no tree to walk) and the
supervisor's own; each becomes one point (memory, CPU, state) in the pure rings of
:mod:`supervisor.rules.history`. The status page and ``spctl top`` draw their sparklines from
:meth:`Recorder.export`. The points fall on a grid of the monotonic clock shared with the
lineage sweep (:func:`~supervisor.core.watchdog.aligned`): both wake the core once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.core.watchdog import aligned
from supervisor.rules.history import PERIOD, Point, Rings
from supervisor.rules.limits import Sample

if TYPE_CHECKING:
    from supervisor.core.fleet import Fleet
    from supervisor.core.runner import Runner
    from supervisor.core.watchdog import LimitsEnforcer

__all__ = ["Recorder"]

# The front's and the supervisor's own series: no extension can be named so (a colon).
_FRONT, _SUPERVISOR = ":front", ":supervisor"


class Recorder:
    def __init__(
        self,
        fleet: Fleet,
        limits: LimitsEnforcer,
        front: Callable[[], Runner | None],
        own: Callable[[], dict[str, Any]],
    ) -> None:
        """``front()``: the front's runner (None without one); ``own()``: the supervisor's
        ``{"rss": bytes, "cpu_seconds": s}``."""
        self.rings = Rings()
        self._fleet, self._limits, self._front, self._own = fleet, limits, front, own
        self._own_cpu = _Rate()
        self._front_cpu = _Rate()

    async def run(self) -> None:
        """Record one point per PERIOD for everyone until cancelled, on the clock grid the
        lineage sweep uses too (one wakeup for both)."""
        while True:
            self.record()
            await anyio.sleep(max(0.0, aligned(PERIOD) - time.monotonic()))

    def record(self) -> None:
        now = time.time()
        runners = self._fleet.runners
        self._limits.refresh_usage(runners, fds=False)  # cgroup counters where there are
        names = [_SUPERVISOR]
        for name, r in runners.items():
            names.append(name)
            self.rings.add(name, _point(now, r.state.value, r.usage if r.pid else None))
        front = self._front()
        if front is not None:
            names.append(_FRONT)
            pid = front.pid
            usage = _proc_usage(pid) if pid else None
            rss, cpu = (None, None) if usage is None else (usage[0], self._front_cpu(pid, usage[1]))
            self.rings.add(_FRONT, Point(at=now, rss=rss, cpu=cpu, state=front.state.value))
        own = self._own()
        cpu = self._own_cpu(0, float(own.get("cpu_seconds") or 0.0))
        self.rings.add(_SUPERVISOR, Point(at=now, rss=own.get("rss"), cpu=cpu, state="running"))
        self.rings.retain(names)

    def export(self, name: str | None = None) -> dict[str, Any]:
        """``{"period", "capacity", "series": {extension: columns}, "front": columns | None,
        "supervisor": columns | None}``; columns: ``at``, ``rss``, ``cpu``, ``state`` lists.
        With ``name``, only that extension's series (and no front or supervisor)."""
        out = self.rings.export(name)
        series = out["series"]
        if name is None:
            out["front"] = series.pop(_FRONT, None)
            out["supervisor"] = series.pop(_SUPERVISOR, None)
        return out


class _Rate:
    """Cores used since the last reading of one process's CPU seconds (None at first, and
    when the pid changed)."""

    def __init__(self) -> None:
        self._last: tuple[int | None, float, float] | None = None  # pid, monotonic, cpu s

    def __call__(self, pid: int | None, cpu_seconds: float) -> float | None:
        at, last = time.monotonic(), self._last
        self._last = (pid, at, cpu_seconds)
        if last is None or last[0] != pid or at <= last[1]:
            return None
        return max(0.0, (cpu_seconds - last[2]) / (at - last[1]))


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_usage(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds) of one process from ``/proc/<pid>/stat``; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rfind(b")") + 2 :].split()  # the name may hold spaces and ")"
        # stat(5) fields 14, 15 (utime, stime) and 24 (rss), counted from field 3 here
        return int(fields[21]) * _PAGE, (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def _point(at: float, state: str, sample: Sample | None) -> Point:
    if sample is None:
        return Point(at=at, rss=None, cpu=None, state=state)
    return Point(at=at, rss=sample.rss, cpu=sample.cpu, state=state)
