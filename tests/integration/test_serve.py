"""A real ``spctl serve`` with real workers: states, restarts, health, stop, CLI verbs."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Serve, make_extensions, module_entry, pid_gone, serve_fixture, wait_for

FAST_RESTART = {
    "policy": "always",
    "maxRestarts": 1000,
    "window": "60s",
    "backoff": "10ms",
    "maxBackoff": "20ms",
}


@pytest.fixture
def basic(tmp_path: Path) -> Iterator[Serve]:
    events = tmp_path / "events.txt"
    with serve_fixture(
        tmp_path,
        [
            module_entry("ok", "ok_daemon", config={"events": str(events)}),
            module_entry("off", "ok_daemon", enabled=False),
        ],
    ) as s:
        yield s


def test_serve_starts_enabled_extensions_and_status_shows_them(basic: Serve) -> None:
    basic.start()
    ok = basic.wait_state("ok", "running")
    assert ok["pid"]
    assert not pid_gone(ok["pid"])
    assert ok["metadata"]["version"] == "1.2.3"
    assert basic.ext("off")["state"] == "disabled"
    out = basic.spctl("status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "STATE"]
    assert any(line.split()[:3] == ["ok", "module", "running"] for line in lines)
    js = json.loads(basic.spctl("status", "ok", "--json").stdout)
    assert [e["name"] for e in js["extensions"]] == ["ok"]


def test_stop_start_restart_verbs(basic: Serve, tmp_path: Path) -> None:
    basic.start()
    pid = basic.wait_state("ok", "running")["pid"]
    out = basic.spctl("stop", "ok")
    assert out.returncode == 0, out.stderr
    assert basic.ext("ok")["state"] == "stopped"
    assert pid_gone(pid)
    events = (tmp_path / "events.txt").read_text().split()
    assert events[-2:] == ["stop", "shutdown"]
    assert basic.spctl("start", "ok").returncode == 0
    pid2 = basic.ext("ok")["pid"]
    assert basic.ext("ok")["state"] == "running"
    assert pid2 != pid
    assert basic.spctl("restart", "ok").returncode == 0
    pid3 = basic.ext("ok")["pid"]
    assert basic.ext("ok")["state"] == "running"
    assert pid3 not in (pid, pid2)
    assert pid_gone(pid2)


def test_exit_codes(basic: Serve, tmp_path: Path) -> None:
    # 3: no supervisor running, for every verb that needs one
    for verb in (["status"], ["start", "ok"], ["stop", "ok"], ["restart", "ok"]):
        out = basic.spctl(*verb)
        assert out.returncode == 3, (verb, out)
        assert "no supervisor is running" in out.stderr
    basic.start()
    basic.wait_state("ok", "running")
    out = basic.spctl("restart", "nope")
    assert out.returncode == 1
    assert "no extension named 'nope'" in out.stderr
    out = basic.spctl("start", "off")
    assert out.returncode == 1
    assert "disabled" in out.stderr
    assert basic.spctl("status", "--bogus").returncode == 2


def test_second_serve_refuses_and_keeps_the_first(basic: Serve) -> None:
    basic.start()
    pid = basic.wait_state("ok", "running")["pid"]
    second = Serve(basic.root, basic.extensions, basic.socket)
    second.log_path = basic.root / "second.log"
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert "already running" in second.log_path.read_text()
    assert basic.ext("ok")["pid"] == pid


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [module_entry("ok", "ok_daemon")])
    sock = tmp_path / "run" / "control.sock"
    first = Serve(tmp_path, ext, sock).start()
    first.wait_state("ok", "running")
    assert first.proc is not None
    first.proc.kill()  # leaves the socket file behind
    first.proc.wait()
    assert sock.exists()
    second = Serve(tmp_path, ext, sock).start()
    try:
        second.wait_state("ok", "running")
    finally:
        second.kill()


def test_sigterm_stops_everything_and_exits_zero(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    mods = [
        module_entry("ok", "ok_daemon"),
        module_entry("gc", "grandchild", config={"pidfile": str(pidfile)}),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        pids = [s.wait_state(n, "running")["pid"] for n in ("ok", "gc")]
        grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 10, "pidfile"))
        assert s.stop() == 0
        for pid in [*pids, grandchild]:
            assert pid_gone(pid), pid
        assert not s.socket.exists()
        states = [e for e in s.logs() if e.get("event") == "state" and e.get("to") == "stopped"]
        assert {e["extension"] for e in states} == {"ok", "gc"}


def test_crash_after_running_restarts(tmp_path: Path) -> None:
    mods = [module_entry("crashy", "crash_later", config={"after": 0.3}, restart=FAST_RESTART)]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = wait_for(lambda: s.ext("crashy")["restarts"] >= 3 and s.ext("crashy"), 20, "3 restarts")
        assert "exited with status 1" in (e["last_exit"] or "")


def test_exit_3_at_run_time_is_a_crash_not_a_load_error(tmp_path: Path) -> None:
    # Status 3 is the worker's load-error code, but an extension may exit with it too: only
    # what the worker reported over its channel makes a load error (never two tries and out).
    mods = [
        module_entry("three", "crash_later", config={"after": 0.3, "code": 3}, restart=FAST_RESTART)
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = wait_for(lambda: s.ext("three")["restarts"] >= 3 and s.ext("three"), 20, "3 restarts")
        assert e["state"] != "failed"
        assert "exited with status 3" in (e["last_exit"] or "")
        assert "load error" not in (e["last_exit"] or "") + e["reason"]
        reasons = [x["reason"] for x in s.logs() if x.get("event") == "state"]
        assert not [r for r in reasons if "load error" in r]


def test_status_row_names_the_cause_of_a_load_error(tmp_path: Path) -> None:
    mods = [module_entry("broken", "crash_import", restart={"backoff": "50ms"})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = s.wait_state("broken", "failed")
        cause = "RuntimeError: crash_import: boom at import time"
        assert cause in e["reason"]
        assert e["reason"].startswith("load error twice: load error (exit 3)")
        out = s.spctl("status")
        assert out.returncode == 0, out.stderr
        row = next(line for line in out.stdout.splitlines() if line.startswith("broken"))
        assert cause in row


def test_import_crash_loop_goes_to_failed_with_traceback(tmp_path: Path) -> None:
    mods = [module_entry("broken", "crash_import", restart={"backoff": "50ms"})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = s.wait_state("broken", "failed")
        assert "load error" in e["reason"]
        assert e["restarts"] == 1  # two tries in all: the first load error is retried once
        assert "RuntimeError" in e["error"]["traceback"]
        states = [x for x in s.logs() if x.get("event") == "state"]
        spawns = [x for x in states if x.get("to") == "starting"]
        assert len(spawns) == 2
        # the retry waited one backoff step (50 ms, ±20 % jitter), not zero and not forever:
        # timed from entering backoff (from the first spawn, the gap would also hold the
        # first try's fork, import and exit, seconds on a loaded machine)
        from datetime import datetime

        backoff = next(x for x in states if x.get("to") == "backoff")
        assert backoff["from"] == "crashed" and states.index(backoff) < states.index(spawns[1])
        t = [datetime.fromisoformat(x["timestamp"]) for x in (backoff, spawns[1])]
        gap = (t[1] - t[0]).total_seconds()
        assert 0.04 <= gap < 2.0, gap
        out = s.spctl("status", "broken")
        assert "RuntimeError" in out.stdout
        # an operator restart clears failed and tries again
        out = s.spctl("restart", "broken")
        assert out.returncode == 1
        assert "load error" in out.stderr


def test_is_running_false_counts_as_a_crash(tmp_path: Path) -> None:
    mods = [module_entry("nr", "not_running", config={"after": 0.2}, restart={"policy": "never"})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = s.wait_state("nr", "stopped")
        assert "is_running() returned False" in e["last_exit"]
        crashed = [x for x in s.logs() if x.get("event") == "state" and x.get("to") == "crashed"]
        assert crashed
        assert "is_running() returned False" in crashed[0]["reason"]


def test_blocked_event_loop_is_killed_by_health_check(tmp_path: Path) -> None:
    mods = [
        module_entry("stuck", "blocks_loop", config={"after": 0.2}, restart={"policy": "never"})
    ]
    with serve_fixture(
        tmp_path, mods, extra_args=["--health-interval", "0.2", "--health-timeout", "0.2"]
    ) as s:
        s.start()
        e = s.wait_state("stuck", "stopped", timeout=20)
        assert "health check timeout" in e["last_exit"]


def test_slow_sync_start_is_not_killed(tmp_path: Path) -> None:
    mods = [module_entry("slow", "slow_sync", config={"seconds": 2})]
    with serve_fixture(
        tmp_path, mods, extra_args=["--health-interval", "0.2", "--health-timeout", "0.3"]
    ) as s:
        s.start()
        e = s.wait_state("slow", "running", timeout=20)
        assert e["restarts"] == 0


def test_ignores_sigterm_is_killed_after_stop_timeout(tmp_path: Path) -> None:
    mods = [module_entry("stubborn", "ignores_sigterm", stopTimeout="1s")]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        pid = s.wait_state("stubborn", "running")["pid"]
        t0 = time.monotonic()
        out = s.spctl("stop", "stubborn")
        took = time.monotonic() - t0
        assert out.returncode == 0, out.stderr
        assert pid_gone(pid)
        assert "stopTimeout (1s)" in s.ext("stubborn")["reason"]
        assert took < 5


@pytest.mark.parametrize("fixture", ["garbage", "bigframe", "badid"])
def test_protocol_violations_cut_the_worker_off(tmp_path: Path, fixture: str) -> None:
    mods = [module_entry("bad", fixture, restart={"policy": "never"})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        e = s.wait_state("bad", "stopped")
        assert "channel lost" in e["last_exit"] or "protocol" in e["last_exit"], e
        status = s.try_status()
        assert status is not None  # the supervisor is unharmed


def test_invalid_entry_does_not_hold_others_hostage(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [module_entry("ok", "ok_daemon")])
    text = (ext / "modules.yaml").read_text()
    text += "- name: broken\n  type: local\n  path: ./modules/missing\n  moduleType: daemon\n"
    (ext / "modules.yaml").write_text(text)
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("ok", "running")
        broken = s.ext("broken")
        assert broken["state"] == "failed"
        assert "modules.yaml" in broken["reason"]
        assert "path" in broken["reason"]
    finally:
        s.kill()


def test_unparseable_config_stops_serve_with_exit_1(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [module_entry("ok", "ok_daemon")])
    (ext / "modules.yaml").write_text("modules: [\n")
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    s.start(wait=False)
    assert s.proc is not None
    assert s.proc.wait(20) == 1
    assert "modules.yaml:" in s.log_path.read_text()


def test_worker_output_is_logged_per_line(tmp_path: Path) -> None:
    mods = [module_entry("noisy", "noisy", config={"interval": 0.01, "count": 5})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        wait_for(
            lambda: any(
                x.get("extension") == "noisy" and x.get("event") == "output" for x in s.logs()
            ),
            10,
            "output lines",
        )
        lines = [x for x in s.logs() if x.get("event") == "output"]
        assert {x["stream"] for x in lines} <= {"stdout", "stderr"}
        # Prints never corrupt the channel: it gets to running (its first lines may come
        # while it is still starting, before its ready).
        wait_for(lambda: s.ext("noisy")["state"] == "running", 10, "noisy running")


def test_kill_worker_restarts_immediately_after_healthy_run(tmp_path: Path) -> None:
    mods = [module_entry("ok", "ok_daemon", restart={"policy": "on-failure"})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        pid = s.wait_state("ok", "running")["pid"]
        os.kill(pid, signal.SIGKILL)
        e = wait_for(
            lambda: (x := s.ext("ok"))["pid"] not in (None, pid) and x["state"] == "running" and x,
            10,
            "restart",
        )
        assert e["restarts"] == 1
        assert "SIGKILL" in e["last_exit"]


def test_worker_environment(tmp_path: Path) -> None:
    """Workers get the supervisor's environment plus `env:`, minus systemd's protocol variables
    and where the control socket lives; their cwd is the extension's directory."""
    out = tmp_path / "env.json"
    mods = [module_entry("env", "env_report", config={"out": str(out)}, env={"MY_VAR": "42"})]
    with serve_fixture(tmp_path, mods) as s:
        os.environ["NOTIFY_SOCKET"] = "/nonexistent/notify"  # serve must not pass it on
        try:
            s.start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        s.wait_state("env", "running")
        report = json.loads(wait_for(lambda: out.exists() and out.read_text(), 10, "report"))
        env = report["env"]
        assert env["MY_VAR"] == "42"
        assert env["EXTENSION_STATE_DIR"].endswith("/extensions/env")
        for private in ("NOTIFY_SOCKET", "SPCTL_SOCKET", "STATE_DIRECTORY", "SPCTL_PARENT_PID"):
            assert private not in env, private
        assert "PATH" in env
        assert report["cwd"] == str(s.extensions / "modules" / "env_report")


def test_socket_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [module_entry("ok", "ok_daemon")])
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    s = Serve(tmp_path, ext, shared / "control.sock")
    s.start(wait=False)
    assert s.proc is not None
    assert s.proc.wait(20) == 1
    text = s.log_path.read_text()
    assert "is writable by group or others" in text
    assert "Traceback" not in text
