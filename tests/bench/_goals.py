"""The goals a benchmark run checks, gathered for one table at the end of ``make bench``.

A benchmark that measures a figure an issue sets a goal for calls :func:`record` with the
figure as printed in its own table and whether the goal is met; ``python -m tests.bench``
prints every recorded goal once all the benchmarks it ran are done (:func:`table`), so one
``make bench`` run fills the goals table of docs/benchmarks.md. A benchmark run on its own
(``python -m tests.bench.bench_zygote``) records too, and nothing is printed for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bench._table import format_table

__all__ = ["Goal", "record", "recorded", "table"]


@dataclass(frozen=True)
class Goal:
    measure: str
    goal: str
    value: str
    met: bool
    bench: str


_goals: list[Goal] = []


def record(bench: str, measure: str, goal: str, value: str, met: bool) -> None:
    """One goal checked by ``bench`` (its module's short name): ``value`` against ``goal``."""
    _goals.append(Goal(measure, goal, value, met, bench))


def recorded() -> list[Goal]:
    return list(_goals)


def table(title: str) -> str:
    """The recorded goals as a Markdown table ("" when none was recorded)."""
    if not _goals:
        return ""
    rows = [[g.measure, g.goal, g.value, "yes" if g.met else "no", g.bench] for g in _goals]
    met = sum(g.met for g in _goals)
    return format_table(
        f"{title}: {met} of {len(_goals)} met",
        ["measure", "goal", "this run", "met?", "benchmark"],
        rows,
    )
