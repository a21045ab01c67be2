"""The front's limits as values: FrontLimits' checks, the flags serve hands the front, and
which requests open a 2025-era session (the real behaviour: tests/chaos/test_front_limits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.core.front import FrontOptions
from supervisor.mcp.limits import FrontLimits
from supervisor.mcp.sessions import opens_session


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("max_connections", 0, "--max-connections"),
        ("max_sessions", -1, "--max-sessions"),
        ("header_timeout", 0.0, "--header-timeout"),
        ("keepalive_timeout", float("inf"), "--keepalive-timeout"),
        ("session_idle_timeout", float("nan"), "--session-idle-timeout"),
    ],
)
def test_a_limit_that_is_not_positive_is_refused_naming_its_flag(
    field: str, value: float, flag: str
) -> None:
    with pytest.raises(ValueError, match=flag):
        FrontLimits(**{field: value})


def test_the_hard_connection_cap_is_twice_the_soft_one() -> None:
    assert FrontLimits(max_connections=20).hard_connections == 40


def test_serve_hands_only_the_limits_it_was_given() -> None:
    assert FrontOptions().limit_flags() == []
    opts = FrontOptions(max_sessions=5, header_timeout=1.5)
    assert opts.limit_flags() == ["--header-timeout", "1.5", "--max-sessions", "5"]


def _scope(method: str, **headers: str) -> dict[str, Any]:
    return {
        "method": method,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("scope", "opens"),
    [
        (_scope("POST"), True),
        (_scope("POST", mcp_protocol_version="2025-11-25"), True),
        (_scope("POST", mcp_protocol_version="2026-07-28"), False),  # stateless era
        (_scope("POST", mcp_session_id="abc"), False),
        (_scope("GET"), False),
        (_scope("DELETE", mcp_session_id="abc"), False),
    ],
)
def test_which_requests_open_a_legacy_session(scope: dict[str, Any], opens: bool) -> None:
    assert opens_session(scope) is opens
