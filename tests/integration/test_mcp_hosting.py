"""MCP-server extensions (create_handler packages) hosted by a real supervisor and called
through it: `spctl tools`, `spctl call`, timeouts, a worker dying mid-call, lazy start,
catalog change notifications."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.control.client import ControlClient, RpcError
from tests.helpers import Serve, make_extensions, serve_fixture, server_entry, wait_for


def _echo(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return server_entry("echo", "mcp_echo", config={"markers": str(markers)}, **extra)


def test_tools_and_call_through_the_supervisor(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path)]) as s:
        s.start()
        s.wait_state("echo", "running")
        out = s.spctl("tools", "--json")
        assert out.returncode == 0, out.stderr
        tools = {t["tool"]: t for t in json.loads(out.stdout)["tools"]}
        assert tools["echo"]["name"] == "echo__echo"
        assert tools["add"]["extension"] == "echo"
        out = s.spctl("call", "echo", "add", "--arg", "a=2", "--arg", "b=40")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
        out = s.spctl("call", "echo", "echo", "--json", '{"text": "hello"}')
        assert out.stdout.strip() == "hello"
        out = s.spctl("call", "echo", "boom")
        assert out.returncode == 1
        assert "ValueError: boom" in out.stdout
        out = s.spctl("call", "echo", "nope")
        assert out.returncode == 1
        assert "nope" in out.stderr
        table = s.spctl("tools").stdout
        assert "echo__add" in table


def test_timeout_names_the_value(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path, timeout="500ms")]) as s:
        s.start()
        s.wait_state("echo", "running")
        t0 = time.monotonic()
        out = s.spctl("call", "echo", "slow", "--arg", "seconds=30")
        assert out.returncode == 1
        assert "echo: no answer within timeout 0.5s" in out.stderr
        assert time.monotonic() - t0 < 10
        # the handler saw the cancellation
        wait_for(lambda: (tmp_path / "markers" / "slow.cancelled").exists(), 5, "cancel marker")


def test_worker_killed_during_a_call_fails_at_once(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path)]) as s:
        s.start()
        pid = s.wait_state("echo", "running")["pid"]
        outcome: dict[str, Any] = {}

        def slow_call() -> None:
            t0 = time.monotonic()
            try:
                with ControlClient(s.socket, timeout=60) as c:
                    c.call("call", "echo", "slow", {"seconds": 60})
            except RpcError as exc:
                outcome["error"] = exc.message
            outcome["took"] = time.monotonic() - t0

        t = threading.Thread(target=slow_call)
        t.start()
        wait_for(lambda: (tmp_path / "markers" / "slow.started").exists(), 10, "call in flight")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t.join(10)
        assert not t.is_alive(), "the call hung"
        assert "echo: worker went away during the call" in outcome["error"]
        assert "SIGKILL" in outcome["error"]
        print(f"\ncall failed {(time.monotonic() - killed_at) * 1000:.0f} ms after kill -9")
        # the next call succeeds after the restart
        wait_for(
            lambda: (e := s.ext("echo"))["state"] == "running" and e["pid"] not in (None, pid),
            10,
            "restart",
        )
        out = s.spctl("call", "echo", "echo", "--arg", "text=back")
        assert out.stdout.strip() == "back", out.stderr


LEARNED = "tools learned; lazy: started again by the first call"


def _starts(s: Serve, name: str) -> list[dict[str, Any]]:
    return [
        x
        for x in s.logs()
        if x.get("event") == "state" and x.get("extension") == name and x.get("to") == "starting"
    ]


def _learned(s: Serve, name: str = "echo") -> None:
    """Wait until a lazy server was started once to learn its tools and stopped again."""
    wait_for(
        lambda: any(x.get("reason") == LEARNED and x.get("extension") == name for x in s.logs()),
        20,
        f"{name}'s tools learned",
    )
    stopped = s.wait_state(name, "stopped")
    assert stopped["reason"] == f"{LEARNED} (exited cleanly)"  # what `spctl status` shows


def test_lazy_server_starts_on_first_call(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path, lazy=True)]) as s:
        s.start()
        _learned(s)
        out = s.spctl("call", "echo", "echo", "--arg", "text=lazy")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "lazy"
        assert s.ext("echo")["state"] == "running"


def test_catalog_watchers_hear_about_changes(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path)]) as s:
        s.start()
        s.wait_state("echo", "running")
        with ControlClient(s.socket, timeout=10) as c:
            first = c.call("mcp_watch")["version"]
            cats = c.call("mcp_catalogs")
            assert "echo" in cats["servers"]
            assert {t["name"] for t in cats["servers"]["echo"]["tools"]} >= {"echo", "add"}
            assert s.spctl("stop", "echo").returncode == 0
            notes = c.notifications()
            note = next(notes)
            assert note.method == "catalogs"
            assert note.params[0] > first
        with ControlClient(s.socket, timeout=10) as c:
            assert "echo" not in c.call("mcp_catalogs")["servers"]


def test_a_daemon_module_has_nothing_to_call(tmp_path: Path) -> None:
    from tests.helpers import module_entry

    with serve_fixture(tmp_path, [module_entry("d", "ok_daemon")]) as s:
        s.start()
        s.wait_state("d", "running")
        out = s.spctl("call", "d", "x")
        assert out.returncode == 1
        assert "d is a daemon module: it has no services" in out.stderr


def test_lazy_server_stops_after_idle_timeout_and_comes_back(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path, lazy=True, idleTimeout="1s")]) as s:
        s.start()
        _learned(s)
        assert s.spctl("call", "echo", "echo", "--arg", "text=one").stdout.strip() == "one"
        first = s.ext("echo")["pid"]
        s.wait_state("echo", "stopped", timeout=15)
        stopping = [x for x in s.logs() if x.get("event") == "state" and x.get("to") == "stopping"]
        assert "idle for 1s (idleTimeout)" in stopping[-1]["reason"]
        assert s.spctl("call", "echo", "echo", "--arg", "text=two").stdout.strip() == "two"
        assert s.ext("echo")["pid"] not in (None, first)


def test_idle_timeout_waits_for_calls_in_flight(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_echo(tmp_path, lazy=True, idleTimeout="500ms")]) as s:
        s.start()
        out = s.spctl("call", "echo", "slow", "--arg", "seconds=1.5")
        assert out.returncode == 0, out.stderr  # not stopped under the running call


def test_a_tool_name_that_cannot_be_prefixed_is_reported_not_dropped(tmp_path: Path) -> None:
    name = "a-server-with-a-rather-long-name"
    with serve_fixture(tmp_path, [], [server_entry(name, "long_names")]) as s:
        s.start()
        s.wait_state(name, "running")
        ext = s.ext(name)
        assert [p["kind"] for p in ext["routing_problems"]] == ["tool"]
        assert ext["routing_problems"][0]["name"].startswith("a_tool_whose_name")
        assert "64" in ext["routing_problems"][0]["reason"]
        assert "not routed:" in s.spctl("status").stdout
        tools = json.loads(s.spctl("tools", "--json").stdout)
        assert [t["name"] for t in tools["tools"]] == [f"{name}__short", None]
        assert len(tools["problems"]) == 1
        # still callable under its own name on its own scope
        out = s.spctl(
            "call", name, "a_tool_whose_name_is_fine_alone_but_too_long_once_prefixed_xyz"
        )
        assert out.stdout.strip().startswith("called a_tool_whose_name")


def _listed(s: Serve) -> set[str]:
    return {t["name"] for t in json.loads(s.spctl("tools", "--json").stdout)["tools"]}


def test_a_lazy_server_is_listed_before_its_first_call_and_after_a_restart(
    tmp_path: Path,
) -> None:
    """Started once to learn its tools (then stopped); the catalog is cached in the state
    directory, so the next supervisor lists it without starting it."""
    ext = make_extensions(tmp_path, [], [_echo(tmp_path, lazy=True)])
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock").start()
    try:
        _learned(s)
        assert len(_starts(s, "echo")) == 1
        assert {"echo__echo", "echo__add"} <= _listed(s)
        assert (tmp_path / "state" / "catalogs" / "echo.json").exists()
    finally:
        assert s.stop() == 0
    s.log_path = tmp_path / "serve2.log"
    s.start()
    try:
        wait_for(lambda: any(x.get("event") == "serving" for x in s.logs()), 10, "serving")
        assert {"echo__echo", "echo__add"} <= _listed(s)
        assert _starts(s, "echo") == []  # listed from the cache, not started
        assert s.ext("echo")["state"] == "stopped"
        out = s.spctl("call", "echo", "add", "--arg", "a=1", "--arg", "b=2")
        assert out.stdout.strip() == "3", out.stderr
    finally:
        s.stop()


def test_a_changed_lazy_server_is_learned_again(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [], [_echo(tmp_path, lazy=True)])
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock").start()
    try:
        _learned(s)
        changed = _echo(tmp_path, lazy=True)
        changed["config"]["extra"] = 1  # what the worker runs changed: the cache is stale
        make_extensions(tmp_path, [], [changed])
        result = s.call("reload")
        assert result["plan"]["update"] == ["echo"], result
        wait_for(lambda: len(_starts(s, "echo")) == 2, 20, "a second start to learn it again")
        s.wait_state("echo", "stopped")
        assert "echo__echo" in _listed(s)
    finally:
        s.stop()


def test_a_lazy_server_that_cannot_start_is_left_stopped_without_restarts(
    tmp_path: Path,
) -> None:
    entry = server_entry("broken", "crash_import", lazy=True)
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        wait_for(lambda: _starts(s, "broken"), 20, "the attempt to learn its tools")
        e = s.wait_state("broken", "stopped")
        assert "could not learn its tools" in e["reason"]
        assert e["restarts"] == 0
        assert len(_starts(s, "broken")) == 1
        out = s.spctl("call", "broken", "anything")  # a call still tries (and says why not)
        assert out.returncode == 1
        assert "broken" in out.stderr


def _subscriptions(tmp_path: Path) -> list[str]:
    path = tmp_path / "markers" / "subscriptions"
    return path.read_text().splitlines() if path.exists() else []


def test_resource_subscriptions_outlive_the_worker_and_end_with_the_channel(
    tmp_path: Path,
) -> None:
    uri = "echo://readme"
    with serve_fixture(tmp_path, [], [_echo(tmp_path)]) as s:
        s.start()
        pid = s.wait_state("echo", "running")["pid"]
        with ControlClient(s.socket, timeout=10) as c, ControlClient(s.socket, timeout=10) as d:
            assert c.call("mcp", "echo", "resources/subscribe", {"uri": uri}, {}) == {}
            assert d.call("mcp", "echo", "resources/subscribe", {"uri": uri}, {}) == {}
            assert _subscriptions(tmp_path) == [f"resources/subscribe {uri}"]  # told once
            with pytest.raises(RpcError, match=r"params\.uri"):
                c.call("mcp", "echo", "resources/subscribe", {}, {})
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: _subscriptions(tmp_path) == [f"resources/subscribe {uri}"] * 2,
                15,
                "the restarted worker to be subscribed again",
            )
            s.call("mcp", "echo", "fixture/touch", {"uri": uri}, {})
            note = next(c.notifications())
            assert (note.method, note.params) == ("resource_updated", ["echo", uri])
            assert d.call("mcp", "echo", "resources/unsubscribe", {"uri": uri}, {}) == {}
            assert len(_subscriptions(tmp_path)) == 2  # c still wants it
        wait_for(
            lambda: _subscriptions(tmp_path)[-1] == f"resources/unsubscribe {uri}",
            10,
            "the last subscriber's channel closing to unsubscribe the server",
        )


def test_a_call_during_a_restart_waits_for_the_worker(tmp_path: Path) -> None:
    """A crash heals in ~0.1 s: a call that comes meanwhile waits for the restarted worker
    (within the extension's timeout) instead of failing; a stopped server is not waited for."""
    entry = _echo(tmp_path)
    entry["config"]["initialize_delay"] = 1.0  # a start long enough to call into
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        pid = s.wait_state("echo", "running")["pid"]
        os.kill(pid, signal.SIGKILL)
        s.wait_state("echo", "starting")
        out = s.spctl("call", "echo", "echo", "--arg", "text=patient")
        assert (out.returncode, out.stdout.strip()) == (0, "patient"), out.stderr
        assert s.ext("echo")["pid"] not in (None, pid)
        assert s.spctl("stop", "echo").returncode == 0
        out = s.spctl("call", "echo", "echo", "--arg", "text=anyone")
        assert out.returncode == 1
        assert "echo is not running (stopped)" in out.stderr


def test_waiting_for_a_restart_and_the_call_share_one_timeout(tmp_path: Path) -> None:
    """The wait for a restarting worker comes out of the call's timeout, not on top of it: a
    call that never returns fails after `timeout` in all (2.5 s here), not wait + timeout
    (which would be at least 2 + 2.5 s with this slow start)."""
    entry = _echo(tmp_path, timeout="2.5s")
    entry["config"]["initialize_delay"] = 2.0
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        pid = s.wait_state("echo", "running")["pid"]
        os.kill(pid, signal.SIGKILL)
        s.wait_state("echo", "starting")
        t0 = time.monotonic()
        with ControlClient(s.socket, timeout=30) as c, pytest.raises(RpcError) as caught:
            c.call("call", "echo", "slow", {"seconds": 30})
        took = time.monotonic() - t0
        assert "echo: no answer within timeout 2.5s" in caught.value.message
        assert took < 4.0, f"{took:.2f}s: the wait came on top of the timeout"
