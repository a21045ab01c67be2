"""Nothing of an extension outlives it or spctl (#17, item 2), whatever it does to escape.

An extension (fixture ``escaper``) double-forks a ``setsid sleep 1000``: a session of its own,
re-parented to spctl (the child subreaper). It must die with ``kill -9`` of serve (with cgroups:
the keeper empties the worker cgroups; without: the keeper kills the pids it learned and every
process carrying the worker's lineage mark), at ``spctl stop``, when its worker exits and at a
graceful stop of serve. A root extension that moves its child out of its cgroup is caught and
killed with the reason recorded; a stale ``spctl-*`` cgroup of a dead supervisor is emptied by
the next serve. Real supervisors and processes; every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.cgroups import detect
from tests.helpers import Serve, make_extensions, module_entry, pid_gone, wait_for

SUPPORT = detect(environ={})
needs_cgroups = pytest.mark.skipif(
    SUPPORT.mode == "none" or os.geteuid() != 0,
    reason=f"needs root and cgroups ({SUPPORT.mode}: {SUPPORT.reason})",
)
NEVER = {"policy": "never"}
OFF = {"filesystem": "off", "network": "any"}
DEADLINE = 10.0


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Escapee:
    """The escaped child, told apart from a later process that reuses its pid."""

    pid: int
    start: int

    @property
    def alive(self) -> bool:
        return _start_time(self.pid) == self.start and not pid_gone(self.pid)

    def kill(self) -> None:
        """Teardown only: kill it if the supervisor failed to (never a reused pid)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Run:
    """One serve of the escaper fixture; everything left behind is killed at teardown."""

    def __init__(self, tmp_path: Path, cgroups: bool, **config: Any) -> None:
        self.pidfile = tmp_path / "escapee.pid"
        entry = module_entry(
            "escaper",
            "escaper",
            restart=NEVER,
            config={"pidfile": str(self.pidfile), **config},
            sandbox=OFF,  # each door must hold with the sandbox off (it closes some of them)
        )
        ext = make_extensions(tmp_path, [entry])
        args = [] if cgroups else ["--no-cgroups"]
        self.serve = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", extra_args=args)
        self.escapees: list[Escapee] = []

    def escapee(self) -> Escapee:
        """Wait for the fixture's child (a new one after each start) and check it escaped."""
        old = {e.pid for e in self.escapees}

        def fresh() -> int | None:
            try:
                pid = int(self.pidfile.read_text())
            except (OSError, ValueError):
                return None
            return pid if pid not in old else None

        pid = wait_for(fresh, DEADLINE, f"the escapee's pid in {self.pidfile}")
        start = _start_time(pid)
        assert start is not None, f"escapee {pid} already gone"
        escapee = Escapee(pid, start)
        self.escapees.append(escapee)
        worker = self.serve.ext("escaper")["pid"]
        assert os.getsid(pid) != os.getsid(worker), "the child did not leave the session"
        return escapee

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.serve.stop(DEADLINE)  # gracefully: a killed keeper would leave cgroups behind
        self.serve.kill()
        for e in self.escapees:
            e.kill()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    runs: list[Run] = []

    def make(cgroups: bool, **config: Any) -> Run:
        r = Run(tmp_path, cgroups, **config)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.cleanup()


def gone(e: Escapee, what: str, timeout: float = DEADLINE) -> float:
    """Seconds until the escapee died; fails after ``timeout``."""
    t0 = time.monotonic()
    wait_for(lambda: not e.alive, timeout, f"escapee {e.pid} to die ({what})")
    return time.monotonic() - t0


def kill_9(serve: Serve) -> None:
    assert serve.proc is not None
    serve.proc.kill()
    serve.proc.wait(DEADLINE)


def ours(serve: Serve) -> list[Path]:
    assert serve.proc is not None
    return [h.path / f"spctl-{serve.proc.pid}" for h in SUPPORT.hierarchies]


# -- kill -9 of serve ----------------------------------------------------------------------------


@needs_cgroups
def test_kill_9_of_serve_with_cgroups_kills_the_escapee(run: Any) -> None:
    """(a) The keeper freezes, kills and thaws every worker cgroup, then removes them."""
    r = run(cgroups=True)
    r.serve.start()
    r.serve.wait_state("escaper", "running")
    e = r.escapee()
    groups = ours(r.serve)
    mode = [ev for ev in r.serve.logs() if ev.get("event") == "limits enforcement"]
    assert all(g.is_dir() for g in groups), (groups, mode)
    kill_9(r.serve)
    print(f"\nescapee gone {gone(e, 'kill -9 of serve, cgroups') * 1000:.0f} ms after kill -9")
    wait_for(lambda: not any(g.exists() for g in groups), DEADLINE, f"{groups} to be removed")


def test_kill_9_of_serve_without_cgroups_kills_the_escapee(run: Any) -> None:
    """(b) The keeper kills what carries the worker's lineage mark (and the pids it learned)."""
    r = run(cgroups=False)
    r.serve.start()
    r.serve.wait_state("escaper", "running")
    e = r.escapee()
    kill_9(r.serve)
    print(f"\nescapee gone {gone(e, 'kill -9 of serve, no cgroups') * 1000:.0f} ms after kill -9")


# -- without cgroups: stop, exit, graceful shutdown ------------------------------------------------


def test_stop_kills_the_adopted_escapee(run: Any) -> None:
    """(c) An orphan adopted while its worker lives belongs to it: `spctl stop` ends both."""
    r = run(cgroups=False)
    r.serve.start()
    r.serve.wait_state("escaper", "running")
    e = r.escapee()
    wait_for(
        lambda: any(
            ev.get("event") == "orphan adopted" and ev.get("pid") == e.pid for ev in r.serve.logs()
        ),
        DEADLINE,
        "the orphan to be adopted",
    )
    assert e.alive  # adopted, not killed: its worker lives
    done = r.serve.spctl("stop", "escaper")
    assert done.returncode == 0, done.stderr
    gone(e, "spctl stop", timeout=1.0)  # stopped means the whole tree is gone
    assert r.serve.ext("escaper")["state"] == "stopped"
    assert any(
        ev.get("event") == "orphan killed" and ev.get("pid") == e.pid for ev in r.serve.logs()
    )


def test_worker_exit_kills_the_adopted_escapee(run: Any) -> None:
    """(d) The worker exits on its own: its adopted orphan goes with it."""
    r = run(cgroups=False, exit_after=0.5)
    r.serve.start()
    e = r.escapee()
    r.serve.wait_state("escaper", "stopped")  # restart: never
    gone(e, "the worker's exit")
    assert r.serve.proc is not None and r.serve.proc.poll() is None


def test_graceful_stop_of_serve_kills_the_adopted_escapee(run: Any) -> None:
    """(e) SIGTERM of serve: everything stops, the escapee too, before serve exits 0."""
    r = run(cgroups=False)
    r.serve.start()
    r.serve.wait_state("escaper", "running")
    e = r.escapee()
    assert r.serve.stop() == 0
    gone(e, "graceful stop of serve", timeout=1.0)


def test_an_unattributable_orphan_is_killed_on_adoption(run: Any) -> None:
    """An orphan without the lineage mark (``env -i``) and never seen in a tree walk cannot be
    told from another's: it is killed as soon as it is adopted; its worker runs on."""
    r = run(cgroups=False, scrub=True)
    r.serve.start()
    worker = r.serve.wait_state("escaper", "running")["pid"]
    # Killed on adoption, it may be dead before its pid is read: the log names it either way.
    pid = wait_for(
        lambda: int(r.pidfile.read_text() or 0) if r.pidfile.exists() else None,
        DEADLINE,
        f"the escapee's pid in {r.pidfile}",
    )
    if (start := _start_time(pid)) is not None:
        r.escapees.append(e := Escapee(pid, start))
        gone(e, "adoption of an unattributable orphan")
    wait_for(
        lambda: any(
            ev.get("event") == "orphan killed"
            and ev.get("pid") == pid
            and ev.get("reason") == "unattributable"
            for ev in r.serve.logs()
        ),
        DEADLINE,
        f"'orphan killed' for {pid} in the log",
    )
    ext = r.serve.ext("escaper")
    assert (ext["state"], ext["pid"]) == ("running", worker)


# -- a root extension moves its child out of its cgroup -------------------------------------------


@needs_cgroups
def test_an_extension_that_moves_its_child_out_of_its_cgroup_is_killed(run: Any) -> None:
    """(f) Seen outside the worker's cgroup: killed, the reason in the log and the status; the
    same again through `spctl stop` and a graceful stop of serve."""
    r = run(cgroups=True, fork="session", escape="cgroup")
    r.serve.start()
    e = r.escapee()
    gone(e, "moved out of its cgroup")
    ext = wait_for(
        lambda: (x := r.serve.ext("escaper"))["state"] == "stopped" and x, DEADLINE, "stopped"
    )
    assert "out of its cgroup" in ext["reason"], ext
    assert any(
        ev.get("event") == "escaped its cgroup" and ev.get("pid") == e.pid for ev in r.serve.logs()
    )
    # Again, and stopped at once (before or after the sampler sees it: it dies either way).
    assert r.serve.spctl("start", "escaper").returncode == 0
    e2 = r.escapee()
    assert r.serve.spctl("stop", "escaper").returncode == 0
    gone(e2, "spctl stop of an extension whose child left its cgroup")
    # And a graceful stop of serve.
    assert r.serve.spctl("start", "escaper").returncode == 0
    e3 = r.escapee()
    assert r.serve.stop() == 0
    gone(e3, "graceful stop of serve", timeout=1.0)


@needs_cgroups
def test_a_worker_that_moves_itself_out_of_its_cgroup_is_killed(run: Any) -> None:
    """The worker process itself written into another cgroup: killed with the reason, and
    its child (still in the cgroup, but in a session of its own) with it."""
    r = run(cgroups=True, escape="worker")
    r.serve.start()
    e = r.escapee()
    worker = r.serve.ext("escaper")["pid"]
    ext = wait_for(
        lambda: (x := r.serve.ext("escaper"))["state"] == "stopped" and x, DEADLINE, "stopped"
    )
    assert f"pid {worker} (python" in ext["reason"], ext
    assert "out of its cgroup" in ext["reason"], ext
    gone(e, "its worker left its cgroup")


# -- stale cgroups of a dead supervisor ------------------------------------------------------------


@needs_cgroups
@pytest.mark.serial  # any other test's serve would sweep the stale cgroup first
@pytest.mark.parametrize("frozen", [False, True], ids=["thawed", "frozen"])
def test_serve_empties_stale_cgroups_of_a_dead_supervisor(
    run: Any, tmp_path: Path, frozen: bool
) -> None:
    """(g) `spctl-<dead pid>/<leaf>` still holding a process: killed, removed, logged; also
    when it was left frozen (a keeper killed between its freeze and its thaw)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert pid_gone(dead.pid)
    stale = [h.path / f"spctl-{dead.pid}" for h in SUPPORT.hierarchies]
    sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        for parent in stale:
            (parent / "left-1").mkdir(parents=True)
            (parent / "left-1" / "cgroup.procs").write_text(str(sleeper.pid))
        if frozen:
            freezer = [p for p in stale if (p / "freezer.state").exists()]
            if not freezer:
                pytest.skip("no freezer hierarchy")
            (freezer[0] / "freezer.state").write_text("FROZEN")
        r = run(cgroups=True)
        r.serve.start()
        assert sleeper.wait(DEADLINE) == -signal.SIGKILL
        # Killed first, then removed and logged: wait for those too.
        wait_for(lambda: not any(p.exists() for p in stale), DEADLINE, f"{stale} removed")
        wait_for(
            lambda: any(
                ev.get("event") == "stale cgroup emptied" and ev.get("killed") == [sleeper.pid]
                for ev in r.serve.logs()
            ),
            DEADLINE,
            f"'stale cgroup emptied' killing {sleeper.pid} in the log",
        )
    finally:
        for parent in stale:
            if (parent / "freezer.state").exists():
                with contextlib.suppress(OSError):
                    (parent / "freezer.state").write_text("THAWED")
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for parent in stale:
            with contextlib.suppress(OSError):
                (parent / "left-1").rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()
