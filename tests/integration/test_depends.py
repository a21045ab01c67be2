"""``dependsOn`` with a real supervisor and real workers: an extension starts only once the
ones it depends on are running (``waiting for X`` meanwhile), stops before them, and waits
(saying so) while a dependency is ``failed``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import FIXTURES, Serve, module_entry, serve_fixture, wait_for


def _states(s: Serve) -> list[tuple[str, str]]:
    """(extension, to) of every state transition in the supervisor's log, in order."""
    return [(e["extension"], e["to"]) for e in s.logs() if e.get("event") == "state"]


def _index(s: Serve, ext: str, to: str, *, last: bool = False) -> int:
    """Where the first (or ``last``) transition of ``ext`` to ``to`` is in the log."""
    states = _states(s)
    assert (ext, to) in states, states
    if last:
        return len(states) - 1 - states[::-1].index((ext, to))
    return states.index((ext, to))


def test_starts_after_its_dependencies_and_stops_before_them(tmp_path: Path) -> None:
    mods = [
        module_entry("app", "ok_daemon", dependsOn=["base", "db"]),
        module_entry("base", "slow_sync", config={"seconds": 1.5}),
        module_entry("db", "ok_daemon"),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()

        def waiting_row() -> dict[str, Any] | None:
            e = s.ext("app")
            return e if "waiting for" in (e["reason"] or "") else None

        waiting: dict[str, Any] = wait_for(waiting_row, 10, "app waiting")
        assert waiting["state"] == "stopped"
        assert "base" in waiting["reason"], waiting
        s.wait_state("app", "running")
        assert _index(s, "app", "starting") > _index(s, "base", "running")
        assert _index(s, "app", "starting") > _index(s, "db", "running")
        assert s.stop() == 0
        # dependents first: app is gone before either dependency begins to stop
        assert _index(s, "app", "stopped") < _index(s, "base", "stopping")
        assert _index(s, "app", "stopped") < _index(s, "db", "stopping")


def test_a_failed_dependency_holds_its_dependents_until_it_runs(tmp_path: Path) -> None:
    mods = [
        module_entry("base", "crash_import", restart={"backoff": "50ms"}),
        module_entry("app", "ok_daemon", dependsOn=["base"]),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        s.wait_state("base", "failed")

        def held() -> dict[str, Any] | None:
            e = s.ext("app")
            return e if "failed" in (e["reason"] or "") else None

        app: dict[str, Any] = wait_for(held, 10, "app to say its dependency failed")
        assert app["state"] == "stopped"
        assert app["reason"] == "waiting for base (failed)"
        assert ("app", "starting") not in _states(s)
        # an explicit start is refused while a dependency cannot run, and says why
        out = s.spctl("start", "app")
        assert out.returncode == 1
        assert "waiting for base" in out.stderr
        # the dependency is repaired and restarted: its dependent follows by itself
        broken = s.extensions / "modules" / "crash_import"
        shutil.rmtree(broken)
        shutil.copytree(FIXTURES / "ok_daemon", broken)
        out = s.spctl("restart", "base")
        assert out.returncode == 0, out.stderr
        s.wait_state("app", "running")
        assert _index(s, "app", "starting") > _index(s, "base", "running")


def test_start_of_a_dependent_starts_its_dependencies_first(tmp_path: Path) -> None:
    mods = [
        module_entry("base", "ok_daemon", enabled=False),
        module_entry("app", "ok_daemon", dependsOn=["base"], enabled=False),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        out = s.spctl("enable", "base")
        assert out.returncode == 0, out.stderr
        s.wait_state("base", "running")
        assert s.spctl("stop", "base").returncode == 0
        out = s.spctl("enable", "app")  # enable starts it: base first
        assert out.returncode == 0, out.stderr
        assert s.ext("app")["state"] == "running"
        assert s.ext("base")["state"] == "running"
        assert _index(s, "app", "starting") > _index(s, "base", "running", last=True)


def test_reload_starts_and_stops_in_dependency_order(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [module_entry("other", "ok_daemon")]) as s:
        s.start()
        s.wait_state("other", "running")
        both = [
            module_entry("other", "ok_daemon"),
            module_entry("app", "ok_daemon", dependsOn=["base"]),
            module_entry("base", "slow_sync", config={"seconds": 0.5}),
        ]
        (s.extensions / "modules.yaml").write_text(yaml.safe_dump({"modules": both}))
        shutil.copytree(FIXTURES / "slow_sync", s.extensions / "modules" / "slow_sync")
        out = s.spctl("reload")
        assert out.returncode == 0, out.stderr
        assert s.ext("app")["state"] == "running"
        assert _index(s, "app", "starting") > _index(s, "base", "running")
        # both removed at once: the dependent goes first
        (s.extensions / "modules.yaml").write_text(yaml.safe_dump({"modules": both[:1]}))
        out = s.spctl("reload")
        assert out.returncode == 0, out.stderr
        assert _index(s, "app", "stopped") < _index(s, "base", "stopping")
        assert s.ext("other")["state"] == "running"
