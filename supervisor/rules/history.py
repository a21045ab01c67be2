"""Recent samples per extension for the status page and ``spctl top``: pure rings, time passed in.

A :class:`Rings` keeps, per name, the last ``capacity`` points of (wall time, memory bytes,
CPU in cores, state), at most one per ``period``-second slot of the clock: a point offered in
the same slot as the last one replaces it (the newest reading wins, the spacing stays). Names
that are no longer offered are dropped by :meth:`Rings.retain`. :meth:`Rings.export` gives the
columns as plain lists (what goes over the control socket as ``history``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CAPACITY", "PERIOD", "Point", "Ring", "Rings", "sparkline"]

PERIOD = 2.0  # seconds between points
CAPACITY = 150  # 5 minutes at PERIOD

_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Point:
    at: float  # wall-clock seconds (time.time())
    rss: int | None  # bytes; None when not running (nothing to measure)
    cpu: float | None  # cores (1.0 = one full core)
    state: str


class Ring:
    """The last ``capacity`` points of one extension, spaced by at least ``period``."""

    def __init__(self, capacity: int = CAPACITY, period: float = PERIOD) -> None:
        if capacity < 1 or period < 0:
            raise ValueError("a ring needs capacity >= 1 and period >= 0")
        self.period = period
        self.points: deque[Point] = deque(maxlen=capacity)

    def add(self, point: Point) -> None:
        """Append ``point``; one in the same ``period`` slot as the last replaces it."""
        last = self.points[-1] if self.points else None
        if last is not None:
            if point.at < last.at:
                return  # the clock went back: keep the order, drop the point
            if self.period > 0 and _slot(point.at, self.period) == _slot(last.at, self.period):
                self.points[-1] = point
                return
        self.points.append(point)

    def export(self) -> dict[str, list[Any]]:
        return {
            "at": [round(p.at, 3) for p in self.points],
            "rss": [p.rss for p in self.points],
            "cpu": [None if p.cpu is None else round(p.cpu, 4) for p in self.points],
            "state": [p.state for p in self.points],
        }


class Rings:
    """One :class:`Ring` per name."""

    def __init__(self, capacity: int = CAPACITY, period: float = PERIOD) -> None:
        self.capacity = capacity
        self.period = period
        self.rings: dict[str, Ring] = {}

    def add(self, name: str, point: Point) -> None:
        ring = self.rings.get(name)
        if ring is None:
            ring = self.rings[name] = Ring(self.capacity, self.period)
        ring.add(point)

    def retain(self, names: Iterable[str]) -> None:
        """Forget every ring whose name is not in ``names``."""
        keep = set(names)
        for name in [n for n in self.rings if n not in keep]:
            del self.rings[name]

    def export(self, name: str | None = None) -> dict[str, Any]:
        """``{"period": s, "capacity": n, "series": {name: columns}}`` (one name, or all)."""
        if name is None:
            rings = self.rings
        else:
            rings = {name: self.rings[name]} if name in self.rings else {}
        return {
            "period": self.period,
            "capacity": self.capacity,
            "series": {n: ring.export() for n, ring in rings.items()},
        }


def _slot(at: float, period: float) -> int:
    return int(at // period)


def sparkline(values: Iterable[float | None], width: int, *, floor: float = 0.0) -> str:
    """The last ``width`` values as unicode blocks, scaled from ``floor`` to their maximum; a
    missing value (None) is a space. An all-equal series is drawn at the lowest block."""
    shown = list(values)[-width:] if width > 0 else []
    known = [v for v in shown if v is not None]
    if not known:
        return " " * len(shown)
    top = max(known)
    span = top - floor
    out = []
    for v in shown:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(_BLOCKS[0])
        else:
            level = int((max(v, floor) - floor) / span * (len(_BLOCKS) - 1) + 0.5)
            out.append(_BLOCKS[min(level, len(_BLOCKS) - 1)])
    return "".join(out)
