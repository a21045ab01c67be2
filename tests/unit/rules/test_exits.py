"""Classifying and describing how a worker ended."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from supervisor.rules.exits import (
    CRASH_REASONS,
    Exit,
    crash_reason,
    describe,
    from_returncode,
    from_wait_status,
    from_waitid,
)

KILL, SEGV, TERM = signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM

DESCRIPTIONS = [
    (Exit(0, None), "exited cleanly"),
    (Exit(1, None), "exited with status 1"),
    (Exit(2, None), "worker usage error (exit 2)"),
    # A load error is what the worker reported before it exited, never the bare status 3.
    (Exit(3, None, load_error=True), "load error (exit 3)"),
    (Exit(3, None), "exited with status 3"),
    (Exit(None, KILL, load_error=True), "load error (killed by SIGKILL)"),
    # What the worker said (its load_error/error message) follows, shortened to one line.
    (
        Exit(3, None, load_error=True, detail="ModuleNotFoundError: No module named 'x'"),
        "load error (exit 3): ModuleNotFoundError: No module named 'x'",
    ),
    (Exit(1, None, detail="ValueError: bad\nsecond line"), "exited with status 1: ValueError: bad"),
    (Exit(1, None, detail="E: " + "x" * 200), "exited with status 1: E: " + "x" * 96 + "…"),
    (Exit(4, None), "daemon reports not running (exit 4)"),
    (Exit(5, None), "orphaned at start (exit 5)"),
    (Exit(6, None), "channel to supervisor lost (exit 6)"),
    (Exit(7, None), "protocol error (exit 7)"),
    (Exit(120, None), "exited with status 120"),
    (Exit(None, KILL), "killed by SIGKILL: perhaps out of memory?"),
    (Exit(None, KILL, requested=True), "killed by SIGKILL"),
    (Exit(None, TERM), "killed by SIGTERM"),
    (Exit(None, SEGV), "killed by SIGSEGV (core dumped?)"),
    (Exit(None, signal.SIGABRT), "killed by SIGABRT (core dumped?)"),
    (Exit(None, SEGV, core_dumped=True), "killed by SIGSEGV (core dumped)"),
    (Exit(None, SEGV, core_dumped=False), "killed by SIGSEGV"),
    (Exit(None, 99), "killed by signal 99"),
    (Exit(None, None), "ended (status unknown)"),
    # Cause first: what we did or saw explains the bare facts.
    (Exit(None, KILL, cause="health check timeout"), "health check timeout (killed by SIGKILL)"),
    (
        Exit(None, KILL, cause="memory limit 256MiB exceeded (rss 301MiB)"),
        "memory limit 256MiB exceeded (rss 301MiB) (killed by SIGKILL)",
    ),
    (Exit(None, TERM, cause="start timeout (30s)"), "start timeout (30s) (killed by SIGTERM)"),
    (
        Exit(4, None, cause="is_running() returned false"),
        "is_running() returned false (exited with status 4)",
    ),
    (Exit(None, SEGV, cause="x", core_dumped=True), "x (killed by SIGSEGV, core dumped)"),
    (Exit(None, None, cause="cannot start worker: ENOENT"), "cannot start worker: ENOENT"),
]


@pytest.mark.parametrize(("exit", "text"), DESCRIPTIONS, ids=[t for _, t in DESCRIPTIONS])
def test_describe(exit: Exit, text: str) -> None:
    assert describe(exit) == text


@pytest.mark.parametrize(
    ("exit", "clean", "load_error"),
    [
        (Exit(0, None), True, False),
        (Exit(0, None, requested=True), True, False),
        (Exit(0, None, cause="start timeout (30s)"), False, False),
        (Exit(1, None), False, False),
        (Exit(3, None), False, False),
        (Exit(3, None, load_error=True), False, True),
        (Exit(None, KILL), False, False),
        (Exit(None, None), False, False),
    ],
)
def test_properties(exit: Exit, clean: bool, load_error: bool) -> None:
    assert (exit.clean, exit.load_error) == (clean, load_error)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, Exit(0, None)),
        (3 << 8, Exit(3, None)),
        (255 << 8, Exit(255, None)),
        (KILL, Exit(None, KILL, core_dumped=False)),
        (SEGV | 0x80, Exit(None, SEGV, core_dumped=True)),
    ],
)
def test_from_wait_status(status: int, expected: Exit) -> None:
    assert from_wait_status(status) == expected


def test_from_wait_status_keeps_cause_and_request() -> None:
    got = from_wait_status(KILL, cause="health check timeout", requested=True)
    assert got == Exit(None, KILL, "health check timeout", True, False)


def test_from_wait_status_refuses_a_stopped_child() -> None:
    with pytest.raises(ValueError, match="does not describe an ended process"):
        from_wait_status(0x7F | (signal.SIGSTOP << 8))


@pytest.mark.parametrize(
    ("si_code", "si_status", "expected"),
    [
        (os.CLD_EXITED, 0, Exit(0, None)),
        (os.CLD_EXITED, 7, Exit(7, None)),
        (os.CLD_KILLED, KILL, Exit(None, KILL, core_dumped=False)),
        (os.CLD_DUMPED, SEGV, Exit(None, SEGV, core_dumped=True)),
    ],
)
def test_from_waitid(si_code: int, si_status: int, expected: Exit) -> None:
    assert from_waitid(si_code, si_status) == expected


@pytest.mark.parametrize("si_code", [os.CLD_STOPPED, os.CLD_CONTINUED, os.CLD_TRAPPED])
def test_from_waitid_refuses_a_live_child(si_code: int) -> None:
    with pytest.raises(ValueError, match="does not describe an ended process"):
        from_waitid(si_code, signal.SIGSTOP)


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(0, Exit(0, None)), (3, Exit(3, None)), (-9, Exit(None, KILL)), (-11, Exit(None, SEGV))],
)
def test_from_returncode(returncode: int, expected: Exit) -> None:
    assert from_returncode(returncode) == expected


@pytest.mark.parametrize(
    ("code", "kill", "text"),
    [
        ("import sys; sys.exit(3)", None, "exited with status 3"),
        ("import sys; sys.exit(1)", None, "exited with status 1"),
        ("import time; time.sleep(1000)", KILL, "killed by SIGKILL: perhaps out of memory?"),
    ],
)
def test_real_processes_through_waitpid_and_waitid(code: str, kill: int | None, text: str) -> None:
    # waitpid and waitid on real children agree with each other and with describe().
    # posix_spawn: a bare pid, with no Popen object that might reap it behind our back.
    pids = [os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ) for _ in "ab"]
    if kill is not None:
        for pid in pids:
            os.kill(pid, kill)
    _, status = os.waitpid(pids[0], 0)
    result = os.waitid(os.P_PID, pids[1], os.WEXITED)
    assert result is not None
    by_status = from_wait_status(status)
    by_waitid = from_waitid(result.si_code, result.si_status)
    assert by_status == by_waitid
    assert describe(by_status) == text


@pytest.mark.parametrize(
    ("exit", "reason"),
    [
        (Exit(1, None), "exit"),
        (Exit(0, None), "exit"),
        (Exit(None, signal.SIGKILL), "signal"),
        (Exit(None, signal.SIGKILL, cause="health check timeout", cause_kind="health"), "health"),
        (Exit(None, signal.SIGKILL, cause="memory limit", cause_kind="limit"), "limit"),
        (Exit(None, signal.SIGKILL, cause="protocol error: x"), "signal"),
        (Exit(3, None, load_error=True), "load"),
        (Exit(3, None, load_error=True, cause_kind="health"), "load"),
    ],
)
def test_crash_reason(exit: Exit, reason: str) -> None:
    assert crash_reason(exit) == reason
    assert reason in CRASH_REASONS
