"""Faults of the zygote (``SPCTL_ZYGOTE=on``), with real runners, supervisors, zygotes and
workers: the zygote killed in the middle of a fork, a fork refused by ``pids.max``, the
interpreter replaced or deleted under it, a hundred spawns at once, no descriptor of one worker
in another, kill -9 of the core, an extension with threads at import, what status says.

Every fault must end with the worker started (forked, or exec'd saying why) and nothing left
behind: no process of a failed request, no descriptor of another worker.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor.core import process, zygote
from supervisor.core.kill import children
from supervisor.core.process import WorkerProcess, set_child_subreaper, spawn_worker
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from supervisor.rules.states import State
from tests.helpers import module_entry, pid_gone, serve_fixture, wait_for
from tests.integration.test_runner_calls import _server, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _live_children() -> set[int]:
    """Our children that still run (a zombie is a process that is gone)."""
    return {p for p in children("self") if _state(p) not in ("Z", "gone")}


def _inodes(pid: int) -> dict[int, str]:
    """fd → what it is (``pipe:[N]``, ``socket:[N]``, a path) of ``pid``."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return out


def _notes(runner: Runner) -> list[str]:
    return [text for _, stream, text in runner.output if stream == "spctl"]


async def test_zygote_killed_in_the_middle_of_a_fork_means_exec_and_leaves_nothing(
    zyg: zygote.Zygote,
) -> None:
    """kill -9 of the zygote while it has a fork under way (its intermediate exists): the
    worker of that request is exec'd, a worker the dead zygote may have forked finds its
    channel closed and exits, and the next request gets a new zygote."""
    fired: list[int] = []
    for attempt in range(20):
        assert zyg.start() and zyg.pid is not None
        target = zyg.pid
        stop = threading.Event()

        def killer(target: int = target, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                if children(target):  # the intermediate: a fork is under way
                    os.kill(target, signal.SIGKILL)
                    fired.append(target)
                    return

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            async with running(_server(f"mid{attempt}", "mcp_echo")) as runner:
                assert runner.state is State.RUNNING and runner.pid is not None
                assert await runner.ping() > 0
                if fired and fired[-1] == target:
                    mode, why = runner.spawned or ("", "")
                    print(f"\nzygote killed mid-fork (attempt {attempt}): worker {mode}: {why}")
                    if mode == "exec":  # killed before it answered
                        assert "zygote" in why
                        assert any("exec'd, not forked" in n for n in _notes(runner))
                    keep = {runner.pid, *([zyg.pid] if zyg.pid else [])}
                    # whatever the dead zygote forked finds its channel closed and exits
                    wait_for(
                        lambda keep=keep: _live_children() <= keep,
                        10,
                        "no process of the killed zygote's request left",
                    )
        finally:
            stop.set()
            thread.join()
        if fired and fired[-1] == target:
            break
    assert fired, "the zygote was never caught in the middle of a fork"
    async with running(_server("after", "mcp_echo")) as after:
        assert after.spawned == ("zygote", "")  # a new zygote forks again
        assert zyg.pid not in (None, *fired)


def _pids_cgroup(name: str) -> Path | None:
    """A new pids cgroup (v2 or v1 hierarchy) we may write, or None."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/pids")):
        controllers = root / "cgroup.controllers"
        v2_pids = controllers.exists() and "pids" in controllers.read_text().split()
        if root.name == "pids" or v2_pids:
            group = root / name
            try:
                group.mkdir()
                (group / "pids.max").write_text("max")
            except OSError:
                continue
            return group
    return None


async def test_a_fork_refused_by_pids_max_means_exec_with_the_reason(
    zyg: zygote.Zygote,
) -> None:
    """The zygote's own fork fails (EAGAIN: its cgroup's pids.max is reached). The worker's
    cgroup cannot refuse it: a worker joins its cgroup only after the fork."""
    group = _pids_cgroup(f"zygote-test-{os.getpid()}")  # not spctl-*: no stale sweep of it
    if group is None:
        pytest.skip("no writable pids cgroup here (needs root and the pids controller)")
    try:
        assert zyg.start() and zyg.pid is not None
        (group / "cgroup.procs").write_text(str(zyg.pid))
        (group / "pids.max").write_text("1")  # the zygote alone: no fork
        async with running(_server("refused", "mcp_echo")) as runner:
            assert runner.state is State.RUNNING
            assert runner.spawned is not None and runner.spawned[0] == "exec"
            why = runner.spawned[1]
            assert "fork: Resource temporarily unavailable (EAGAIN)" in why, why
            assert any("exec'd, not forked: zygote: fork:" in n for n in _notes(runner))
            assert zyg.pid is not None and not pid_gone(zyg.pid)  # it answered: still good
            (group / "pids.max").write_text("max")
            async with running(_server("allowed", "mcp_echo")) as again:
                assert again.spawned == ("zygote", "")
    finally:
        process.stop_zygote()
        wait_for(lambda: not (group / "cgroup.procs").read_text().split(), 10, "empty cgroup")
        group.rmdir()


def _copied_venv(where: Path) -> Path:
    """A venv whose interpreter is a copy (not a symlink) that sees this venv's packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--copies", "--without-pip", str(where)], check=True
    )
    site = next((where / "lib").glob("python*/site-packages"))
    ours = next((Path(sys.prefix) / "lib").glob("python*/site-packages"))
    (site / "spctl-test.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    return where / "bin" / "python"


@asynccontextmanager
async def _running_on(python: Path, name: str) -> AsyncIterator[Runner]:
    """A runner whose worker is ``python -P -m worker`` (as an extension with ``python:``)."""

    async def spawn(ext: Any, on_line: Callable[[str, str], None], on_spawned: Any) -> Any:
        env = {**os.environ, "SPCTL_EXTENSION": ext.name}
        argv = [str(python), "-P", "-m", "worker"]
        proc: WorkerProcess = await spawn_worker(
            argv=argv, env=env, on_line=on_line, on_spawned=on_spawned
        )
        return proc

    ctx = RunnerContext(spawn=spawn, keeper_watch=lambda pgid: None, keeper_unwatch=lambda p: None)
    runner = Runner(_server(name, "mcp_echo"), ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
        with anyio.fail_after(60):
            await runner.start()
        try:
            yield runner
        finally:
            with anyio.fail_after(30):
                await runner.retire()
            tg.cancel_scope.cancel()


async def test_the_interpreter_replaced_under_the_zygote_means_exec_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set_child_subreaper()
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    monkeypatch.setattr(zygote, "BACKOFF", 0.0)
    python = _copied_venv(tmp_path / "venv")
    process.stop_zygote()
    z = zygote.Zygote(
        str(python),
        starting=process.helper_starting,
        started=process.helper_started,
        ended=process.helper_ended,
    )
    monkeypatch.setattr(process, "_zygote", z)
    try:
        async with _running_on(python, "before") as before:
            assert before.spawned == ("zygote", "")
            old = z.pid
            assert old is not None
            # an upgrade: a new file renamed over the old one (the zygote's is now deleted)
            shutil.copy2(python, python.with_name("python.new"))
            os.replace(python.with_name("python.new"), python)
            async with _running_on(python, "upgraded") as upgraded:
                assert upgraded.spawned is not None and upgraded.spawned[0] == "exec"
                assert f"the interpreter {python} was " in upgraded.spawned[1]
                assert "under the zygote" in upgraded.spawned[1]
                assert pid_gone(old)  # the stale zygote is killed
                assert before.pid is not None and not pid_gone(before.pid)  # no worker dies
                async with _running_on(python, "next") as nxt:  # the new interpreter's zygote
                    assert nxt.spawned == ("zygote", "")
                    assert z.pid not in (None, old) and z.starts == 2
        # deleted: the zygote is killed and none is started again (the caller's exec says why)
        assert z.start() and z.pid is not None
        stale = z.pid
        python.unlink()
        assert not z.start()
        deleted = f"the interpreter {python} was deleted under the zygote (pid {stale})"
        assert z.last_error == deleted
        assert pid_gone(stale) and z.pid is None
        assert not z.start() and z.last_error.startswith("cannot start the zygote")
    finally:
        z.close()


async def test_a_core_that_is_not_a_child_subreaper_execs(
    zyg: zygote.Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PR_SET_CHILD_SUBREAPER a forked worker would be re-parented to init, not to the
    core, and refuse to run (its parent is not the core): such a core execs every worker."""
    monkeypatch.setattr(process, "_subreaper", False)
    argv = [sys.executable, "-P", "-m", "worker"]
    assert process.spawn_mode(argv) == "exec"
    async with running(_server("plain", "mcp_echo")) as runner:
        assert runner.spawned == ("exec", "") and zyg.pid is None  # not even started
    monkeypatch.setattr(process, "_subreaper", True)
    assert process.spawn_mode(argv) == "zygote"


async def test_a_hundred_spawns_at_once(zyg: zygote.Zygote) -> None:
    runners: list[Runner] = []
    modes: list[tuple[str, str] | None] = []
    done = anyio.Event()

    async def one(i: int) -> None:
        async with running(_server(f"h{i}", "mcp_echo")) as runner:
            runners.append(runner)
            modes.append(runner.spawned)
            if len(runners) == 100:
                done.set()
            await done.wait()
            assert await runner.ping() > 0

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
    assert len(runners) == 100 and modes == [("zygote", "")] * 100
    assert zyg.starts == 1 and zyg.forks == 100 and zyg.last_error == ""


async def test_no_descriptor_of_one_worker_is_in_another(zyg: zygote.Zygote) -> None:
    """Five forked workers at once: each holds its own stdin/pipes/channel at 0–3 and its own
    event loop's descriptors, nothing of another worker, of the core or of the zygote."""
    seen: dict[int, dict[int, str]] = {}
    done = anyio.Event()

    async def one(i: int) -> None:
        async with running(_server(f"fd{i}", "mcp_echo")) as runner:
            assert runner.spawned == ("zygote", "") and runner.pid is not None
            seen[runner.pid] = _inodes(runner.pid)
            if len(seen) == 5:
                done.set()
            await done.wait()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, i)
    numbered = re.compile(r"(pipe|socket):\[\d+\]")  # an inode: one object of the kernel
    assert zyg.pid is not None
    zygote_fds = set(_inodes(zyg.pid).values())
    for pid, fds in seen.items():
        assert sorted(fds) == list(range(7)), (pid, fds)  # 0-3 passed, 4-6 its own loop
        assert fds[0] == "/dev/null"
        objects = {t for t in fds.values() if numbered.fullmatch(t)}
        assert len(objects) == 5, fds  # its 2 pipes, its channel, its loop's self-pipe pair
        assert not objects & zygote_fds
        for other, other_fds in seen.items():
            if other != pid:
                assert not objects & set(other_fds.values()), (pid, other)


def _pidfds_gone(pids: list[int], timeout: float) -> set[int]:
    """Wait until every pid exits; the ones still running after ``timeout``."""
    fds = {os.pidfd_open(p): p for p in pids}
    try:
        pending = set(fds)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending), [], [], deadline - time.monotonic())
            pending -= set(ready)
        return {fds[fd] for fd in pending}
    finally:
        for fd in fds:
            os.close(fd)


def test_kill_9_of_the_core_with_forked_workers_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    mods = [
        module_entry(f"gc-{i}", "grandchild", config={"pidfile": str(tmp_path / f"gc-{i}.pid")})
        for i in range(5)
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        exts = [s.wait_state(f"gc-{i}", "running", timeout=60) for i in range(5)]
        assert [e["spawn"] for e in exts] == ["zygote"] * 5
        workers = [e["pid"] for e in exts]
        grandchildren = [
            int(wait_for(lambda i=i: (p := tmp_path / f"gc-{i}.pid").exists() and p.read_text()))
            for i in range(5)
        ]
        status = s.try_status()
        assert status is not None
        zygote_pid = status["supervisor"]["zygote"]["pid"]
        assert zygote_pid and status["supervisor"]["zygote"]["forks"] == 5
        assert s.proc is not None
        s.proc.kill()
        s.proc.wait()
        left = _pidfds_gone([*workers, *grandchildren, zygote_pid], 5)
        assert not left, f"{len(left)} processes survived kill -9 of the supervisor: {left}"


def test_an_extension_that_starts_threads_at_import_runs_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    report = tmp_path / "report.json"
    mods = [module_entry("threads", "threads_at_import", config={"report": str(report)})]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        ext = s.wait_state("threads", "running")
        assert ext["spawn"] == "zygote"
        got = json.loads(wait_for(lambda: report.exists() and report.read_text()))
        assert got["pid"] == got["pool_pid"] == ext["pid"]  # its pool runs in the worker
        assert got["ticks"] > 0
        assert got["argv"][0].endswith("/worker/__main__.py")  # as python -m worker's
        assert got["orig_argv"][-3:] == ["-P", "-m", "worker"]
        assert "ticker-at-import" in got["threads"]
        assert len(os.listdir(f"/proc/{ext['pid']}/task")) >= 3  # main, ticker, pool: its own
        assert s.spctl("restart", "threads").returncode == 0  # forked again, threads again
        again = s.wait_state("threads", "running")
        assert again["spawn"] == "zygote" and again["pid"] != ext["pid"]


def test_status_says_how_each_worker_was_spawned_and_why_not_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    with serve_fixture(tmp_path, [module_entry("ok", "ok_daemon")]) as s:
        s.start()
        ext = s.wait_state("ok", "running")
        assert ext["spawn"] == "zygote" and ext["spawn_reason"] is None
        row = next(line for line in s.spctl("status").stdout.splitlines() if line.startswith("ok"))
        assert row.split()[:5] == ["ok", "module", "running", str(ext["pid"]), "fork"]
        status = s.try_status()
        assert status is not None
        zygote_pid = status["supervisor"]["zygote"]["pid"]
        os.kill(zygote_pid, signal.SIGSTOP)  # it takes the next request and never answers
        assert s.spctl("restart", "ok").returncode == 0
        ext = s.wait_state("ok", "running")
        assert ext["spawn"] == "exec"
        assert ext["spawn_reason"] == "zygote request failed: no answer within 2 s"
        row = next(line for line in s.spctl("status").stdout.splitlines() if line.startswith("ok"))
        assert row.split()[4] == "exec"
        shown = s.spctl("status", "ok").stdout
        assert "spawn: exec'd, not forked: zygote request failed: no answer within 2 s" in shown
        assert pid_gone(zygote_pid)  # out of step: killed
        notes = [e for e in s.logs() if "exec'd, not forked" in str(e.get("detail"))]
        assert [e["event"] for e in notes] == ["worker note"]  # not "lines dropped"
        assert s.spctl("restart", "ok").returncode == 0  # a new zygote forks it again
        ext = s.wait_state("ok", "running")
        assert ext["spawn"] == "zygote"
        status = s.try_status()
        assert status is not None
        new_zygote = status["supervisor"]["zygote"]["pid"]
        assert new_zygote not in (None, zygote_pid)
        assert s.stop() == 0
        assert pid_gone(new_zygote)  # stopped with the core, not left to its parent-death signal


def test_the_zygote_starts_with_serve_before_any_worker_and_only_when_one_will_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    with serve_fixture(tmp_path, [module_entry("ok", "ok_daemon")]) as s:
        s.start()
        ext = s.wait_state("ok", "running")
        assert ext["spawn"] == "zygote"
        events = [(e.get("event"), e.get("action"), e.get("to")) for e in s.logs()]
        early = events.index(("zygote", "started early", None))
        assert early < events.index(("state", None, "starting"))  # before the first spawn
        zyg = (s.try_status() or {})["supervisor"]["zygote"]
        assert zyg["starts"] == 1 and zyg["forks"] == 1  # the fork used the early one
        assert s.stop() == 0
        assert pid_gone(zyg["pid"])
    # nothing will fork (a disabled entry): no zygote until a fork asks for it
    off = module_entry("off", "ok_daemon", enabled=False)
    with serve_fixture(tmp_path / "off", [off]) as s:
        s.start()
        wait_for(lambda: any(e.get("event") == "ready" for e in s.logs()), 20, "ready")
        assert not any(e.get("event") == "zygote" for e in s.logs())
        zyg = (s.try_status() or {})["supervisor"]["zygote"]
        assert zyg["pid"] is None and zyg["starts"] == 0
        assert s.spctl("enable", "off").returncode == 0  # the lazy path: started by the fork
        assert s.wait_state("off", "running")["spawn"] == "zygote"
        zyg = (s.try_status() or {})["supervisor"]["zygote"]
        assert zyg["starts"] == 1 and zyg["pid"] is not None


def test_the_zygote_is_the_default_and_a_bad_switch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPCTL_ZYGOTE", raising=False)
    with serve_fixture(tmp_path, [module_entry("ok", "ok_daemon")]) as s:
        s.start()
        assert s.wait_state("ok", "running")["spawn"] == "zygote"
        assert s.stop() == 0
    monkeypatch.setenv("SPCTL_ZYGOTE", "maybe")
    with serve_fixture(tmp_path, [module_entry("ok", "ok_daemon")]) as s:
        s.start(wait=False)
        assert s.proc is not None and s.proc.wait(30) == 2
        assert "SPCTL_ZYGOTE='maybe' is not on or off" in s.log_path.read_text()
    monkeypatch.setenv("SPCTL_ZYGOTE", "off")
    with serve_fixture(tmp_path, [module_entry("ok", "ok_daemon")]) as s:
        s.start()
        assert s.wait_state("ok", "running")["spawn"] == "exec"
        assert (s.try_status() or {})["supervisor"]["zygote"] is None


def test_an_entry_that_sets_what_an_interpreter_reads_at_start_is_execd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHONPATH, PYTHONHASHSEED…, a locale or TZ of the entry's own are read when an
    interpreter starts: a fork of the zygote would ignore them, so that worker is exec'd."""
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    out = {n: tmp_path / f"{n}.json" for n in ("plain", "path", "tz")}
    mods = [
        module_entry("plain", "env_report", config={"out": str(out["plain"])}),
        module_entry(
            "path",
            "env_report",
            config={"out": str(out["path"])},
            env={"PYTHONPATH": str(tmp_path), "PYTHONHASHSEED": "7"},
        ),
        module_entry("tz", "env_report", config={"out": str(out["tz"])}, env={"TZ": "Asia/Tokyo"}),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        plain, path, tz = (s.wait_state(n, "running") for n in ("plain", "path", "tz"))
        assert (plain["spawn"], plain["spawn_reason"]) == ("zygote", None)
        assert path["spawn"] == "exec"
        assert path["spawn_reason"] == (
            "its environment sets PYTHONHASHSEED, PYTHONPATH (read when an interpreter starts)"
        )
        assert tz["spawn"] == "exec"
        assert tz["spawn_reason"] == "its locale differs from the zygote's (TZ)"
        env = json.loads(wait_for(lambda: out["path"].exists() and out["path"].read_text()))
        assert env["env"]["PYTHONPATH"] == str(tmp_path)


async def test_a_forked_worker_shows_the_command_line_of_an_exec_d_one(
    zyg: zygote.Zygote,
) -> None:
    async with running(_server("title", "mcp_echo")) as runner:
        assert runner.spawned == ("zygote", "") and runner.pid is not None
        with open(f"/proc/{runner.pid}/cmdline", "rb") as f:
            args = [a.decode() for a in f.read().split(b"\0") if a]
        assert args == [sys.executable, "-P", "-m", "worker"]
        assert zyg.pid is not None
        with open(f"/proc/{zyg.pid}/cmdline", "rb") as f:  # the zygote's own is untouched
            assert f.read().split(b"\0")[-2] == b"worker.zygote"


def test_a_forked_worker_s_proc_environ_is_its_own_unless_too_big_for_the_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    out = {n: tmp_path / f"{n}.json" for n in ("small", "big")}
    big = "x" * (zygote.ENV_ROOM + 1)
    mods = [
        module_entry("small", "env_report", config={"out": str(out["small"])}, env={"MINE": "1"}),
        module_entry("big", "env_report", config={"out": str(out["big"])}, env={"HUGE": big}),
    ]
    with serve_fixture(tmp_path, mods) as s:
        s.start()
        for name in ("small", "big"):
            ext = s.wait_state(name, "running")
            assert ext["spawn"] == "zygote"
            seen = json.loads(wait_for(lambda n=name: out[n].exists() and out[n].read_text()))
            block = Path(f"/proc/{ext['pid']}/environ").read_bytes()
            shown = dict(
                entry.decode().split("=", 1) for entry in block.split(b"\0") if b"=" in entry
            )
            if name == "small":  # its own environment, as an exec'd worker's block shows it
                assert seen["env"].items() <= shown.items() and shown["MINE"] == "1"
                # what the worker takes out of os.environ once read (the kernel's copy keeps it)
                assert set(shown) - set(seen["env"]) == {"SPCTL_EXTENSION", "SPCTL_PARENT_PID"}
            else:  # too big for the room: the zygote's block, which holds nothing of it
                assert seen["env"]["HUGE"] == big
                assert "HUGE" not in shown and "SPCTL_ZYGOTE_ROOM" in shown
