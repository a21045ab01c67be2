"""The history's own readings: one process's RSS and CPU from /proc, and CPU as a rate."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from supervisor.core.history import _proc_usage, _Rate


def test_proc_usage_agrees_with_psutil() -> None:
    usage = _proc_usage(os.getpid())
    assert usage is not None
    rss, cpu = usage
    me = psutil.Process()
    assert abs(rss - me.memory_info().rss) < 16 * 2**20
    times = me.cpu_times()
    assert 0 < cpu <= times.user + times.system + 0.1


def test_a_gone_process_has_no_usage() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _proc_usage(child.pid) is None


def test_rate_starts_unknown_and_restarts_with_a_new_pid() -> None:
    rate = _Rate()
    assert rate(7, 1.0) is None
    later = rate(7, 1.0)
    assert later == 0.0
    assert rate(8, 5.0) is None  # another process: its counter is not this one's
    assert (rate(8, 4.0) or 0.0) == 0.0  # never negative
