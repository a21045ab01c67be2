"""Health checks: a periodic ping with a deadline, and a verdict after too many misses.

Theory of operation: the tracker holds no timers and sends nothing; it only counts. The
runner pings every ``interval`` seconds and waits at most ``deadline`` for the answer;
``misses`` unanswered pings in a row make the worker :class:`Unhealthy`, and the runner kills it
with that verdict's reason. Any answer resets the count. Time is passed in (monotonic)::

    tracker = HealthTracker(settings, started=now())
    while True:
        await sleep(max(0.0, tracker.next_ping_at() - now()))
        sent = now()
        tracker.ping_sent(sent)
        with move_on_after(settings.deadline):
            await worker.ping()
            tracker.pong(now(), sent)
            continue
        verdict = tracker.missed(now())
        if isinstance(verdict, Unhealthy):
            return kill(reason=verdict.reason)

Pings are scheduled from when the previous one was *sent*, so a slow answer does not stretch
the interval; the runner moves each due time to the nearest multiple of the interval
(:func:`on_grid`), so the pings of all workers go out together.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthSettings", "HealthTracker", "Healthy", "Unhealthy", "Verdict", "on_grid"]


def on_grid(due: float, interval: float) -> float:
    """``due`` moved to the nearest multiple of ``interval`` (on the same clock): every worker's
    pings then fall on the same instants, one wakeup of the supervisor for all of them. A ping
    sent on the grid is due exactly one interval later; two pings are never closer than half
    an interval, nor further apart than one and a half."""
    return float(int(due / interval + 0.5)) * interval


@dataclass(frozen=True)
class HealthSettings:
    """Ping every ``interval`` s, wait ``deadline`` s for an answer, give up after ``misses``.

    Raises:
        ValueError: a value out of range.
    """

    interval: float = 5.0
    deadline: float = 3.0
    misses: int = 2

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.deadline <= 0:
            raise ValueError("health interval and deadline must be > 0")
        if self.misses < 1:
            raise ValueError(f"health misses must be >= 1, got {self.misses}")


@dataclass(frozen=True)
class Healthy:
    """Still healthy; ``misses`` pings in a row have gone unanswered (below the limit)."""

    misses: int = 0


@dataclass(frozen=True)
class Unhealthy:
    """Kill it: ``reason`` is recorded as the exit's cause."""

    reason: str


Verdict = Healthy | Unhealthy


class HealthTracker:
    """Counts answered and unanswered pings for one worker run."""

    def __init__(self, settings: HealthSettings, *, started: float | None = None) -> None:
        """``started``: when the worker became ready; the first ping is due one interval later.

        Without it the first ping is due at once (``next_ping_at()`` is None).
        """
        self.settings = settings
        self.misses = 0
        self.last_rtt: float | None = None
        self.last_sent: float | None = None
        self.last_pong: float | None = None
        self._started = started

    def next_ping_at(self) -> float | None:
        """When the next ping is due; None: now (nothing sent yet and no start time given)."""
        if self.last_sent is not None:
            return self.last_sent + self.settings.interval
        if self._started is not None:
            return self._started + self.settings.interval
        return None

    def answer_due_by(self) -> float | None:
        """When the last ping's answer is overdue; None if no ping was sent."""
        if self.last_sent is None:
            return None
        return self.last_sent + self.settings.deadline

    def ping_sent(self, now: float) -> None:
        self.last_sent = now

    def pong(self, now: float, sent_at: float) -> Healthy:
        """The ping sent at ``sent_at`` was answered at ``now``: healthy again."""
        self.misses = 0
        self.last_rtt = now - sent_at
        self.last_pong = now
        return Healthy()

    def missed(self, now: float) -> Verdict:
        """A ping got no answer within the deadline."""
        self.misses += 1
        if self.misses >= self.settings.misses:
            pings = "ping" if self.misses == 1 else "pings"
            return Unhealthy(
                f"health check timeout ({self.misses} {pings} unanswered "
                f"within {self.settings.deadline:g}s)"
            )
        return Healthy(self.misses)
