"""The recent history of every extension, the front and the supervisor (``history`` verb).

Every :data:`~supervisor.rules.history.PERIOD` seconds :meth:`Recorder.run` asks the limits
enforcer for everyone's usage (the same on-demand sweep ``status`` uses, cached for
``USAGE_TTL``, so a status poll in between costs nothing more), measures the front's process
tree with a sampler of its own, and reads the supervisor's RSS and CPU time; each becomes one
point (memory, CPU, state) in the pure rings of :mod:`supervisor.rules.history`. The status page
and ``spctl top`` draw their sparklines from :meth:`Recorder.export`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.core.sampler import Sampler
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
        self._sampler = Sampler()  # the front's tree only: the fleet's is the enforcer's
        self._last_cpu: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    async def run(self) -> None:
        """Record one point per PERIOD for everyone until cancelled."""
        while True:
            self.record()
            await anyio.sleep(PERIOD)

    def record(self) -> None:
        now = time.time()
        runners = self._fleet.runners
        self._limits.refresh_usage(runners)
        names = [_SUPERVISOR]
        for name, r in runners.items():
            names.append(name)
            self.rings.add(name, _point(now, r.state.value, r.usage if r.pid else None))
        front = self._front()
        if front is not None:
            names.append(_FRONT)
            pid = front.pid
            sample = self._sampler.sample({_FRONT: pid}).get(_FRONT) if pid else None
            if sample is None:
                self._sampler.forget(_FRONT)
            self.rings.add(_FRONT, _point(now, front.state.value, sample))
        rss, cpu = self._own_point()
        self.rings.add(_SUPERVISOR, Point(at=now, rss=rss, cpu=cpu, state="running"))
        self.rings.retain(names)

    def _own_point(self) -> tuple[int | None, float | None]:
        own = self._own()
        at, cpu_s = time.monotonic(), float(own.get("cpu_seconds") or 0.0)
        cpu = None
        if self._last_cpu is not None and at > self._last_cpu[0]:
            cpu = max(0.0, (cpu_s - self._last_cpu[1]) / (at - self._last_cpu[0]))
        self._last_cpu = (at, cpu_s)
        return own.get("rss"), cpu

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


def _point(at: float, state: str, sample: Sample | None) -> Point:
    if sample is None:
        return Point(at=at, rss=None, cpu=None, state=state)
    return Point(at=at, rss=sample.rss, cpu=sample.cpu, state=state)
