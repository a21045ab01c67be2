"""``supervisor.install.uv.run_child`` and Ctrl-C: a build tool never outlives an interrupt.

A Ctrl-C that lands just after the fork (inside ``Popen`` or before the wait) used to leave the
tool running, still writing into a build directory being removed (seen under load in
``test_add::test_ctrl_c_during_the_build_leaves_nothing``). Here the SIGINT is sent from the
``started`` hook, that is right after the fork, deterministically.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest

from supervisor.install import uv
from tests.helpers import pid_gone


class Failed(Exception):
    pass


@pytest.fixture
def hooks() -> Iterator[list[int]]:
    pids: list[int] = []

    def started(pid: int | None) -> None:
        assert pid is not None
        pids.append(pid)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, the moment the tool exists

    saved = list(uv._hooks)
    uv.set_child_hooks(lambda: None, started, lambda pid: None)
    try:
        yield pids
    finally:
        uv._hooks[:] = saved
        for pid in pids:  # never leave it behind if the test fails
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_ctrl_c_right_after_the_fork_kills_the_tool(hooks: list[int]) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(KeyboardInterrupt):
        uv.run_child(argv, dict(os.environ), tool="sleeper", error=Failed)
    (pid,) = hooks
    assert pid_gone(pid), "the tool outlived the Ctrl-C"  # killed and reaped before raising


def test_without_ctrl_c_the_tool_runs_as_before() -> None:
    done = uv.run_child(
        [sys.executable, "-c", "print('ok')"], dict(os.environ), tool="t", error=Failed
    )
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
