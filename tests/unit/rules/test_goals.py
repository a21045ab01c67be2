"""The runner's reactions as data: complete, legal by the transition table, and always leading
back to a resting (state, goal) pair."""

from __future__ import annotations

import itertools

import pytest

from supervisor.config import RestartConfig
from supervisor.rules import goals
from supervisor.rules.exits import Exit
from supervisor.rules.goals import AT_REST, STEP_TARGET, Cmd, Goal, Step
from supervisor.rules.policy import RestartHistory
from supervisor.rules.states import TRANSITIONS, State

RESTING = [(s, g) for s, gs in AT_REST.items() for g in sorted(gs, key=lambda g: g.value)]


def _move(state: State, step: Step) -> State:
    to = STEP_TARGET[step]
    if to is None:
        return state
    assert to in TRANSITIONS[state], f"{step} from {state}: {state} → {to} is not legal"
    return to


def test_every_command_has_a_step_in_every_state() -> None:
    assert set(goals.COMMANDS) == set(itertools.product(Cmd, State))
    assert set(goals.WAITS) == set(Cmd)


@pytest.mark.parametrize("cmd", list(Cmd), ids=lambda c: c.value)
@pytest.mark.parametrize(("state", "goal"), RESTING, ids=lambda x: x.value)
def test_a_command_moves_legally_and_comes_to_rest(cmd: Cmd, state: State, goal: Goal) -> None:
    new_goal, step = goals.react(cmd, state, goal)
    after = _move(state, step)
    settled = _move(after, goals.settle(after, new_goal))
    assert goals.settle(settled, new_goal) is Step.NOTHING
    assert new_goal in AT_REST[settled], (cmd, state, goal, step, settled, new_goal)
    if step in (Step.REFUSE, Step.IGNORE):
        assert (new_goal, settled) == (goal, state)


@pytest.mark.parametrize(
    ("cmd", "state", "goal", "expected"),
    [
        (Cmd.START, State.DISABLED, Goal.DISABLED, (Goal.DISABLED, Step.REFUSE)),
        (Cmd.START, State.FAILED, Goal.DOWN, (Goal.UP, Step.RETRY)),  # clears failed
        (Cmd.START, State.BACKOFF, Goal.UP, (Goal.UP, Step.SPAWN)),  # no waiting out backoff
        (Cmd.RESTART, State.RUNNING, Goal.UP, (Goal.UP, Step.STOP)),
        (Cmd.START, State.STARTING, Goal.DISCOVER, (Goal.UP, Step.NOTHING)),  # for real now
        (Cmd.STOP, State.BACKOFF, Goal.UP, (Goal.DOWN, Step.CANCEL_BACKOFF)),
        (Cmd.STOP, State.STOPPING, Goal.DISABLED, (Goal.DOWN, Step.NOTHING)),
        (Cmd.ENABLE, State.STOPPING, Goal.DISABLED, (Goal.DOWN, Step.NOTHING)),
        (Cmd.ENABLE, State.DISABLED, Goal.DISABLED, (Goal.DOWN, Step.ENABLE)),
        (Cmd.DISCOVER, State.STOPPED, Goal.DOWN, (Goal.DISCOVER, Step.SPAWN)),
        (Cmd.DISCOVER, State.RUNNING, Goal.UP, (Goal.UP, Step.IGNORE)),
        (Cmd.DISCOVER, State.DISABLED, Goal.DISABLED, (Goal.DISABLED, Step.IGNORE)),
    ],
)
def test_reactions(cmd: Cmd, state: State, goal: Goal, expected: tuple[Goal, Step]) -> None:
    assert goals.react(cmd, state, goal) == expected


@pytest.mark.parametrize("goal", sorted(AT_REST[State.STOPPING], key=lambda g: g.value))
def test_a_requested_stop_ends_at_rest(goal: Goal) -> None:
    new_goal, because = goals.after_stop(goal)
    state = _move(State.STOPPED, goals.settle(State.STOPPED, new_goal))
    assert new_goal in AT_REST[state] or state is State.STARTING
    assert (because == goals.LEARNED_REASON) == (goal is Goal.LEARNED)


def test_ready_ends_a_discovery_only() -> None:
    assert goals.after_ready(Goal.DISCOVER) == (Goal.LEARNED, Step.STOP)
    assert goals.after_ready(Goal.UP) == (Goal.UP, Step.NOTHING)


@pytest.mark.parametrize(
    ("goal", "exit", "restart", "to", "reason"),
    [
        (Goal.DISCOVER, Exit(1, None), RestartConfig(), State.STOPPED, goals.NOT_LEARNED_REASON),
        (Goal.UP, Exit(1, None), RestartConfig(), State.BACKOFF, "restarting in 0.00s (attempt 1)"),
        (
            Goal.UP,
            Exit(0, None),
            RestartConfig(),
            State.STOPPED,
            "exited cleanly (policy on-failure)",
        ),
        (Goal.UP, Exit(1, None), RestartConfig(policy="never"), State.STOPPED, "policy never"),
        (
            Goal.UP,
            Exit(3, None, load_error=True, detail="ImportError: x"),
            RestartConfig(load_error_tries=1),
            State.FAILED,
            "load error once: load error (exit 3): ImportError: x",
        ),
    ],
)
def test_after_crash(
    goal: Goal, exit: Exit, restart: RestartConfig, to: State, reason: str
) -> None:
    verdict = goals.after_crash(goal, restart, RestartHistory(), exit, 1.0)
    assert (verdict.to, verdict.reason[: len(reason)]) == (to, reason)
    assert verdict.goal in AT_REST[verdict.to]
    assert State.CRASHED in TRANSITIONS[State.RUNNING] and verdict.to in TRANSITIONS[State.CRASHED]


@pytest.mark.parametrize(
    ("cmd", "step", "text"),
    [
        (Cmd.START, Step.SPAWN, "start requested"),
        (Cmd.RESTART, Step.STOP, "restart requested"),
        (Cmd.STOP, Step.STOP, "stop requested"),
        (Cmd.STOP, Step.CANCEL_BACKOFF, "stop requested during backoff"),
        (Cmd.DISABLE, Step.CANCEL_BACKOFF, "disabled during backoff"),
        (Cmd.IDLE, Step.STOP, "idle for 30s (idleTimeout)"),
        (Cmd.DISCOVER, Step.SPAWN, "started to learn its tools (lazy)"),
        (Cmd.ENABLE, Step.ENABLE, "enabled"),
    ],
)
def test_reasons(cmd: Cmd, step: Step, text: str) -> None:
    assert goals.reason(cmd, step, 30.0) == text
