"""``spctl top``'s sparkline column, drawn from the core's ``history`` answer."""

from __future__ import annotations

from typing import Any

from supervisor.cli.top import render

STATUS: dict[str, Any] = {
    "supervisor": {"pid": 1, "uptime": 5.0, "limits_enforcement": "cgroup v2"},
    "extensions": [
        {"name": "a", "state": "running", "pid": 2, "usage": {"rss": 10, "cpu": 0.5}},
        {"name": "b", "state": "stopped", "pid": None, "usage": None},
    ],
}
HISTORY: dict[str, Any] = {
    "period": 2.0,
    "series": {
        "a": {"rss": [1, 2, 4, 8], "cpu": [0.0, 0.0, 0.5, 1.0], "state": ["running"] * 4},
        "b": {"rss": [None, None], "cpu": [None, None], "state": ["stopped"] * 2},
    },
}


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(name + " "))


def test_memory_sparkline_per_extension() -> None:
    out = render(STATUS, HISTORY)
    assert "MEMORY (LAST 60 S)" in out
    assert _line(out, "a").endswith("▁▂▄█")  # from the lowest value of the window
    assert _line(out, "b").split()[-2:] == ["-", "-"]  # LIMIT USED, and nothing measured


def test_cpu_sparkline() -> None:
    out = render(STATUS, HISTORY, "cpu")
    assert "CPU (LAST 60 S)" in out
    assert _line(out, "a").endswith("▁▁▅█")


def test_no_history_no_column() -> None:
    out = render(STATUS, None)
    assert "LAST" not in out
    assert "▁" not in out
