"""The MCP front's row in the ``spctl status`` table."""

from __future__ import annotations

from supervisor.cli.render import front_entry


def test_a_running_front_shows_its_url_as_the_reason() -> None:
    snap = {"name": "mcp-front", "kind": "front", "state": "running", "reason": "ready (pid 7)"}
    entry = front_entry({**snap, "pid": 7, "url": "http://127.0.0.1:8765/mcp"})
    assert entry["reason"] == "listening on http://127.0.0.1:8765/mcp"
    assert (entry["name"], entry["kind"], entry["pid"]) == ("mcp-front", "front", 7)


def test_a_front_that_is_not_running_shows_its_reason() -> None:
    entry = front_entry({"state": "failed", "reason": "5 restarts within 60s: …", "url": None})
    assert entry["reason"] == "5 restarts within 60s: …"
    assert (entry["name"], entry["kind"]) == ("mcp-front", "front")  # an older core's snapshot
