"""The watchdog's verdict on one sample of a worker's process tree: within limits, or a breach.

Theory of operation: every ``SAMPLE_PERIOD`` seconds the sampler measures each worker's whole
process tree (:class:`Sample`); :func:`evaluate` compares it with the worker's
:class:`WatchLimits` and the :class:`History` of earlier samples, and returns the verdict and
the new history. It is a pure function: no clock (time comes in as ``Sample.at``, monotonic),
no I/O, no psutil.

- memory (tree RSS) and processes (tree size) breach after ``SAMPLES_OVER`` consecutive samples
  *over* the limit (equal is not over). One spike is forgiven; a sustained excess is killed
  within ``SAMPLES_OVER × SAMPLE_PERIOD`` seconds of crossing (0.5 s at 2 × 250 ms).
- cpu (cores used over the interval since the previous sample) breaches when its
  time-weighted average over the last ``CPU_WINDOW`` seconds is *over* the share. Busy bursts
  are what CPU is for: any window may hold share × ``CPU_WINDOW`` CPU-seconds, spent as the
  worker likes; a sustained excess is a breach within one window, and one starved sample on a
  saturated machine only lowers the average a little (an every-sample rule restarted on it).
  Each sample's cores are weighted by its interval (since the sample before it), so irregular
  sweeps average right. A verdict needs a whole window of observation: until the oldest kept
  sample is ``CPU_WINDOW`` old, cpu never breaches. The history keeps only the samples of the
  last window and the one that opens it (about ``CPU_WINDOW / SAMPLE_PERIOD`` + 1 of them).

When several kinds breach in the same sample the verdict names the most urgent one: memory,
then processes, then cpu. The reason text is what the runner records as the worker's end.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Protocol

__all__ = [
    "CPU_WINDOW",
    "SAMPLES_OVER",
    "SAMPLE_PERIOD",
    "Breach",
    "History",
    "LimitsLike",
    "Ok",
    "Sample",
    "Verdict",
    "WatchLimits",
    "evaluate",
    "format_cpu",
    "format_size",
    "headroom",
]

SAMPLE_PERIOD = 0.25
"""Seconds between two sweeps of the watchdog."""
SAMPLES_OVER = 2
"""Consecutive samples over the memory or processes limit that make a breach."""
CPU_WINDOW = 10.0
"""Seconds over which CPU is averaged; the average must be over the share to make a breach."""
_CPU_EPSILON = 1e-9
"""Cores of float noise in a weighted sum: a worker at exactly its share is not over it."""

_Series = tuple[tuple[float, float], ...]  # (at, cores) samples, oldest first

KINDS = ("memory", "processes", "cpu")  # the order of urgency when several breach at once


@dataclass(frozen=True)
class Sample:
    """One measurement of a worker's whole process tree (root and every descendant)."""

    rss: int  # bytes, summed over the tree
    cpu: float  # cores used over the last interval (1.0 = one full core)
    processes: int
    open_files: int
    at: float  # monotonic seconds
    cpu_seconds: float = 0.0  # CPU time of the tree since its worker started (a counter)
    # "processes": the tree found in the process table (/proc); "cgroup": the processes,
    # CPU time and memory charge of the worker's cgroup (rss still sums the processes' RSS)
    source: str = "processes"
    charged: int | None = None  # bytes the worker's cgroup is charged (its memory limit's base)


class LimitsLike(Protocol):
    """What is read of a config ``Limits`` (or anything shaped like it)."""

    @property
    def memory(self) -> int | None: ...
    @property
    def cpu(self) -> float | None: ...
    @property
    def processes(self) -> int | None: ...


@dataclass(frozen=True)
class WatchLimits:
    """The limits the watchdog enforces by killing; None means not watched."""

    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    processes: int | None = None

    @classmethod
    def from_config(cls, limits: LimitsLike, *, enforced: Collection[str] = ()) -> WatchLimits:
        """The watched part of a config ``Limits``; kinds in ``enforced`` are left out.

        ``enforced`` names the kinds the kernel already holds (e.g. ``{"cpu"}`` under a cgroup
        CPU quota, which throttles instead of killing: the watchdog must not kill for it).
        """
        return cls(
            memory=None if "memory" in enforced else limits.memory,
            cpu=None if "cpu" in enforced else limits.cpu,
            processes=None if "processes" in enforced else limits.processes,
        )

    @property
    def empty(self) -> bool:
        """Nothing to watch: the sampler can skip this worker's verdicts."""
        return self.memory is None and self.cpu is None and self.processes is None


@dataclass(frozen=True)
class History:
    """What earlier samples of one worker tell the next verdict. Start with ``History()``."""

    memory_over: int = 0  # consecutive samples over the memory limit
    processes_over: int = 0  # consecutive samples over the processes limit
    cpu: _Series = ()  # (at, cores) of the last CPU_WINDOW and the one sample before it

    @property
    def over(self) -> Mapping[str, int]:
        """Consecutive samples over the limit, per kind."""
        return {"memory": self.memory_over, "processes": self.processes_over}


@dataclass(frozen=True)
class Ok:
    """Within every watched limit (possibly over one, but not for long enough yet)."""


@dataclass(frozen=True)
class Breach:
    """A limit was exceeded for too long: kill the tree and record ``reason``."""

    kind: str  # "memory" | "processes" | "cpu"
    reason: str


Verdict = Ok | Breach


def evaluate(sample: Sample, limits: WatchLimits, history: History) -> tuple[Verdict, History]:
    """Judge one sample against ``limits`` given ``history``; return the verdict and new history."""
    reasons: dict[str, str] = {}

    memory_over = 0
    if limits.memory is not None and sample.rss > limits.memory:
        memory_over = history.memory_over + 1
        if memory_over >= SAMPLES_OVER:
            reasons["memory"] = (
                f"memory limit {format_size(limits.memory)} exceeded "
                f"(rss {format_size(sample.rss)})"
            )

    processes_over = 0
    if limits.processes is not None and sample.processes > limits.processes:
        processes_over = history.processes_over + 1
        if processes_over >= SAMPLES_OVER:
            reasons["processes"] = (
                f"processes limit {limits.processes} exceeded ({sample.processes})"
            )

    cpu: _Series = ()
    if limits.cpu is not None:
        cpu = _trim((*history.cpu, (sample.at, sample.cpu)))
        average = _average(cpu)
        if average is not None and average > limits.cpu + _CPU_EPSILON:
            reasons["cpu"] = (
                f"cpu {format_cpu(limits.cpu)} exceeded: "
                f"{format_cpu(average)} average over {CPU_WINDOW:g}s"
            )

    new = replace(history, memory_over=memory_over, processes_over=processes_over, cpu=cpu)
    for kind in KINDS:
        if kind in reasons:
            return Breach(kind, reasons[kind]), new
    return Ok(), new


def _trim(samples: _Series) -> _Series:
    """``samples`` without those older than the window, except the newest of them, which opens
    the window's first interval. Bounds the history to one window of samples."""
    start = samples[-1][0] - CPU_WINDOW
    first = 0
    while first + 1 < len(samples) and samples[first + 1][0] <= start:
        first += 1
    return samples[first:]


def _average(samples: _Series) -> float | None:
    """Cores used on average over the last ``CPU_WINDOW`` seconds (the newest sample's ``at``
    ends it); None until the oldest sample is that old, i.e. before a whole window is seen.

    Each sample's cores are weighted by its interval (since the sample before it), clipped to
    the window; the oldest sample's own cores describe time before the window and are unused
    (for a new tree they are 0.0, the sampler's "nothing to compare with").
    """
    end = samples[-1][0]
    start = end - CPU_WINDOW
    if samples[0][0] > start:
        return None
    used = sum(
        cores * max(0.0, at - max(before, start)) for (before, _), (at, cores) in pairwise(samples)
    )
    return used / CPU_WINDOW


def headroom(sample: Sample, limits: WatchLimits) -> dict[str, float | None]:
    """The fraction of each limit in use (1.0 = at the limit); None where there is no limit."""

    def used(value: float, limit: float | None) -> float | None:
        return None if limit is None else value / limit

    return {
        "memory": used(sample.rss, limits.memory),
        "cpu": used(sample.cpu, limits.cpu),
        "processes": used(sample.processes, limits.processes),
    }


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(n: int) -> str:
    """Bytes as a short 1024-based size: ``256MiB``, ``1.5GiB``, ``900B``."""
    value = float(n)
    unit = _UNITS[0]
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    if unit == "B":
        return f"{n}B"
    # One decimal below 10 (1.5GiB), whole numbers above (301MiB): short, and precise enough.
    text = f"{value:.1f}" if abs(value) < 9.95 else f"{value:.0f}"
    return f"{text.removesuffix('.0')}{unit}"


def format_cpu(cores: float) -> str:
    """A CPU share as a percentage of one core: 0.5 → ``50%``, 1.5 → ``150%``."""
    return f"{round(cores * 100, 1):g}%"
