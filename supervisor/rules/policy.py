"""Restart decisions: restart now, restart later, give up, or stay stopped.

Theory of operation: a pure function, :func:`decide`, judges each exit the runner did not ask
for. It reads and updates a :class:`RestartHistory` (plain data, one per extension, changed only
by its own methods) and returns a :class:`Restart`, :class:`GiveUp` or :class:`Stay`. No clock,
no I/O: time comes in as monotonic seconds and randomness as an injected ``rand``.

The rules, in order:

1. ``policy: never`` → Stay, whatever the exit. ``on-failure`` and a clean exit → Stay.
2. Otherwise the exit is a crash, and *every* crash counts toward the intensity limit
   (Erlang/OTP's MaxR/MaxT, systemd's StartLimitBurst): more than ``max_restarts`` crashes
   within ``window`` seconds → GiveUp.
3. A load error (``Exit.load_error``: the worker *reported* one before exiting; a bare exit
   status 3 is an ordinary crash) gives up after ``load_error_tries`` in a row. Load errors
   are usually deterministic (an ImportError), but a deploy caught mid-write is not; so a load
   error *is* retried, never immediately: it waits at least one ``backoff`` step.
4. Backoff: a one-off crash after a healthy run heals at once. The first crash ever, and the
   first crash after a run (time in ``running``) of at least ``reset_after``, restart with delay
   0 and start a new streak. Each further crash in the streak waits
   ``backoff × 2^(n-1)`` (n = crashes in the streak beyond the first), capped at
   ``max_backoff``, times a jitter factor uniform in ``[1-jitter, 1+jitter]``, capped again.

How the runner uses it::

    history.record_start(now)                  # spawning
    history.record_running(now)                # ready
    history.record_exit(exit, now)             # it ended (optional: decide() does it if not)
    d = decide(settings, history, exit, now)   # we did not ask it to stop: count it, decide
    history.reset()                            # operator restart clears failed

A requested stop never comes to :func:`decide`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.config.schema import RESTART_POLICIES, RestartConfig
from supervisor.rules.exits import Exit, describe

__all__ = [
    "POLICIES",
    "Decision",
    "GiveUp",
    "Restart",
    "RestartHistory",
    "Stay",
    "backoff_delay",
    "decide",
]

POLICIES = frozenset(RESTART_POLICIES)

# 2**64 × any sane backoff is far past any max_backoff; the cap keeps float maths finite.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Restart:
    """Start it again after ``delay`` seconds; ``attempt`` is the crash's place in its streak."""

    delay: float
    attempt: int
    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Stop trying: the worker goes to ``failed``."""

    reason: str


@dataclass(frozen=True)
class Stay:
    """The policy says no restart: the worker goes to ``stopped``."""

    reason: str


Decision = Restart | GiveUp | Stay


@dataclass
class RestartHistory:
    """What one extension's past runs tell the policy. Changed only by its methods."""

    consecutive: int = 0
    """Crashes in the current streak (0: none since the last reset)."""
    crash_times: deque[float] = field(default_factory=deque)
    """When each crash inside the intensity window happened (older ones are dropped)."""
    load_errors: int = 0
    """Load errors in a row (a start that reached ``running`` breaks the row)."""
    started_at: float | None = None
    running_at: float | None = None
    last_run: float = 0.0
    """Seconds the last ended run spent in ``running`` (0 if it never got there)."""
    last_exit: Exit | None = None
    _unjudged: bool = field(default=False, init=False, repr=False)
    """An unrequested exit was recorded and decide() has not judged it yet."""

    def record_start(self, now: float) -> None:
        """A worker process is being spawned: a new run opens."""
        self.started_at = now
        self.running_at = None

    def record_running(self, now: float) -> None:
        """The worker is ready; it loaded, so the row of load errors is broken."""
        self.running_at = now
        self.load_errors = 0

    def record_exit(self, exit: Exit, now: float) -> None:
        """The run ended: note how long it ran and whether it was another load error."""
        self.last_run = now - self.running_at if self.running_at is not None else 0.0
        self.started_at = self.running_at = None
        self.last_exit = exit
        if not exit.requested:
            self.load_errors = self.load_errors + 1 if exit.load_error else 0
            self._unjudged = True

    def record_crash(self, now: float, settings: RestartConfig) -> None:
        """Count a crash (an exit that will be restarted or given up on); used by decide()."""
        healed = self.consecutive == 0 or self.last_run >= settings.reset_after
        self.consecutive = 1 if healed else self.consecutive + 1
        self.crash_times.append(now)
        while self.crash_times and self.crash_times[0] <= now - settings.window:
            self.crash_times.popleft()

    def reset(self) -> None:
        """Forget every crash (an operator restart clears ``failed``)."""
        self.consecutive = 0
        self.crash_times.clear()
        self.load_errors = 0
        self.last_run = 0.0
        self.last_exit = None
        self._unjudged = False


def backoff_delay(
    settings: RestartConfig, n: int, rand: Callable[[], float] = random.random
) -> float:
    """The wait before restart number ``n`` beyond the first of a streak (n <= 0: no wait).

    ``backoff × 2^(n-1)`` capped at ``max_backoff``, times a factor uniform in
    ``[1-jitter, 1+jitter]`` drawn from ``rand()`` (in [0, 1); 0.5 gives factor 1), capped again.
    """
    if n <= 0:
        return 0.0
    base = min(settings.backoff * 2.0 ** min(n - 1, _MAX_EXPONENT), settings.max_backoff)
    factor = 1.0 + settings.jitter * (2.0 * rand() - 1.0)
    return min(base * factor, settings.max_backoff)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def decide(
    settings: RestartConfig,
    history: RestartHistory,
    exit: Exit,
    now: float,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Judge an exit the runner did not ask for, count it in ``history``, and decide.

    Call it exactly once per such exit (it counts the crash). It records the exit
    (``history.record_exit``) unless the caller already did so.

    Raises:
        ValueError: ``exit.requested`` is set; a requested stop is not the policy's business.
    """
    if exit.requested:
        raise ValueError("a requested stop is not a restart decision")
    if not history._unjudged:
        history.record_exit(exit, now)
    history._unjudged = False
    what = describe(exit)
    if settings.policy == "never":
        return Stay(f"policy never: {what}")
    if settings.policy == "on-failure" and exit.clean:
        return Stay(f"{what} (policy on-failure)")

    history.record_crash(now, settings)
    if exit.load_error and history.load_errors >= settings.load_error_tries:
        return GiveUp(f"load error {_times(history.load_errors)}: {what}")
    crashes = len(history.crash_times)
    if crashes > settings.max_restarts:
        return GiveUp(f"{crashes - 1} restarts within {settings.window:g}s: {what}")
    n = history.consecutive - 1
    if exit.load_error:
        n = max(n, 1)  # never retry a load error at once: give a half-written deploy a moment
    return Restart(backoff_delay(settings, n, rand), history.consecutive, what)
