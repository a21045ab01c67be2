"""Hook events from transitions, the rate limit, and the payload (supervisor.rules.hooks)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from supervisor.config import Extension, Source
from supervisor.config.schema import Hooks
from supervisor.config.values import FrozenDict
from supervisor.rules.hooks import Events, RateLimit, payload
from supervisor.rules.reload_plan import plan
from supervisor.rules.states import State, Transition

S = State


def tr(a: State, b: State, reason: str = "why") -> Transition:
    return Transition(a, b, reason, 0.0)


def test_a_crash_a_failure_and_a_recovery() -> None:
    ev = Events()
    assert ev.of("x", tr(S.STOPPED, S.STARTING)) == []
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == []  # a first start is no recovery
    assert ev.of("x", tr(S.RUNNING, S.CRASHED)) == ["onCrash"]
    assert ev.of("x", tr(S.CRASHED, S.BACKOFF)) == []
    assert ev.of("x", tr(S.BACKOFF, S.STARTING)) == []
    assert ev.of("y", tr(S.STARTING, S.RUNNING)) == []  # per extension
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == ["onRecovered"]
    assert ev.of("x", tr(S.RUNNING, S.STOPPING)) == []
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == []  # once


def test_failed_then_restarted_is_recovered_but_a_stop_forgets() -> None:
    ev = Events()
    assert ev.of("x", tr(S.STARTING, S.CRASHED)) == ["onCrash"]
    assert ev.of("x", tr(S.CRASHED, S.FAILED)) == ["onFailed"]
    assert ev.of("x", tr(S.FAILED, S.STARTING)) == []
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == ["onRecovered"]
    assert ev.of("x", tr(S.RUNNING, S.CRASHED)) == ["onCrash"]
    assert ev.of("x", tr(S.CRASHED, S.BACKOFF)) == []
    assert ev.of("x", tr(S.BACKOFF, S.STOPPED)) == []  # the operator stopped it
    assert ev.of("x", tr(S.STOPPED, S.STARTING)) == []
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == []


def test_policy_never_stops_after_a_crash_and_still_recovers_on_a_start() -> None:
    ev = Events()
    ev.of("x", tr(S.RUNNING, S.CRASHED))
    assert ev.of("x", tr(S.CRASHED, S.STOPPED)) == []
    ev.of("x", tr(S.STOPPED, S.STARTING))
    assert ev.of("x", tr(S.STARTING, S.RUNNING)) == ["onRecovered"]


def test_the_rate_limit_counts_what_it_suppresses() -> None:
    limit = RateLimit(runs=3, window=60.0)
    assert [limit.allow("x", "onCrash", t).run for t in (0, 1, 2)] == [True] * 3
    first = limit.allow("x", "onCrash", 3)
    assert not first.run and first.first_suppressed
    second = limit.allow("x", "onCrash", 4)
    assert not second.run and not second.first_suppressed and second.suppressed == 2
    assert limit.allow("y", "onCrash", 4).run  # per extension
    assert limit.allow("x", "onFailed", 4).run  # per event
    assert limit.suppressed("x", "onCrash") == 2
    later = limit.allow("x", "onCrash", 60.5)  # the run at 0 is out of the window
    assert later.run and later.suppressed == 2
    assert limit.suppressed("x", "onCrash") == 0


def test_a_rate_limit_needs_runs() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        RateLimit(runs=0)


def test_payload() -> None:
    got = payload("onCrash", "x", tr(S.RUNNING, S.CRASHED, "exit 1"), time="T", restarts=2)
    assert got == {
        "event": "onCrash",
        "extension": "x",
        "state": "crashed",
        "from": "running",
        "reason": "exit 1",
        "time": "T",
        "restarts": 2,
    }


def test_a_reload_that_changes_only_hooks_keeps_the_worker() -> None:
    src = Source(Path("modules.yaml"), 1, 1)
    before = Extension(name="x", section="modules", type="local", source=src)
    after = dataclasses.replace(before, hooks=Hooks(FrozenDict({"onCrash": ("/bin/true",)})))
    p = plan({"x": before}, {"x": after}, frozenset({"x"}))
    assert p.refilter == ("x",) and p.restart == ()
