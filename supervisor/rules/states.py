"""Worker states and the one table of legal moves between them.

Theory of operation: everything that affects a worker's state lives here. ``TRANSITIONS`` is
the table, as data; ``StateMachine.transition()`` is the only way a state changes. It refuses a
move the table does not allow (``IllegalTransition`` — a bug in the caller, never the worker's
fault), records why the move happened, and keeps a short history for ``spctl status``.

The life of a worker::

    stopped ─▶ starting ─▶ running ─▶ stopping ─▶ stopped
                   │           │
                   └──▶ crashed ◀┘ ─▶ backoff ─▶ starting
                           │              │
                           └──▶ failed ◀──┘        (restart intensity exceeded, load error)

``crashed`` is a moment, not a resting place: the runner records the exit there, asks the
restart policy, and moves on to ``backoff`` (restart), ``failed`` (give up) or ``stopped``
(the policy says not to restart). A worker that dies while ``stopping`` simply becomes
``stopped``: we asked it to go. ``disabled`` is the operator's "do not start this".

What the runner does in each (state, goal) — where the worker is and where it should be — is
data beside this table, in ``goals.py``; its unit tests check every reaction against it.

Time is passed in (monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["INSTALLING", "TRANSITIONS", "IllegalTransition", "State", "StateMachine", "Transition"]


class State(enum.Enum):
    """Where a worker is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    CRASHED = "crashed"
    BACKOFF = "backoff"
    FAILED = "failed"
    DISABLED = "disabled"

    def __str__(self) -> str:
        return self.value


_S = State

TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        _S.STOPPED: frozenset({_S.STARTING, _S.DISABLED}),
        _S.STARTING: frozenset({_S.RUNNING, _S.STOPPING, _S.CRASHED}),
        _S.RUNNING: frozenset({_S.STOPPING, _S.CRASHED}),
        # A worker that dies while we stop it is stopped, not crashed: we asked it to go.
        _S.STOPPING: frozenset({_S.STOPPED}),
        # stopped: the policy says do not restart (never; on-failure after a clean exit).
        _S.CRASHED: frozenset({_S.BACKOFF, _S.FAILED, _S.STOPPED}),
        # stopped: the operator stopped it while it waited.
        _S.BACKOFF: frozenset({_S.STARTING, _S.FAILED, _S.STOPPED}),
        # starting: `spctl restart` clears failed.
        _S.FAILED: frozenset({_S.STARTING, _S.STOPPED, _S.DISABLED}),
        _S.DISABLED: frozenset({_S.STOPPED, _S.STARTING}),
    }
)


# `installing` is what `spctl status` shows for a `starting` worker whose environment
# (install:/requirements:, DESIGN §9) is being built before the spawn. It is a phase of
# STARTING, not a state of its own: every command reacts to it as to `starting` (a stop waits
# for the build, then stops the worker), so the goals tables need no rows for it.
INSTALLING = "installing"

# Named groups of states, defined once (the core, the control API and the faces use these).
# UP: has a worker or is getting one (a lazy server's cached catalog is not used then).
UP: frozenset[State] = frozenset({_S.STARTING, _S.RUNNING, _S.STOPPING, _S.BACKOFF})
# ACTIVE: counts as running for a reload plan (a changed entry is restarted, not just updated).
ACTIVE: frozenset[State] = frozenset({_S.STARTING, _S.RUNNING, _S.BACKOFF})
# SETTLED: where a start ends up by itself; boot's READY=1 waits until every eager one is here.
SETTLED: frozenset[State] = frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED, _S.DISABLED})
# LISTED: an MCP server here keeps its tools listed (a crash and restart does not make every
# client refetch its lists twice; calls fail at once meanwhile).
LISTED: frozenset[State] = frozenset({_S.RUNNING, _S.STARTING, _S.STOPPING, _S.CRASHED, _S.BACKOFF})
# COMING_BACK: on the way back up by itself when it is wanted up (after a crash, a restart).
COMING_BACK: frozenset[State] = frozenset({_S.CRASHED, _S.BACKOFF, _S.STARTING, _S.STOPPING})


class IllegalTransition(Exception):
    """A caller asked for a move the table does not allow (a bug on our side)."""

    def __init__(self, from_: State, to: State, reason: str) -> None:
        super().__init__(f"illegal transition {from_} → {to} ({reason})")
        self.from_ = from_
        self.to = to
        self.reason = reason


@dataclass(frozen=True)
class Transition:
    """One recorded move: from where, to where, why, and when (monotonic seconds)."""

    from_: State
    to: State
    reason: str
    at: float


class StateMachine:
    """One worker's state, changed only through :meth:`transition`."""

    def __init__(self, initial: State = State.STOPPED, *, now: float, history: int = 50) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self._state = initial
        self._reason = "initial"
        self._since = now
        self._history: deque[Transition] = deque(maxlen=history)

    @property
    def state(self) -> State:
        return self._state

    @property
    def reason(self) -> str:
        """Why the current state was entered."""
        return self._reason

    @property
    def since(self) -> float:
        """When the current state was entered (monotonic seconds)."""
        return self._since

    @property
    def history(self) -> tuple[Transition, ...]:
        """The most recent transitions, oldest first (bounded)."""
        return tuple(self._history)

    def can(self, to: State) -> bool:
        """Whether the table allows moving from the current state to ``to``."""
        return to in TRANSITIONS[self._state]

    def transition(self, to: State, reason: str, now: float) -> Transition:
        """Move to ``to`` for ``reason`` and record it.

        Raises:
            IllegalTransition: the table has no such move; the state is unchanged.
        """
        if not self.can(to):
            raise IllegalTransition(self._state, to, reason)
        record = Transition(self._state, to, reason, now)
        self._state, self._reason, self._since = to, reason, now
        self._history.append(record)
        return record

    def __repr__(self) -> str:
        return f"<StateMachine {self._state} since {self._since:.3f}: {self._reason}>"
