"""State-change hooks on a real ``spctl serve``: a real hook command (tests/fixtures/hook_append)
hears onCrash, onFailed and onRecovered of crashing extensions; a crash loop runs it at most
its rate limit; a hanging hook is killed at its timeout without holding up restarts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIXTURES, Serve, make_extensions, module_entry, pid_gone, wait_for

HOOK = str(FIXTURES / "hook_append")
FAST = {"policy": "always", "maxRestarts": 1000, "window": "60s", "backoff": 0.05}
FAST |= {"maxBackoff": 0.1}


def hook(out: Path, *extra: str) -> list[str]:
    return [sys.executable, HOOK, str(out), *extra]


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Path]]:
    root = tmp_path_factory.mktemp("hooks")
    out = root / "out"
    out.mkdir()
    modules = [
        # crashes once after a while, then is back: onCrash, onRecovered
        module_entry(
            "flaky",
            "crash_later",
            config={"after": 1.0},
            restart={**FAST, "backoff": 0.2, "maxBackoff": 0.5},
            hooks={"onCrash": hook(out / "flaky"), "onRecovered": hook(out / "flaky")},
        ),
        # crash loop: at most 5 runs of onCrash per minute
        module_entry(
            "looping",
            "crash_later",
            config={"after": 0.05},
            restart=FAST,
            hooks={"onCrash": hook(out / "looping")},
        ),
        # gives up after one restart: onFailed (from the file's hooks)
        module_entry(
            "doomed",
            "crash_later",
            config={"after": 0.05},
            restart={"policy": "always", "maxRestarts": 1, "window": "60s", "backoff": 0.05},
            hooks={"onCrash": ["/nonexistent/hook"]},  # cannot start: logged, nothing else
        ),
        # its hook hangs: killed after 8 s while the loop goes on (started by its test)
        module_entry(
            "stuck",
            "crash_later",
            enabled=False,
            config={"after": 0.1},
            restart=FAST,
            hooks={"onCrash": hook(out / "stuck", "--hang"), "timeout": 8},
        ),
    ]
    ext = make_extensions(root, modules)
    text = (ext / "modules.yaml").read_text()
    top = {"onFailed": hook(out / "failed")}
    (ext / "modules.yaml").write_text(f"hooks: {json.dumps(top)}\n{text}")
    s = Serve(root, ext, root / "run" / "control.sock")
    s.start()
    try:
        yield s, out
    finally:
        s.stop()


def test_a_crash_and_the_recovery(env: tuple[Serve, Path]) -> None:
    s, out = env
    got = wait_for(lambda: (e := events(out / "flaky")) and len(e) >= 2 and e, 30, "flaky hooks")
    crash, recovered = got[0], got[1]
    assert crash["event"] == "onCrash" and crash["extension"] == "flaky"
    assert crash["state"] == "crashed" and crash["reason"] and crash["time"].endswith("Z")
    assert recovered["event"] == "onRecovered" and recovered["state"] == "running"
    assert recovered["restarts"] >= 1
    # the hook prints after it appended its line, and serve logs that print when it reads it
    # from the hook's pipe: wait for it, do not race it
    wait_for(
        lambda: any(
            e.get("event") == "hook output" and e.get("line") == "hook saw onCrash of flaky"
            for e in s.logs()
        ),
        10,
        "the onCrash hook's output in the log",
    )


def test_on_failed_from_the_files_hooks_and_a_hook_that_cannot_start(
    env: tuple[Serve, Path],
) -> None:
    s, out = env
    s.wait_state("doomed", "failed")
    got = wait_for(lambda: events(out / "failed"), 20, "doomed's onFailed")
    assert [e["event"] for e in got] == ["onFailed"]
    assert got[0]["state"] == "failed" and got[0]["extension"] == "doomed"
    cannot = [e for e in s.logs() if e.get("event") == "hook cannot start"]
    assert cannot and cannot[0]["extension"] == "doomed" and "/nonexistent/hook" in str(cannot[0])


def test_a_crash_loop_runs_the_hook_at_most_the_rate_limit(env: tuple[Serve, Path]) -> None:
    s, out = env
    wait_for(lambda: s.ext("looping")["restarts"] >= 8, 40, "looping to restart 8 times")
    wait_for(lambda: len(events(out / "looping")) >= 5, 20, "5 onCrash runs")
    wait_for(
        lambda: any(
            e.get("event") == "hook suppressed by its rate limit"
            and e.get("extension") == "looping"
            for e in s.logs()
        ),
        20,
        "the suppression to be logged",
    )
    got = events(out / "looping")
    assert len(got) == 5, got
    assert all(e["event"] == "onCrash" and e["extension"] == "looping" for e in got)


def test_a_hanging_hook_is_killed_at_its_timeout_and_restarts_go_on(
    env: tuple[Serve, Path],
) -> None:
    s, out = env
    assert s.spctl("enable", "stuck").returncode == 0
    first = wait_for(lambda: events(out / "stuck"), 30, "the first stuck hook")[0]

    def back_up() -> bool:
        row = s.ext("stuck")
        return bool(row["restarts"] > first["restarts"] and row["state"] == "running")

    # the crash that ran the hook was followed by a restart, while the hook still hangs
    wait_for(back_up, 20, "stuck to be running again")
    assert not pid_gone(first["pid"]), "the restart waited for the hook to be killed"
    wait_for(lambda: pid_gone(first["pid"]), 20, "the hanging hook to be killed")
    timed_out = [
        e
        for e in s.logs()
        if e.get("event") == "hook timed out: killed" and e.get("extension") == "stuck"
    ]
    assert timed_out and timed_out[0]["timeout"] == 8
