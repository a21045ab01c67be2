"""The MCP front's supervision (supervisor.core.front): a real Runner over real processes.

The programs here speak the front's side of the channel with the front's own code
(:mod:`supervisor.mcp.supervised`) but serve no HTTP, so each behaviour is provoked on
purpose: a loop that hangs after ``ready``, a program that exits at once, one that stops
gracefully on ``shutdown``. The real front under ``spctl serve`` is in tests/e2e.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from supervisor.config.schema import RestartConfig
from supervisor.core.front import FRONT_NAME, Front, FrontOptions
from supervisor.core.runner import CommandFailed
from supervisor.rules.health import HealthSettings
from supervisor.rules.states import State
from tests.helpers import pid_gone

URL = "http://127.0.0.1:9/mcp"
FAKE_FRONT = f"""
import asyncio, sys, time
from supervisor.mcp.supervised import attach

async def main():
    link = attach()
    stop = asyncio.Event()
    link.on_shutdown = stop.set
    await link.connect()
    if sys.argv[1] == "exit":
        sys.exit(1)
    await link.ready({URL!r})
    if sys.argv[1] == "hang":
        time.sleep(3600)  # the loop hangs: no more answers to ping
    await stop.wait()
    await link.channel.drain()

asyncio.run(main())
"""
FAST_HEALTH = HealthSettings(interval=0.2, deadline=0.3, misses=2)
QUICK_GIVE_UP = RestartConfig(
    policy="always", max_restarts=2, window=60.0, backoff=0.01, max_backoff=0.02
)


def fake_front(mode: str, restart: RestartConfig = QUICK_GIVE_UP) -> Front:
    return Front(
        FrontOptions(),
        Path("/nonexistent/control.sock"),
        dict(os.environ),
        lambda pgid: None,
        lambda pgid: None,
        health=FAST_HEALTH,
        restart=restart,
        argv=[sys.executable, "-c", FAKE_FRONT, mode],
    )


async def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.02)
    assert cond(), what


def supervise(front: Front, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(front.run)
            await body()
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_hung_front_is_killed_by_the_health_ping_and_restarted_until_failed() -> None:
    front = fake_front("hang")
    pids: set[int] = set()

    async def body() -> None:
        def settled() -> bool:
            if front.pid is not None and front.state is State.RUNNING:
                pids.add(front.pid)
            return front.state is State.FAILED

        await until(settled, "failed")

    supervise(front, body)
    snap = front.snapshot()
    assert snap["name"] == FRONT_NAME
    assert snap["kind"] == "front"
    assert snap["restarts"] == 2
    assert "health check timeout" in snap["last_exit"]
    assert snap["reason"].startswith("2 restarts within 60s: health check timeout")
    assert snap["url"] is None  # not running
    assert len(pids) >= 2 and all(pid_gone(p) for p in pids)


def test_a_front_that_cannot_start_gives_up_after_the_intensity_limit() -> None:
    front = fake_front("exit")
    restarts_at_first_failure: list[int] = []

    async def body() -> None:
        await until(lambda: front.state is State.FAILED, "failed")
        restarts_at_first_failure.append(front.snapshot()["restarts"])
        with pytest.raises(CommandFailed, match="crashed: exited with status 1"):
            await front.restart()  # clears failed and tries again: the same limit applies
        await until(lambda: front.state is State.FAILED, "failed again")

    supervise(front, body)
    assert restarts_at_first_failure == [2]
    snap = front.snapshot()
    assert snap["restarts"] == 4
    assert snap["state"] == "failed"
    assert snap["reason"] == "2 restarts within 60s: exited with status 1"


def test_a_running_front_has_its_url_and_stops_gracefully_on_shutdown() -> None:
    front = fake_front("serve")
    seen: dict[str, object] = {}

    async def body() -> None:
        await until(lambda: front.state is State.RUNNING, "running")
        seen.update(front.snapshot())
        assert front.url == URL
        await front.stop()
        assert front.state is State.STOPPED

    supervise(front, body)
    assert seen["url"] == URL
    assert isinstance(seen["pid"], int) and pid_gone(seen["pid"])
    assert front.snapshot()["last_exit"] == "exited cleanly"  # shutdown, not a signal
    assert front.snapshot()["restarts"] == 0


def test_cancelling_run_stops_the_front() -> None:
    front = fake_front("serve")
    pid: list[int] = []

    async def body() -> None:
        await until(lambda: front.state is State.RUNNING, "running")
        assert front.pid is not None
        pid.append(front.pid)

    supervise(front, body)  # cancels run(): its finally stops the process
    assert front.state is State.STOPPED
    assert pid_gone(pid[0])


def test_stop_before_run_and_after_it_ended_returns_at_once() -> None:
    front = fake_front("serve")

    async def main() -> None:
        with anyio.fail_after(5):
            await front.stop()  # never started: nothing to wait for

    anyio.run(main)
    supervise(front, lambda: until(lambda: front.state is State.RUNNING, "running"))

    async def after() -> None:
        with anyio.fail_after(5):
            await front.stop()  # its runner's loop has ended

    anyio.run(after)
