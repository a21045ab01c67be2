"""The state table and the one way to move through it."""

from __future__ import annotations

import itertools

import pytest

from supervisor.rules.states import (
    TRANSITIONS,
    IllegalTransition,
    State,
    StateMachine,
    Transition,
)

S = State

# The table as the design states it, written out once more so an edit to the module's table
# has to be made on purpose in two places.
EXPECTED = {
    S.STOPPED: {S.STARTING, S.DISABLED},
    S.STARTING: {S.RUNNING, S.STOPPING, S.CRASHED},
    S.RUNNING: {S.STOPPING, S.CRASHED},
    S.STOPPING: {S.STOPPED},
    S.CRASHED: {S.BACKOFF, S.FAILED, S.STOPPED},
    S.BACKOFF: {S.STARTING, S.FAILED, S.STOPPED},
    S.FAILED: {S.STARTING, S.STOPPED, S.DISABLED},
    S.DISABLED: {S.STOPPED, S.STARTING},
}
LEGAL = sorted(
    ((a, b) for a, targets in EXPECTED.items() for b in targets),
    key=lambda p: (p[0].value, p[1].value),
)
ILLEGAL = [(a, b) for a, b in itertools.product(State, State) if b not in EXPECTED[a]]


def _id(pair: tuple[State, State]) -> str:
    return f"{pair[0]}->{pair[1]}"


class TestTable:
    """The table is data, complete, and matches the design."""

    def test_matches_the_design(self) -> None:
        assert {k: set(v) for k, v in TRANSITIONS.items()} == EXPECTED

    def test_every_state_has_a_row(self) -> None:
        assert set(TRANSITIONS) == set(State)

    def test_is_read_only(self) -> None:
        with pytest.raises(TypeError):
            TRANSITIONS[S.STOPPED] = frozenset()  # type: ignore[index]

    def test_no_self_loops(self) -> None:
        assert all(s not in TRANSITIONS[s] for s in State)

    @pytest.mark.parametrize("start", list(State), ids=str)
    def test_every_state_reachable_and_no_trap(self, start: State) -> None:
        def reachable(src: State) -> set[State]:
            seen, todo = {src}, [src]
            while todo:
                for nxt in TRANSITIONS[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            return seen

        assert start in reachable(S.STOPPED)
        assert S.STOPPED in reachable(start)

    def test_values_are_the_user_visible_names(self) -> None:
        assert [s.value for s in State] == [
            "stopped", "starting", "running", "stopping",
            "crashed", "backoff", "failed", "disabled",
        ]  # fmt: skip
        assert str(S.BACKOFF) == "backoff"


class TestTransition:
    """transition() moves on legal edges and records why."""

    @pytest.mark.parametrize(("from_", "to"), LEGAL, ids=[_id(p) for p in LEGAL])
    def test_legal(self, from_: State, to: State) -> None:
        sm = StateMachine(from_, now=1.0)
        assert sm.can(to)
        record = sm.transition(to, "because", now=2.5)
        assert record == Transition(from_, to, "because", 2.5)
        assert (sm.state, sm.reason, sm.since) == (to, "because", 2.5)
        assert sm.history == (record,)

    @pytest.mark.parametrize(("from_", "to"), ILLEGAL, ids=[_id(p) for p in ILLEGAL])
    def test_illegal(self, from_: State, to: State) -> None:
        sm = StateMachine(from_, now=1.0)
        assert not sm.can(to)
        with pytest.raises(IllegalTransition) as info:
            sm.transition(to, "why not", now=2.0)
        assert (info.value.from_, info.value.to, info.value.reason) == (from_, to, "why not")
        assert f"{from_} → {to}" in str(info.value)
        assert "why not" in str(info.value)
        # Refused moves change nothing.
        assert (sm.state, sm.reason, sm.since, sm.history) == (from_, "initial", 1.0, ())

    def test_the_life_in_the_design(self) -> None:
        sm = StateMachine(now=0.0)
        path = [
            (S.STARTING, "start"),
            (S.RUNNING, "ready"),
            (S.CRASHED, "exited with status 1"),
            (S.BACKOFF, "restarting in 0.00s"),
            (S.STARTING, "backoff over"),
            (S.CRASHED, "load error (exit 3)"),
            (S.FAILED, "load error twice"),
            (S.STARTING, "spctl restart"),
            (S.RUNNING, "ready"),
            (S.STOPPING, "spctl stop"),
            (S.STOPPED, "exited cleanly"),
            (S.DISABLED, "spctl disable"),
        ]
        for i, (to, why) in enumerate(path):
            sm.transition(to, why, now=float(i))
        assert [(t.to, t.reason) for t in sm.history] == path
        assert [t.from_ for t in sm.history] == [S.STOPPED] + [to for to, _ in path[:-1]]

    def test_history_is_bounded_and_keeps_the_newest(self) -> None:
        sm = StateMachine(now=0.0, history=3)
        for i in range(4):
            sm.transition(S.STARTING, f"start {i}", now=float(2 * i))
            sm.transition(S.STOPPING, f"stop {i}", now=float(2 * i + 1))
            sm.transition(S.STOPPED, f"stopped {i}", now=float(2 * i + 1))
        assert [t.reason for t in sm.history] == ["start 3", "stop 3", "stopped 3"]

    def test_state_is_read_only(self) -> None:
        sm = StateMachine(now=0.0)
        with pytest.raises(AttributeError):
            sm.state = S.RUNNING  # type: ignore[misc]

    def test_history_must_hold_something(self) -> None:
        with pytest.raises(ValueError, match="history"):
            StateMachine(now=0.0, history=0)
