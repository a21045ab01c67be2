"""Readiness: who keeps the supervisor from being ready (the rule of /readyz and --check)."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.rules.readiness import not_ready


def row(name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "enabled": True, "lazy": False, "reason": "r", **extra}


@pytest.mark.parametrize(
    ("rows", "waiting"),
    [
        ([], []),
        ([row("a", "running")], []),
        ([row("a", "starting")], ["a"]),
        ([row("a", "backoff"), row("b", "running"), row("c", "failed")], ["a", "c"]),
        ([row("a", "stopped", lazy=True)], []),  # lazy: starts on first use
        ([row("a", "disabled", enabled=False)], []),
        ([row("a", "stopped")], ["a"]),  # stopped by hand still counts
        ([{"name": "bad", "state": "failed", "reason": "invalid entry"}], ["bad"]),
    ],
)
def test_not_ready(rows: list[dict[str, Any]], waiting: list[str]) -> None:
    assert [w["name"] for w in not_ready(rows)] == waiting


def test_not_ready_says_state_and_reason_only() -> None:
    (who,) = not_ready([row("a", "backoff", reason="exited with status 1", pid=7)])
    assert who == {"name": "a", "state": "backoff", "reason": "exited with status 1"}
