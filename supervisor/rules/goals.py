"""What the runner wants of a worker (its :class:`Goal`) and how it reacts, as data.

Theory of operation: a runner's state (``states.State``) is where its worker *is*; its goal is
where the operator (or the runner itself) wants it to be. The two together are everything the
runner decides on; the tables below say, for each command and each event, what to do in each
(state, goal), and :func:`react`, :func:`settle` and friends only look them up. The moves they
imply are checked against ``states.TRANSITIONS`` by the unit tests, and so is the rule that
between two messages the runner is always in a pair of :data:`AT_REST`.

Goals::

    UP        wanted running (start, restart); back up by itself after a crash
    DOWN      wanted stopped (stop, idleTimeout, the policy gave up or said stay)
    DISABLED  wanted stopped, then ``disabled`` (start and restart are refused there)
    DISCOVER  started only to learn its catalog (a lazy server); stopped once it is ready
    LEARNED   discovery done, on the way down: ``stopped`` says so (:data:`LEARNED_REASON`)

Pure: no clock, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from supervisor.config.schema import RestartConfig
from supervisor.rules.exits import Exit
from supervisor.rules.policy import GiveUp, Restart, RestartHistory, decide
from supervisor.rules.states import State

__all__ = [
    "AT_REST",
    "COMMANDS",
    "COMMAND_GOAL",
    "LEARNED_REASON",
    "SETTLE",
    "STEP_TARGET",
    "WAITS",
    "WANTS_WORKER",
    "Cmd",
    "Goal",
    "Step",
    "Verdict",
    "Wait",
    "after_crash",
    "after_ready",
    "after_stop",
    "react",
    "reason",
    "settle",
    "settle_reason",
]

LEARNED_REASON = "tools learned; lazy: started again by the first call"
NOT_LEARNED_REASON = "could not learn its tools; started again by the first call"


class Goal(enum.Enum):
    UP = "up"
    DOWN = "down"
    DISABLED = "disabled"
    DISCOVER = "discover"
    LEARNED = "learned"


class Cmd(enum.Enum):
    """An operator's (or the runner's own) command."""

    START = "start"
    RESTART = "restart"
    STOP = "stop"
    DISABLE = "disable"
    ENABLE = "enable"
    IDLE = "idle"  # a lazy server's idleTimeout ran out
    DISCOVER = "discover"  # start a lazy server only to learn its catalog


class Step(enum.Enum):
    """What the runner does about a command or an event."""

    SPAWN = "spawn"  # start a worker now (a pending backoff is dropped)
    RETRY = "retry"  # forget the crashes (clears ``failed``), then spawn
    STOP = "stop"  # the stop sequence of the current worker
    CANCEL_BACKOFF = "cancel backoff"  # backoff → stopped: no worker to stop
    ENABLE = "enable"  # disabled → stopped
    DISABLE = "disable"  # stopped/failed → disabled
    NOTHING = "nothing"  # the goal alone is enough: an event under way reaches it
    REFUSE = "refuse"  # the command cannot be obeyed here (goal unchanged)
    IGNORE = "ignore"  # the command means nothing here (goal unchanged)


class Wait(enum.Enum):
    """What a command's caller waits for."""

    UP = "up"  # running, after a start it saw (or the start's failure)
    DOWN = "down"  # stopped, failed or disabled
    NOW = "now"  # nothing: answered once handled
    NONE = "none"  # nobody waits (the runner's own commands)


_S, _G, _C, _P = State, Goal, Cmd, Step

# Where each step takes the state (None: it stays where it is).
STEP_TARGET: Mapping[Step, State | None] = MappingProxyType(
    {
        _P.SPAWN: _S.STARTING,
        _P.RETRY: _S.STARTING,
        _P.STOP: _S.STOPPING,
        _P.CANCEL_BACKOFF: _S.STOPPED,
        _P.ENABLE: _S.STOPPED,
        _P.DISABLE: _S.DISABLED,
        _P.NOTHING: None,
        _P.REFUSE: None,
        _P.IGNORE: None,
    }
)

# The legal (state, goal) pairs between two messages. ``crashed`` is never at rest: the exit
# that led there is judged in the same step.
AT_REST: Mapping[State, frozenset[Goal]] = MappingProxyType(
    {
        _S.STOPPED: frozenset({_G.DOWN}),
        _S.STARTING: frozenset({_G.UP, _G.DISCOVER}),
        _S.RUNNING: frozenset({_G.UP}),
        _S.STOPPING: frozenset({_G.UP, _G.DOWN, _G.DISABLED, _G.LEARNED}),
        _S.CRASHED: frozenset(),
        _S.BACKOFF: frozenset({_G.UP}),
        _S.FAILED: frozenset({_G.DOWN}),
        _S.DISABLED: frozenset({_G.DISABLED}),
    }
)

WANTS_WORKER: frozenset[Goal] = frozenset({_G.UP, _G.DISCOVER})

# The goal a command sets (ENABLE: see _ENABLE_GOAL; REFUSE and IGNORE keep the goal).
COMMAND_GOAL: Mapping[Cmd, Goal] = MappingProxyType(
    {
        _C.START: _G.UP,
        _C.RESTART: _G.UP,
        _C.STOP: _G.DOWN,
        _C.IDLE: _G.DOWN,
        _C.DISABLE: _G.DISABLED,
        _C.DISCOVER: _G.DISCOVER,
    }
)
# enable lifts a disable (pending or done); like any command, it ends a discovery: someone
# wants the server for real.
_ENABLE_GOAL: Mapping[Goal, Goal] = MappingProxyType({_G.DISABLED: _G.DOWN, _G.DISCOVER: _G.UP})

WAITS: Mapping[Cmd, Wait] = MappingProxyType(
    {
        _C.START: Wait.UP,
        _C.RESTART: Wait.UP,
        _C.STOP: Wait.DOWN,
        _C.DISABLE: Wait.DOWN,
        _C.ENABLE: Wait.NOW,
        _C.IDLE: Wait.NONE,
        _C.DISCOVER: Wait.NONE,
    }
)


def _row(**steps: Step) -> dict[State, Step]:
    return {State[name.upper()]: step for name, step in steps.items()}


_UP_ROW = _row(
    stopped=_P.SPAWN,
    starting=_P.NOTHING,
    running=_P.NOTHING,
    stopping=_P.NOTHING,  # the exit starts it again (goal UP)
    crashed=_P.NOTHING,
    backoff=_P.SPAWN,  # an operator's start does not wait out the backoff
    failed=_P.RETRY,
    disabled=_P.REFUSE,
)
_DOWN_ROW = _row(
    stopped=_P.NOTHING,
    starting=_P.STOP,
    running=_P.STOP,
    stopping=_P.NOTHING,
    crashed=_P.NOTHING,
    backoff=_P.CANCEL_BACKOFF,
    failed=_P.NOTHING,
    disabled=_P.IGNORE,
)
_ONLY_WHEN_DOWN = {s: _P.IGNORE for s in State} | {_S.STOPPED: _P.SPAWN, _S.FAILED: _P.SPAWN}

# What a command does in each state: (command, state) → step.
COMMANDS: Mapping[tuple[Cmd, State], Step] = MappingProxyType(
    {
        **{(_C.START, s): step for s, step in _UP_ROW.items()},
        **{(_C.RESTART, s): step for s, step in _UP_ROW.items()},
        (_C.RESTART, _S.STARTING): _P.STOP,  # then the exit starts it again
        (_C.RESTART, _S.RUNNING): _P.STOP,
        **{(c, s): step for c in (_C.STOP, _C.IDLE, _C.DISABLE) for s, step in _DOWN_ROW.items()},
        (_C.DISABLE, _S.DISABLED): _P.NOTHING,
        **{(_C.ENABLE, s): _P.NOTHING for s in State},
        (_C.ENABLE, _S.DISABLED): _P.ENABLE,
        **{(_C.DISCOVER, s): step for s, step in _ONLY_WHEN_DOWN.items()},
    }
)

# Once a command or an exit has moved the state, a goal not reached yet may need one more step.
SETTLE: Mapping[tuple[State, Goal], Step] = MappingProxyType(
    {
        (_S.STOPPED, _G.UP): _P.SPAWN,  # a restart (or a start during stopping): back up
        (_S.STOPPED, _G.DISABLED): _P.DISABLE,
        (_S.FAILED, _G.DISABLED): _P.DISABLE,
    }
)


def react(cmd: Cmd, state: State, goal: Goal) -> tuple[Goal, Step]:
    """The new goal and the step for ``cmd`` arriving in (``state``, ``goal``)."""
    step = COMMANDS[cmd, state]
    if step in (Step.REFUSE, Step.IGNORE):
        return goal, step
    if cmd is Cmd.ENABLE:
        return _ENABLE_GOAL.get(goal, goal), step
    return COMMAND_GOAL[cmd], step


def settle(state: State, goal: Goal) -> Step:
    """The step still needed in (``state``, ``goal``) after a move (NOTHING: at rest)."""
    return SETTLE.get((state, goal), Step.NOTHING)


def after_ready(goal: Goal) -> tuple[Goal, Step]:
    """The worker is ready: a discovery is done (stop it); otherwise serve (NOTHING)."""
    if goal is Goal.DISCOVER:
        return Goal.LEARNED, Step.STOP
    return goal, Step.NOTHING


def after_stop(goal: Goal) -> tuple[Goal, str | None]:
    """A requested stop ended: the goal from now on, and the reason ``stopped`` gives (None:
    the exit's own description)."""
    if goal is Goal.LEARNED:
        return Goal.DOWN, LEARNED_REASON
    if goal is Goal.DISCOVER:
        return Goal.DOWN, None
    return goal, None


@dataclass(frozen=True)
class Verdict:
    """Where an exit nobody asked for leads: the goal, the state, why, and (to ``backoff``)
    the delay before the next start."""

    goal: Goal
    to: State
    reason: str
    delay: float = 0.0


def after_crash(
    goal: Goal, settings: RestartConfig, history: RestartHistory, exit: Exit, now: float
) -> Verdict:
    """A discovery gives up at once (nobody asked for this worker: no restarts); otherwise the
    restart policy decides (``policy.decide``, which counts the crash in ``history``)."""
    if goal is Goal.DISCOVER:
        return Verdict(Goal.DOWN, State.STOPPED, NOT_LEARNED_REASON)
    decision = decide(settings, history, exit, now)
    if isinstance(decision, Restart):
        why = f"restarting in {decision.delay:.2f}s (attempt {decision.attempt})"
        return Verdict(goal, State.BACKOFF, why, decision.delay)
    return Verdict(
        Goal.DOWN, State.FAILED if isinstance(decision, GiveUp) else State.STOPPED, decision.reason
    )


def reason(cmd: Cmd, step: Step, idle_timeout: float | None = None) -> str:
    """Why a command's step moves the state (the reason the transition records)."""
    if cmd is Cmd.DISCOVER:
        return "started to learn its tools (lazy)"
    if cmd is Cmd.ENABLE:
        return "enabled"
    if cmd in (Cmd.START, Cmd.RESTART):
        return f"{cmd.value} requested"
    what = {Cmd.DISABLE: "disabled", Cmd.IDLE: f"idle for {idle_timeout or 0:g}s (idleTimeout)"}
    text = what.get(cmd, "stop requested")
    return f"{text} during backoff" if step is Step.CANCEL_BACKOFF else text


def settle_reason(step: Step) -> str:
    return "restart requested" if step is Step.SPAWN else "disabled"
