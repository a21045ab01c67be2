"""Workers forked from the zygote (``SPCTL_ZYGOTE=on``): real runners, workers and zygote.

Each forked worker must be the core's own child in its own process group, hold exactly the
descriptors an exec'd worker holds, and every zygote failure must fall back to exec.
"""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest

from supervisor.core import process, zygote
from supervisor.core.runner import Runner
from supervisor.rules.states import State
from tests.helpers import pid_gone, wait_for
from tests.integration.test_runner_calls import _server, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _fd_kinds(pid: int) -> list[str]:
    kinds = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        kinds.append(f"{fd}:{target.split('[')[0]}")
    return kinds


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def test_forked_worker_is_our_child_with_the_fds_of_an_exec_d_one(
    zyg: zygote.Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(_server("forked", "mcp_echo")) as forked:
        assert forked.state is State.RUNNING
        pid = forked.pid
        assert pid is not None and zyg.pid is not None and zyg.starts == 1
        assert zyg.last_error == ""
        assert _ppid(pid) == os.getpid()  # re-parented to the core, not the zygote's
        assert os.getpgid(pid) == pid
        forked_fds = _fd_kinds(pid)
        zyg.close()  # the next one is exec'd (no zygote to ask until a request restarts it)
        process._zygote = None
        monkeypatch.setenv("SPCTL_ZYGOTE", "off")
        async with running(_server("execd", "mcp_echo")) as execd:
            assert execd.pid is not None
            # the exec'd one also inherits whatever non-CLOEXEC fd the core has (pytest's)
            assert set(forked_fds) <= set(_fd_kinds(execd.pid))
        # 0-3 as passed, then only the worker's own event loop (epoll, its self-pipe)
        assert forked_fds == [
            "0:/dev/null",
            "1:pipe:",
            "2:pipe:",
            "3:socket:",
            "4:anon_inode:",
            "5:socket:",
            "6:socket:",
        ]


async def test_zygote_killed_while_idle_no_worker_dies_and_it_comes_back(
    zyg: zygote.Zygote,
) -> None:
    async with running(_server("first", "mcp_echo")) as first:
        old = zyg.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_for(
            lambda: _state(old) == "Z",
            what="the zygote is a zombie",
        )
        async with running(_server("second", "mcp_echo")) as second:
            assert second.state is State.RUNNING
            assert zyg.pid not in (None, old) and zyg.starts == 2  # restarted on demand
            assert pid_gone(old)
            assert first.state is State.RUNNING and first.pid is not None
            os.kill(first.pid, 0)  # still alive


async def test_a_zygote_that_does_not_answer_means_exec_and_the_log_says_why(
    zyg: zygote.Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote, "REPLY_TIMEOUT", 0.5)
    async with running(_server("first", "mcp_echo")):  # forked: the zygote is ready
        assert zyg.forks == 1
    stuck = zyg.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)  # it gets the request and never answers
    async with running(_server("fallback", "mcp_echo")) as runner:
        assert runner.state is State.RUNNING
        assert "zygote request failed" in zyg.last_error
        assert any("exec'd, not forked" in text for _, _, text in runner.output)
        assert pid_gone(stuck) and zyg.pid is None  # a zygote out of step is killed


async def test_a_zygote_slow_to_start_is_waited_for_not_given_up(
    zyg: zygote.Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new zygote's own start (its interpreter and imports, over a second on a loaded
    machine) is not held to a request's answer deadline: it was, and every worker of a slow
    start was exec'd ("no answer within 2 s"). Stopped while it starts, past three answer
    deadlines, then let go: the worker is still forked."""
    monkeypatch.setattr(zygote, "REPLY_TIMEOUT", 0.2)
    assert zyg.start() and zyg.pid is not None
    booting = zyg.pid
    os.kill(booting, signal.SIGSTOP)  # (if it was ready already, the fork needs no wait)
    since = time.monotonic()

    def let_go() -> None:  # after three answer deadlines (waiting on the clock is the point)
        wait_for(lambda: time.monotonic() - since > 0.6, 5, "0.6 s")
        os.kill(booting, signal.SIGCONT)

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, let_go)
        async with running(_server("slowzygote", "mcp_echo")) as runner:
            assert runner.state is State.RUNNING
            assert zyg.pid == booting and zyg.forks == 1, zyg.last_error
            assert zyg.last_error == ""


async def test_a_zygote_that_never_gets_ready_means_exec(
    zyg: zygote.Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote, "BOOT_TIMEOUT", 0.5)
    assert zyg.start() and zyg.pid is not None
    stuck = zyg.pid
    os.kill(stuck, signal.SIGSTOP)  # before or after its ready: either way no answer comes
    async with running(_server("neverready", "mcp_echo")) as runner:
        assert runner.state is State.RUNNING
        assert zyg.last_error in (
            "the zygote was not ready within 0.5 s",
            "zygote request failed: no answer within 2 s",  # it was ready before the stop
        )
        assert any("exec'd, not forked" in text for _, _, text in runner.output)
        assert pid_gone(stuck) and zyg.pid is None


async def test_twenty_spawns_at_once(zyg: zygote.Zygote) -> None:
    runners: list[Runner] = []
    done = anyio.Event()

    async def one(i: int) -> None:
        async with running(_server(f"e{i}", "mcp_echo")) as runner:
            runners.append(runner)
            if len(runners) == 20:
                pids = [r.pid for r in runners]
                assert all(r.state is State.RUNNING for r in runners)
                assert all(p is not None and _ppid(p) == os.getpid() for p in pids)
                done.set()
            await done.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert len(runners) == 20
    assert zyg.starts == 1 and zyg.last_error == ""
