"""The watchdog's verdict on one sample of a worker's process tree: within limits, or a breach.

Theory of operation: every ``SAMPLE_PERIOD`` seconds the sampler measures each worker's whole
process tree (:class:`Sample`); :func:`evaluate` compares it with the worker's
:class:`WatchLimits` and the :class:`History` of earlier verdicts, and returns the verdict and
the new history. It is a pure function: no clock (time comes in as ``Sample.at``, monotonic),
no I/O, no psutil.

- memory (tree RSS) and processes (tree size) breach after ``SAMPLES_OVER`` consecutive samples
  *over* the limit (equal is not over). One spike is forgiven; a sustained excess is killed
  within ``SAMPLES_OVER × SAMPLE_PERIOD`` seconds of crossing (0.5 s at 2 × 250 ms).
- cpu (cores used over the last interval) breaches once every sample for ``CPU_WINDOW``
  seconds has been over the share: busy bursts are what CPU is for, only a sustained excess is
  a breach. A sample at or under the limit resets the streak.

When several kinds breach in the same sample the verdict names the most urgent one: memory,
then processes, then cpu. The reason text is what the runner records as the worker's end.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
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
"""Seconds the CPU share must be exceeded without a break to make a breach."""

KINDS = ("memory", "processes", "cpu")  # the order of urgency when several breach at once


@dataclass(frozen=True)
class Sample:
    """One measurement of a worker's whole process tree (root and every descendant)."""

    rss: int  # bytes, summed over the tree
    cpu: float  # cores used over the last interval (1.0 = one full core)
    processes: int
    open_files: int
    at: float  # monotonic seconds


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
    cpu_since: float | None = None  # when the current streak over the CPU share began

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

    cpu_since: float | None = None
    if limits.cpu is not None and sample.cpu > limits.cpu:
        cpu_since = history.cpu_since if history.cpu_since is not None else sample.at
        if sample.at - cpu_since >= CPU_WINDOW:
            reasons["cpu"] = f"cpu {format_cpu(limits.cpu)} exceeded for {CPU_WINDOW:g}s"

    new = replace(
        history, memory_over=memory_over, processes_over=processes_over, cpu_since=cpu_since
    )
    for kind in KINDS:
        if kind in reasons:
            return Breach(kind, reasons[kind]), new
    return Ok(), new


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
