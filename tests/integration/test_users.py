"""``user:``/``group:`` on a real supervisor (as root): the worker becomes that user before the
extension is imported, cannot reach the control socket, and stays supervised.

The worker runs as ``nobody``, so everything it reads after the switch must be readable by
``nobody``: the interpreter (here the default one lives under /root, mode 0700, so a venv made
from /usr/bin/python3 is used, cached in a 0755 directory of the tests' own under /tmp: the
clone may lie under a private 0700 directory, as CI's does), the ``worker`` package (a readable
copy, found through ``PYTHONPATH``) and the extension (an extensions directory under a 0755
temporary directory: pytest's own ``tmp_path`` is under a 0700 directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.schema import RunAs
from supervisor.core.cgroups import detect
from supervisor.core.worker_spec import run_as_problem
from tests.helpers import (
    REPO,
    InstallFailed,
    Serve,
    make_extensions,
    module_entry,
    pid_gone,
    pip_venv,
    readable_copy,
    shared_cache,
    wait_for,
)

SYSTEM_PYTHON = Path("/usr/bin/python3")
NEVER = {"policy": "never"}


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")


def _as_nobody(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    who = _nobody()
    return subprocess.run(
        argv,
        user=who.pw_uid,
        group=who.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
        **kw,
    )


def readable_python(base: Path) -> tuple[Path, Path]:
    """A venv of /usr/bin/python3 with msgpack (all the worker needs besides the standard
    library), and a copy of the ``worker`` package under ``base`` (the ``PYTHONPATH`` for it),
    checked to start the worker's modules as ``nobody``; skips with the reason when they cannot
    be made or used."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} is missing: no interpreter that nobody can read")
    try:
        venv = pip_venv("run-as-py311", ["msgpack"], str(SYSTEM_PYTHON), shared_cache())
    except InstallFailed as e:
        pytest.skip(f"cannot make a venv of {SYSTEM_PYTHON} with msgpack: {e}")
    python = venv / "bin" / "python"
    path = readable_copy(REPO / "worker", base / "pythonpath")
    probe = _as_nobody(
        [str(python), "-P", "-c", "import msgpack, decimal, worker.host"],
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
    )
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run the worker with {python}: {probe.stderr.strip()[-300:]}")
    return python, path


@pytest.fixture
def base() -> Iterator[Path]:
    """A 0755 directory (extensions, state, the socket's 0700 directory) under /tmp."""
    path = Path(tempfile.mkdtemp(prefix="spctl-users-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _report(s: Serve, name: str) -> dict[str, Any]:
    """The probe's ``RUN_AS {json}`` line, as ``spctl logs`` shows it."""

    def found() -> dict[str, Any] | None:
        out = s.spctl("logs", name, "-n", "50").stdout
        for line in out.splitlines():
            if "RUN_AS " in line:
                parsed: dict[str, Any] = json.loads(line.split("RUN_AS ", 1)[1])
                return parsed
        return None

    return wait_for(found, 20, f"the RUN_AS line of {name} in spctl logs")


def _ids(pid: int, key: str) -> list[int]:
    """The real, effective, saved and filesystem ids of ``key`` ("Uid"/"Gid") from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only root can switch users")
def test_worker_runs_as_nobody_and_cannot_reach_the_control_socket(base: Path) -> None:
    who = _nobody()
    python, path = readable_python(base)
    sock = base / "run" / "control.sock"
    (base / "state").mkdir(mode=0o755)  # traversable: the workers' own dirs are below it
    common = {"python": str(python), "env": {"PYTHONPATH": str(path)}, "restart": NEVER}
    probe_config = {"socket": str(sock)}
    mods = [
        module_entry("probe", "run_as_probe", user="nobody", config=probe_config, **common),
        # numeric ids, as a string and as a number; ignores SIGTERM: only root's SIGKILL ends it
        module_entry(
            "stubborn",
            "ignores_sigterm",
            user=str(who.pw_uid),
            group=who.pw_gid,
            stopTimeout="1s",
            **common,
        ),
    ]
    s = Serve(base, make_extensions(base, mods), sock)
    try:
        s.start()
        pid = s.wait_state("probe", "running")["pid"]
        report = _report(s, "probe")  # its stdout reached spctl logs
        assert report["pid"] == pid
        assert (report["uid"], report["euid"]) == (who.pw_uid, who.pw_uid)
        assert (report["gid"], report["egid"]) == (who.pw_gid, who.pw_gid)
        assert report["groups"] == []
        assert _ids(pid, "Uid") == [who.pw_uid] * 4  # real, effective, saved, fs: for good
        assert report["pdeathsig"] == 9  # re-armed after setuid cleared it
        assert report["socket"] == "PermissionError"  # 0600 root socket in a 0700 dir
        assert report["lazy_import"] == "1.5"  # the interpreter is readable after the switch
        assert report["state"] == "written"
        state = base / "state" / "extensions" / "probe"
        assert state.stat().st_uid == who.pw_uid
        assert (state / "probe").stat().st_uid == who.pw_uid
        if detect(environ={}).mode != "none":  # moved by root before the switch
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            assert "probe" in cgroups, cgroups
        assert s.try_status() is not None  # root still reaches it

        stubborn = s.wait_state("stubborn", "running")["pid"]
        assert _ids(stubborn, "Uid") == [who.pw_uid] * 4
        assert _ids(stubborn, "Gid") == [who.pw_gid] * 4
        assert s.spctl("stop", "stubborn").returncode == 0  # SIGTERM ignored: SIGKILLed
        wait_for(lambda: pid_gone(stubborn), 10, "the nobody worker to be killed")
        assert s.spctl("stop", "probe").returncode == 0
        wait_for(lambda: pid_gone(pid), 10, "the probe to stop")
        assert s.stop() == 0
    finally:
        with contextlib.suppress(Exception):
            s.kill()


@pytest.mark.parametrize(
    ("run_as", "euid", "problem"),
    [
        (None, 1000, None),
        (RunAs("nobody", 65534, 65534), 0, None),
        (
            RunAs("nobody", 65534, 65534),
            1000,
            "user: nobody needs spctl to run as root (it runs as uid 1000)",
        ),
        (
            RunAs("1000", 1000, 1000),
            1000,
            "user: 1000 needs spctl to run as root (it runs as uid 1000)",
        ),
    ],
)
def test_only_root_can_run_a_worker_as_another_user(
    run_as: RunAs | None, euid: int, problem: str | None
) -> None:
    assert run_as_problem(run_as, euid) == problem
