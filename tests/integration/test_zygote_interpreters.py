"""A zygote of another interpreter (an entry's ``python:``) when more than one extension runs
on it: real ``spctl serve``, real venvs (``--system-site-packages`` of the interpreter running
the tests, so a distinct interpreter path), real workers.

The entries point ``PYTHONPATH`` at the worker package and msgpack, as an entry on another
interpreter must (docs/operations.md); that zygote is started with it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import pytest
import yaml

from tests.helpers import REPO, Serve, module_entry, pid_gone, serve_fixture, wait_for


@pytest.fixture(autouse=True)
def _zygote_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")


def _venv(path: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)],
        check=True,
        timeout=120,
    )
    python = str(path / "bin" / "python")
    assert python != sys.executable
    return python


def _entry(name: str, python: str) -> dict[str, Any]:
    where = f"{REPO}{os.pathsep}{Path(msgpack.__file__).parent.parent}"
    return module_entry(name, "ok_daemon", python=python, env={"PYTHONPATH": where})


def _others(s: Serve) -> list[dict[str, Any]]:
    status = s.try_status()
    assert status is not None
    others: list[dict[str, Any]] = status["supervisor"]["zygote"]["others"]
    return others


def _row(s: Serve, name: str) -> list[str]:
    out = s.spctl("status").stdout
    return next(line.split() for line in out.splitlines() if line.startswith(name + " "))


def _fds(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def test_two_extensions_on_one_interpreter_are_forked_from_its_zygote_one_alone_is_execd(
    tmp_path: Path,
) -> None:
    shared, lone = _venv(tmp_path / "shared"), _venv(tmp_path / "lone")
    mods = [_entry("a", shared), _entry("b", shared), _entry("c", lone)]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        a, b, c = (s.wait_state(n, "running") for n in "abc")
        assert a["spawn"] == b["spawn"] == f"zygote:{shared}"
        (zyg,) = _others(s)  # one second zygote, of the shared interpreter
        assert zyg["python"] == shared and zyg["forks"] == 2 and zyg["starts"] == 1
        assert os.readlink(f"/proc/{zyg['pid']}/exe") == os.path.realpath(shared)
        assert _row(s, "a")[4] == f"fork:{shared}"
        assert c["spawn"] == "exec"  # alone on its interpreter
        assert c["spawn_reason"] == f"no other extension runs on {lone}"
        assert _row(s, "c")[4] == "exec"
        # a forked worker holds 0–3 and its own loop's, nothing of its sibling's
        fa, fb = _fds(a["pid"]), _fds(b["pid"])
        assert sorted(fa) == sorted(fb) == [0, 1, 2, 3, 4, 5, 6]
        ends = [{t for t in f.values() if t.startswith(("pipe:", "socket:"))} for f in (fa, fb)]
        assert len(ends[0]) == len(ends[1]) == 5 and not ends[0] & ends[1]
        # a reload leaves one extension on it: its zygote is stopped, the next start exec's
        ext = tmp_path / "extensions"
        (ext / "modules.yaml").write_text(yaml.safe_dump({"modules": mods[:1] + mods[2:]}))
        assert s.spctl("reload").returncode == 0
        wait_for(lambda: _others(s) == [], 20, "the shared interpreter's zygote stopped")
        assert pid_gone(zyg["pid"])
        assert s.spctl("restart", "a").returncode == 0
        a = s.wait_state("a", "running")
        assert a["spawn"] == "exec" and a["spawn_reason"] == f"no other extension runs on {shared}"


def test_that_zygote_killed_is_restarted_and_meanwhile_workers_are_execd(
    tmp_path: Path,
) -> None:
    shared = _venv(tmp_path / "shared")
    with serve_fixture(tmp_path, [_entry("a", shared), _entry("b", shared)]) as s:
        s.start()
        s.wait_state("a", "running")
        s.wait_state("b", "running")
        (zyg,) = _others(s)
        os.kill(zyg["pid"], signal.SIGKILL)  # dead: restarted at most once a second, meanwhile exec
        wait_for(lambda: _others(s)[0]["pid"] is None, 10, "its death seen")

        def forked(name: str) -> bool:
            assert s.spctl("restart", name).returncode == 0
            ext = s.wait_state(name, "running")
            if ext["spawn"] == "exec":
                assert ext["spawn_reason"] == f"zygote (pid {zyg['pid']}) died"
            return bool(ext["spawn"] == f"zygote:{shared}")

        wait_for(lambda: forked("a"), 20, "a forked from a restarted zygote")
        (again,) = _others(s)
        assert again["starts"] == 2 and again["pid"] not in (None, zyg["pid"])
        os.kill(again["pid"], signal.SIGSTOP)  # takes the next request and never answers
        assert s.spctl("restart", "b").returncode == 0
        b = s.wait_state("b", "running")
        assert b["spawn"] == "exec"
        assert b["spawn_reason"] == "zygote request failed: no answer within 2 s"
        assert pid_gone(again["pid"])  # out of step: killed
        assert s.spctl("restart", "b").returncode == 0  # a third one forks it again
        b = s.wait_state("b", "running")
        assert b["spawn"] == f"zygote:{shared}"
        third = _others(s)[0]["pid"]
        assert s.stop() == 0
        assert pid_gone(third)  # stopped with the core


def test_its_interpreter_replaced_under_it_means_exec_saying_why(tmp_path: Path) -> None:
    shared = _venv(tmp_path / "shared")
    with serve_fixture(tmp_path, [_entry("a", shared), _entry("b", shared)]) as s:
        s.start()
        s.wait_state("a", "running")
        s.wait_state("b", "running")
        (zyg,) = _others(s)
        copy = Path(shared).with_name("python.new")  # an upgrade: another file at that path
        shutil.copy2(os.path.realpath(shared), copy)
        os.replace(copy, shared)
        assert s.spctl("restart", "a").returncode == 0
        a = s.wait_state("a", "running")
        assert a["spawn"] == "exec"
        assert a["spawn_reason"] == (
            f"the interpreter {shared} was replaced under the zygote (pid {zyg['pid']})"
        )
        assert pid_gone(zyg["pid"])
