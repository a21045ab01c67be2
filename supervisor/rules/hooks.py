"""Which state changes are hook events, what a hook is told, and how often it may run.

Pure: the core (:mod:`supervisor.core.hooks`) feeds every transition to :class:`Events` and asks
:class:`RateLimit` before it runs a command. Events:

- ``onCrash``: an incarnation ended by itself (exit, signal, a limit, a failed health check) —
  the state entered ``crashed``;
- ``onFailed``: the state entered ``failed`` (restart intensity exceeded, a load error);
- ``onRecovered``: ``running`` again after a crash (after a backoff, or a ``restart`` of a
  failed one). An operator's stop in between forgets the crash.

Time is passed in (seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from supervisor.rules.states import State, Transition

__all__ = ["RUNS_PER_WINDOW", "WINDOW", "Events", "RateLimit", "Verdict", "payload"]

RUNS_PER_WINDOW = 5  # runs of one event's hook for one extension …
WINDOW = 60.0  # … per this many seconds; the rest are suppressed (and counted)


class Events:
    """The hook events a transition raises, per extension."""

    def __init__(self) -> None:
        self._crashed: set[str] = set()  # crashed since it last ran

    def of(self, name: str, tr: Transition) -> list[str]:
        if tr.to is State.CRASHED:
            self._crashed.add(name)
            return ["onCrash"]
        if tr.to is State.FAILED:
            self._crashed.add(name)
            return ["onFailed"]
        if tr.to is State.RUNNING and name in self._crashed:
            self._crashed.discard(name)
            return ["onRecovered"]
        if tr.to in (State.STOPPED, State.DISABLED) and tr.from_ is not State.CRASHED:
            self._crashed.discard(name)  # the operator stopped it: nothing to recover from
        return []


@dataclass(frozen=True)
class Verdict:
    run: bool
    suppressed: int  # with run: how many were suppressed since the last run (to log it)
    first_suppressed: bool = False  # without run: the first suppressed since the last run


@dataclass
class RateLimit:
    """At most ``runs`` runs per ``window`` seconds for each (extension, event)."""

    runs: int = RUNS_PER_WINDOW
    window: float = WINDOW
    _runs: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _suppressed: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runs < 1 or not self.window > 0:
            raise ValueError("a hook rate limit needs at least one run per positive window")

    def allow(self, extension: str, event: str, now: float) -> Verdict:
        key = (extension, event)
        times = self._runs.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.runs:
            count = self._suppressed.get(key, 0) + 1
            self._suppressed[key] = count
            return Verdict(False, count, first_suppressed=count == 1)
        times.append(now)
        return Verdict(True, self._suppressed.pop(key, 0))

    def suppressed(self, extension: str, event: str) -> int:
        return self._suppressed.get((extension, event), 0)


def payload(
    event: str, extension: str, tr: Transition, *, time: str, restarts: int
) -> dict[str, Any]:
    """What a hook reads on stdin (as JSON)."""
    return {
        "event": event,
        "extension": extension,
        "state": tr.to.value,
        "from": tr.from_.value,
        "reason": tr.reason,
        "time": time,
        "restarts": restarts,
    }
