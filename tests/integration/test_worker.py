"""The worker shim (`python -m worker`) against real processes and fixture extensions."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.harness import FIXTURES, REPO, Child, WorkerHarness
from worker.kinds.daemon import load_daemon
from worker.loader import LoadError, load_extension
from worker.protocol import (
    EXIT_CHANNEL_LOST,
    EXIT_ERROR,
    EXIT_LOAD_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_PROTOCOL_ERROR,
    EXIT_USAGE,
)
from worker.trampoline import TRAMPOLINE_EXIT, trampoline_argv

pytestmark = pytest.mark.anyio

HEAVY = ("anyio", "structlog", "yaml", "typer", "psutil", "supervisor", "rich", "pydantic")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def pidfd_exits(pid_fd: int, timeout: float) -> bool:
    """True if the process behind ``pid_fd`` exits within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pid_fd, _resolve, exited)
    try:
        async with asyncio.timeout(timeout):
            await exited
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pid_fd)


class TestLifecycle:
    """A daemon starts, reports ready with its metadata, answers pings and stops on request."""

    async def test_ok_daemon(self, tmp_path: Path) -> None:
        events, beat = tmp_path / "events", tmp_path / "beat"
        config = {"events": str(events), "heartbeat": str(beat), "print": "hello from ok"}
        async with WorkerHarness(FIXTURES / "ok_daemon", name="ok-daemon", config=config) as h:
            info = await h.ready()
            assert info["pid"] == h.pid == h.boot_pid
            assert info["kind"] == "daemon"
            assert info["python"] == sys.version.split()[0]
            assert info["metadata"] == {
                "name": "ok-daemon",
                "version": "1.2.3",
                "description": "a well-behaved test daemon",
                "capabilities": ["heartbeat"],
            }
            assert isinstance((await h.request("ping"))["t"], float)
            await h.wait_for(
                lambda: beat.exists() and int(beat.read_text()) >= 2, what="beat", poll=0.02
            )
            await h.line("hello from ok")
            assert lines(events) == ["initialize", "start"]
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
            assert lines(events) == ["initialize", "start", "stop", "shutdown"]
            assert h.notifications == []

    async def test_create_module_with_async_methods(self, tmp_path: Path) -> None:
        events = tmp_path / "events"
        path = FIXTURES / "create_module_daemon"
        async with WorkerHarness(path, config={"events": str(events)}) as h:
            info = await h.ready()
            assert info["metadata"] == {
                "name": "create-module-daemon",
                "version": "0.4.0",
                "capabilities": ["tick"],
            }
            await h.request("ping")
            await h.request("shutdown")
            assert await h.exit_code() == EXIT_OK
        assert lines(events) == ["initialize", "start", "stop", "shutdown"]

    async def test_single_file_hyphenated_name_and_python_path(self, tmp_path: Path) -> None:
        lib = tmp_path / "lib"
        lib.mkdir()
        (lib / "ext_helper.py").write_text("VERSION = '9.9'\n")
        (tmp_path / "my_sibling.py").write_text("NAME = 'sibling'\n")
        (tmp_path / "my-ext.py").write_text(
            textwrap.dedent(
                """
                from ext_helper import VERSION
                from my_sibling import NAME

                class Thing:
                    version = VERSION
                    def start(self): pass
                    def stop(self): pass
                    def is_running(self): return True
                """
            )
        )
        # -P: the cwd is not on sys.path (so an extension's own `worker` module can never
        # shadow the shim); the shim puts the extension's directory there itself.
        spec_args: dict[str, Any] = {
            "name": "my-ext",
            "python_path": [str(lib)],
            "python_flags": ["-P"],
        }
        async with WorkerHarness(tmp_path / "my-ext.py", **spec_args) as h:
            info = await h.ready()
            assert info["metadata"] == {"name": "my-ext", "version": "9.9"}
            await h.request("shutdown")
            assert await h.exit_code() == EXIT_OK

    async def test_channel_at_fd3_directly(self) -> None:
        async with WorkerHarness(FIXTURES / "ok_daemon", fd3_direct=True) as h:
            await h.ready()
            await h.request("shutdown")
            assert await h.exit_code() == EXIT_OK

    async def test_not_running_exits_4(self, tmp_path: Path) -> None:
        events = tmp_path / "events"
        config = {"after": 0.2, "events": str(events)}
        async with WorkerHarness(FIXTURES / "not_running", config=config) as h:
            await h.ready()
            assert await h.notification("exiting") == {"reason": "is_running() returned False"}
            assert await h.exit_code() == EXIT_NOT_RUNNING
        assert lines(events) == ["stop"]

    @pytest.mark.parametrize("style", ["sync", "async", "awaitable"])
    async def test_is_running_is_polled_until_false(self, tmp_path: Path, style: str) -> None:
        """A sync is_running() runs in a thread of its own ("is_running": the event loop is not
        woken for each "still running"), an async one on the loop, a sync one returning an
        awaitable has it awaited; the third call says False: exit 4, not polled after."""
        calls = tmp_path / "calls"
        body = {
            "sync": "def is_running(self):\n        return self._call()",
            "async": "async def is_running(self):\n        return self._call()",
            "awaitable": (
                "def is_running(self):\n        return self._later(self._call())\n"
                "    async def _later(self, value):\n        return value"
            ),
        }[style]
        (tmp_path / "poll.py").write_text(
            "import threading\n"
            "class Poll:\n"
            "    n = 0\n"
            "    def start(self): pass\n"
            "    def stop(self): pass\n"
            "    def _call(self):\n"
            "        Poll.n += 1\n"
            f"        with open({str(calls)!r}, 'a') as f:\n"
            "            f.write(threading.current_thread().name + '\\n')\n"
            "        return Poll.n < 3\n"
            f"    {body}\n"
        )
        async with WorkerHarness(tmp_path / "poll.py", check_interval=0.02) as h:
            await h.ready()
            assert await h.notification("exiting") == {"reason": "is_running() returned False"}
            assert await h.exit_code() == EXIT_NOT_RUNNING
        names = lines(calls)
        assert len(names) == 3, names
        expected = "is_running" if style in ("sync", "awaitable") else "MainThread"
        assert set(names) == {expected}, names

    async def test_crash_later_exits_1(self) -> None:
        async with WorkerHarness(FIXTURES / "crash_later", config={"after": 0.2}) as h:
            await h.ready()
            assert await h.exit_code() == 1

    async def test_environment_seen_by_extension(self, tmp_path: Path) -> None:
        report = tmp_path / "report.json"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        rlimits = {"NOFILE": [64, hard], "CORE": [0, 0]}
        config = {"report": str(report)}
        async with WorkerHarness(FIXTURES / "ok_daemon", config=config, rlimits=rlimits) as h:
            await h.ready()
            seen = json.loads(report.read_text())
        assert seen["nofile"] == [64, hard]
        assert seen["core"] == [0, 0]
        assert seen["cwd"] == str(FIXTURES / "ok_daemon")
        assert seen["ppid"] == os.getpid()
        assert seen["spctl_env"] == []  # SPCTL_* are not inherited by extension code
        assert seen["thread"] != "MainThread"  # a sync start() runs in a thread
        assert seen["fd3_inheritable"] is False  # extension subprocesses never get the channel

    async def test_only_stdlib_and_msgpack_before_the_extension(self, tmp_path: Path) -> None:
        report = tmp_path / "report.json"
        async with WorkerHarness(FIXTURES / "ok_daemon", config={"report": str(report)}) as h:
            await h.ready()
        modules = json.loads(report.read_text())["modules_at_import"]
        assert "msgpack" in modules  # the list is real
        heavy = [m for m in modules if m.split(".")[0] in HEAVY]
        assert heavy == []


class TestFailures:
    """Load errors exit 3 with a load_error notification; runtime errors exit 1 with error."""

    @pytest.mark.parametrize(
        ("fixture", "kwargs", "message", "in_traceback"),
        [
            ("crash_import", {}, "RuntimeError: crash_import: boom at import time", "_explode"),
            ("no_entry", {}, "no create_module(config) or daemon class with start/stop", ""),
            ("does_not_exist", {}, "does not exist", ""),
            ("ok_daemon", {"kind": "bogus"}, "unsupported extension kind 'bogus'", ""),
            ("ok_daemon", {"rlimits": {"BOGUS": [1, 1]}}, "unknown rlimit 'BOGUS'", ""),
            ("ok_daemon", {"rlimits": {"NOFILE": [100, 50]}}, "cannot apply rlimit NOFILE", ""),
        ],
    )
    async def test_load_error(
        self, fixture: str, kwargs: dict[str, Any], message: str, in_traceback: str
    ) -> None:
        async with WorkerHarness(FIXTURES / fixture, cwd=FIXTURES, **kwargs) as h:
            error = await h.notification("load_error")
            assert await h.exit_code() == EXIT_LOAD_ERROR
            assert message in error["message"]
            assert in_traceback in error["traceback"]
            assert h.ready_info is None
            await h.line(message, stream="stderr")

    @pytest.mark.parametrize("where", ["initialize", "start", "is_running"])
    async def test_runtime_error(self, where: str) -> None:
        config = {"fail_in": where}
        async with WorkerHarness(FIXTURES / "ok_daemon", config=config) as h:
            error = await h.notification("error")
            assert await h.exit_code() == EXIT_ERROR
            assert error["message"] == f"RuntimeError: ok_daemon: failing in {where} as configured"
            assert "_maybe_fail" in error["traceback"]
            assert (h.ready_info is not None) == (where == "is_running")

    @pytest.mark.parametrize(
        ("parent_pid", "env", "code", "message"),
        [
            (1, {}, EXIT_ORPHANED, "died before the worker was armed"),
            (None, {"SPCTL_CHANNEL_FD": "1"}, EXIT_USAGE, "not a descriptor number >= 3"),
        ],
    )
    async def test_bootstrap_refusals(
        self, parent_pid: int | None, env: dict[str, str], code: int, message: str
    ) -> None:
        async with WorkerHarness(FIXTURES / "ok_daemon", parent_pid=parent_pid, env=env) as h:
            assert await h.exit_code() == code
            await h.line(message, stream="stderr")
            assert h.boot_pid is None

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({}, "SPCTL_PARENT_PID is not set"),
            ({"SPCTL_PARENT_PID": str(os.getpid())}, "fd 3 is not the supervisor's socket"),
        ],
    )
    def test_started_by_hand(self, env: dict[str, str], message: str) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPCTL_")}
        done = subprocess.run(
            [sys.executable, "-m", "worker"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == EXIT_USAGE
        assert message in done.stderr


class TestChannel:
    """The channel is never corrupted by output, and its loss or abuse ends the worker."""

    async def test_output_never_reaches_the_channel(self) -> None:
        async with WorkerHarness(FIXTURES / "noisy", config={"interval": 0.01}) as h:
            await h.ready()
            for _ in range(30):
                await h.request("ping")
            await h.line("noisy stdout 5")
            await h.line("noisy child 5")
            await h.line("noisy stderr 5", stream="stderr")
            assert not h.channel.closed
            await h.request("shutdown")
            assert await h.exit_code() == EXIT_OK

    async def test_slow_sync_start_still_answers_ping(self) -> None:
        async with WorkerHarness(FIXTURES / "slow_sync", config={"seconds": 8}) as h:
            await h.wait_for(lambda: h.boot_pid is not None, what="boot")
            loop = asyncio.get_running_loop()
            worst = 0.0
            for _ in range(5):
                sent = loop.time()
                # answered within 2 s while start() sleeps 8: the loop is not blocked by it (a
                # figure, no tighter bound: a loaded machine can stall a process that long)
                await h.request("ping", timeout=2)
                worst = max(worst, loop.time() - sent)
            assert h.ready_info is None  # start() is still running
            print(f"\nworst of 5 pings during a slow sync start(): {worst * 1000:.1f} ms")
            await h.request("shutdown", timeout=5)  # stop() runs beside the slow start()
            assert await h.exit_code(timeout=5) == EXIT_OK

    async def test_blocked_loop_stops_answering(self) -> None:
        async with WorkerHarness(FIXTURES / "blocks_loop", config={"after": 0.2}) as h:
            await h.ready()

            async def ping_times_out() -> bool:
                try:
                    await h.request("ping", timeout=0.5)
                except TimeoutError:
                    return True
                return False

            async with asyncio.timeout(10):
                while not await ping_times_out():
                    pass
            assert h.returncode is None

    async def test_supervisor_closing_the_channel_ends_the_worker(self) -> None:
        async with WorkerHarness(FIXTURES / "ok_daemon") as h:
            await h.ready()
            h.channel.close()
            assert await h.exit_code() == EXIT_CHANNEL_LOST

    async def test_garbage_from_the_supervisor_is_a_protocol_error(self) -> None:
        async with WorkerHarness(FIXTURES / "ok_daemon") as h:
            await h.ready()
            assert h.sock is not None
            os.write(h.sock.fileno(), b"\xc1 not msgpack")
            assert await h.exit_code() == EXIT_PROTOCOL_ERROR
            await h.line("protocol error", stream="stderr")

    @pytest.mark.parametrize("spec", [[1, 2], {"name": "x", "kind": "daemon"}, "daemon"])
    async def test_bad_boot_spec_is_a_protocol_error(self, spec: Any) -> None:
        async with WorkerHarness(FIXTURES / "ok_daemon", spec=spec) as h:
            assert await h.exit_code() == EXIT_PROTOCOL_ERROR

    @pytest.mark.parametrize(
        ("fixture", "config"),
        [
            ("garbage", {}),
            # msgpack 1.2 checks max_bin_len only once the whole blob is buffered, so the cap
            # trips when 16 MiB have arrived, not at the 100 MB header.
            ("bigframe", {"fill": 17 * 1024 * 1024}),
            ("badid", {}),
        ],
    )
    async def test_worker_writing_garbage_is_cut_off(
        self, fixture: str, config: dict[str, Any]
    ) -> None:
        async with WorkerHarness(FIXTURES / fixture, config=config) as h:
            await h.wait_for(lambda: h.channel.closed, what="cut off")
            reason = h.channel.close_reason
            assert (reason or "").startswith("protocol error"), reason
            assert await h.exit_code() == EXIT_CHANNEL_LOST


class TestStopping:
    """What a supervisor has to escalate past, and who dies with whom."""

    async def test_ignores_sigterm_and_hangs_in_stop(self) -> None:
        async with WorkerHarness(FIXTURES / "ignores_sigterm") as h:
            await h.ready()
            with pytest.raises(TimeoutError):
                await h.request("shutdown", timeout=1)
            h.kill(signal.SIGTERM)
            with pytest.raises(TimeoutError):
                await h.exit_code(timeout=0.5)
            assert (await h.request("ping"))["t"] > 0  # still serving
            h.kill(signal.SIGKILL)
            assert await h.exit_code() == -signal.SIGKILL

    async def test_grandchild_stays_in_the_worker_group(self, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        h = WorkerHarness(FIXTURES / "grandchild", config={"pidfile": str(pidfile)})
        async with h:
            await h.ready()
            grandchild = int(pidfile.read_text())
            assert os.getpgid(grandchild) == h.pid
            pid_fd = os.pidfd_open(grandchild)
        try:  # the harness killed the group on exit
            assert await pidfd_exits(pid_fd, 5)
        finally:
            os.close(pid_fd)

    async def test_worker_dies_with_its_supervisor(self) -> None:
        # blocks_loop: with its loop blocked the worker cannot see the channel's EOF, so only
        # PR_SET_PDEATHSIG can end it.
        path, config = str(FIXTURES / "blocks_loop"), json.dumps({"after": 0.1})
        argv = [sys.executable, "-m", "tests.integration.harness", path, config, "blocking"]
        async with Child(argv, cwd=REPO) as supervisor:
            worker_pid = int((await supervisor.line("READY ", timeout=20)).split()[1])
            pid_fd = os.pidfd_open(worker_pid)
            supervisor.kill(signal.SIGKILL)  # the child only: the worker is in its own group
            assert await supervisor.exit_code() == -signal.SIGKILL
        try:
            assert await pidfd_exits(pid_fd, 5), "worker outlived its supervisor"
        finally:
            os.close(pid_fd)
            if psutil.pid_exists(worker_pid):  # don't leak it if the assertion failed
                os.kill(worker_pid, signal.SIGKILL)


PARENT = """
import signal, subprocess, sys
from worker.trampoline import trampoline_argv
argv = ["sh", "-c", "echo started >&2; exec sleep 1000"]  # stderr: never inside our line
if sys.argv[1] == "wrapped":
    argv = trampoline_argv(argv)
print("child", subprocess.Popen(argv).pid, flush=True)
signal.pause()
"""


class TestTrampoline:
    """A process spawned through the trampoline dies with its parent; a plain one does not."""

    @pytest.mark.parametrize(("mode", "dies"), [("wrapped", True), ("plain", False)])
    async def test_child_dies_with_parent(self, mode: str, dies: bool) -> None:
        async with Child([sys.executable, "-c", PARENT, mode], cwd=REPO) as parent:
            child = int((await parent.line("child ")).split()[1])
            await parent.line("started", "stderr")  # the child has exec'd past the trampoline
            pid_fd = os.pidfd_open(child)
            parent.kill(signal.SIGKILL)  # the parent only, not its process group
            await parent.exit_code()
            try:
                assert await pidfd_exits(pid_fd, 5 if dies else 0.5) == dies
            finally:
                os.close(pid_fd)

    @pytest.mark.parametrize(
        ("argv", "parent_pid", "message"),
        [
            (["true"], 1, "parent 1 died before true started"),
            (["/nonexistent/cmd"], None, "cannot run /nonexistent/cmd"),
        ],
    )
    def test_refusals(self, argv: list[str], parent_pid: int | None, message: str) -> None:
        done = subprocess.run(
            trampoline_argv(argv, parent_pid=parent_pid),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == TRAMPOLINE_EXIT
        assert message in done.stderr

    def test_exec_keeps_argv(self) -> None:
        done = subprocess.run(
            trampoline_argv(["sh", "-c", 'echo "$0 $1"', "a b", "c"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert done.stdout == "a b c\n"


CLASSES = {
    "prefers_daemon_suffix": (
        "class Helper:\n    def start(self): ...\n    def stop(self): ...\n"
        "    def is_running(self): ...\n"
        "class BackupDaemon(Helper):\n    def __init__(self, config): self.got = config\n"
    ),
    "ambiguous": (
        "class A:\n    def start(self): ...\n    def stop(self): ...\n"
        "    def is_running(self): ...\nclass B(A): ...\n"
    ),
    "no_arg_init": (
        "class Mod:\n    name = 'named'\n    version = '2'\n    def start(self): ...\n"
        "    def stop(self): ...\n    def is_running(self): ...\n"
    ),
    "protocol_only": "from worker.api import DaemonModule, FullDaemonModule\n",
    "factory_not_daemon": "def create_module(config): return object()\n",
    "async_factory": (
        "class D:\n    def start(self): ...\n    def stop(self): ...\n"
        "    def is_running(self): ...\n"
        "async def create_module(config): return D()\n"
    ),
    "bad_metadata": (
        "metadata = {'name': 'x', 'nested': {'a': 1}}\n"
        "class D:\n    def start(self): ...\n    def stop(self): ...\n"
        "    def is_running(self): ...\n"
    ),
}


class TestEntryPoints:
    """How a daemon object is found in an extension module (in-process, no worker)."""

    @pytest.mark.parametrize(
        ("case", "expected"),
        [
            ("prefers_daemon_suffix", "BackupDaemon"),
            ("ambiguous", "several daemon classes"),
            ("no_arg_init", "Mod"),
            ("protocol_only", "no create_module(config) or daemon class"),
            ("factory_not_daemon", "returned 'object', which lacks start/stop/is_running"),
            ("async_factory", "D"),
            ("bad_metadata", "bad metadata"),
        ],
    )
    async def test_find(self, tmp_path: Path, case: str, expected: str) -> None:
        path = tmp_path / f"{case}.py"
        path.write_text(CLASSES[case])
        config = {"k": 1}
        module = load_extension(f"entry-{case}", path)
        if expected[0].islower():  # an error message, not a class name
            with pytest.raises(LoadError, match=re.escape(expected)):
                await load_daemon(case, module, config, str(path))
            return
        daemon = await load_daemon(case, module, config, str(path))
        assert type(daemon.obj).__name__ == expected
        if case == "prefers_daemon_suffix":
            assert daemon.obj.got == config  # cls(config)
        if case == "no_arg_init":
            assert daemon.obj.config == config  # cls(), then .config set
            assert daemon.metadata == {"name": "named", "version": "2"}


async def test_startup_cost() -> None:
    """Spawn → ready and RSS of an ok_daemon worker, next to a bare `python -c pass`."""
    ready_s: list[float] = []
    rss: list[int] = []
    for _ in range(5):
        async with WorkerHarness(FIXTURES / "ok_daemon") as h:
            await h.ready()
            assert h.ready_at is not None
            ready_s.append(h.ready_at - h.spawned_at)
            rss.append(psutil.Process(h.pid).memory_info().rss)
    loop = asyncio.get_running_loop()
    bare_s: list[float] = []
    for _ in range(5):
        started = loop.time()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await proc.wait()
        bare_s.append(loop.time() - started)
    up = "import signal; print('up', flush=True); signal.pause()"
    async with Child([sys.executable, "-c", up]) as bare:
        await bare.line("up")
        bare_rss = psutil.Process(bare.pid).memory_info().rss
    mib = 1024 * 1024
    print(
        f"\nworker spawn→ready p50 {statistics.median(ready_s) * 1000:.0f} ms "
        f"(python -c pass {statistics.median(bare_s) * 1000:.0f} ms); "
        f"RSS {statistics.median(rss) / mib:.1f} MiB (bare python {bare_rss / mib:.1f} MiB)"
    )
    assert statistics.median(rss) < 40 * mib
