"""The goals table that ends a ``make bench`` run (tests/bench/_goals.py)."""

from __future__ import annotations

import pytest

from tests.bench import _goals


@pytest.fixture(autouse=True)
def _empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_goals, "_goals", [])


def test_nothing_recorded_prints_nothing() -> None:
    assert _goals.table("Goals") == ""


def test_each_goal_is_a_row_and_the_title_counts_those_met() -> None:
    _goals.record("zygote", "worker USS", "≤ 4 MiB", "5.6 MiB", False)
    _goals.record("idle", "idle CPU", "≤ 0.15 %", "0.133 %", True)
    text = _goals.table("Goals of this run")
    assert text.splitlines()[0] == "### Goals of this run: 1 of 2 met"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "measure" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["worker USS", "idle CPU"]
    assert [r.split("|")[4].strip() for r in rows] == ["no", "yes"]
