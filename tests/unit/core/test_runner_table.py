"""The runner, table-driven: every command in every resting state, and how exits are judged,
against a fake spawn (a scripted worker over a real channel; no process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from supervisor.config import Extension, RestartConfig, Source
from supervisor.core.inbox import Command, Exited
from supervisor.core.runner import LEARNED, CommandFailed, Runner, RunnerContext, run_guarded
from supervisor.rules.exits import Exit
from supervisor.rules.goals import AT_REST, NOT_LEARNED_REASON, Cmd
from supervisor.rules.states import State, Transition
from tests.unit.core.fake_worker import FakeSpawn

pytestmark = pytest.mark.anyio
S = State
QUICK = RestartConfig(policy="always", backoff=0.01, max_backoff=0.02, load_error_tries=1)
# Two crashes in a row: the first restarts at once, the second waits a minute (held there).
SLOW = RestartConfig(policy="always", backoff=60.0, max_backoff=60.0, reset_after=1000.0)


def _ext(*, enabled: bool = True, restart: RestartConfig = QUICK, stop: float = 0.2) -> Extension:
    return Extension(
        name="fake",
        section="servers",
        type="local",
        source=Source(Path("servers.yaml"), 1, 1),
        enabled=enabled,
        restart=restart,
        stop_timeout=stop,
        start_timeout=30.0,
    )


@dataclass
class Rig:
    runner: Runner
    spawn: FakeSpawn
    moved: list[Transition]
    changed: Callable[[], anyio.Event]

    async def until(self, what: str, ok: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (woken by each transition, at most ``timeout`` s) until ``ok()``."""
        with anyio.fail_after(timeout):
            while not ok():
                event = self.changed()
                with anyio.move_on_after(0.05):  # a spawn or a release is not a transition
                    await event.wait()
        assert ok(), what

    async def state(self, state: State, timeout: float = 5.0) -> None:
        await self.until(f"{state} (is {self.runner.state})", lambda: self.runner.state is state)


@asynccontextmanager
async def rig(ext: Extension, *script: str) -> AsyncIterator[Rig]:
    spawn = FakeSpawn(*script)
    moved: list[Transition] = []
    box = [anyio.Event()]

    def on_transition(name: str, tr: Transition) -> None:
        moved.append(tr)
        box[0].set()
        box[0] = anyio.Event()

    ctx = RunnerContext(
        spawn=spawn,
        keeper_watch=lambda pgid: None,
        keeper_unwatch=lambda pgid: None,
        on_transition=on_transition,
    )
    runner = Runner(ext, ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
        try:
            yield Rig(runner, spawn, moved, lambda: box[0])
        finally:
            for w in spawn.workers:
                w.killed(9)  # whatever still "runs" ends, so the runner's tasks end too
            tg.cancel_scope.cancel()


async def _reach(r: Rig, state: str) -> None:
    """Drive a fresh rig to ``state`` (its script and ext were chosen for it)."""
    runner = r.runner
    if state == "running":
        await runner.start()
    elif state == "failed":
        runner.post_start()
        await r.state(S.FAILED)
    elif state == "backoff":
        runner.post_start()
        await r.until("second crash", lambda: runner.restarts == 2 and runner.state is S.BACKOFF)
    elif state == "starting":
        runner.post_start()
        await r.until("held worker", lambda: bool(r.spawn.workers) and runner.state is S.STARTING)
    elif state == "stopping":
        await runner.start()
        runner._post(Command(Cmd.STOP))  # what stop() posts, without waiting for the end
        await r.state(S.STOPPING)
    assert runner.state.value == state


SETUP: dict[str, tuple[Extension, tuple[str, ...]]] = {
    "stopped": (_ext(), ()),
    "running": (_ext(), ()),
    "failed": (_ext(), ("load_error",)),
    "disabled": (_ext(enabled=False), ()),
    "backoff": (_ext(restart=SLOW), ("exit:1", "exit:1")),
    "starting": (_ext(), ("hold",)),
    "stopping": (_ext(stop=30.0), ("stubborn",)),
}

# (state, command) → the state it ends in once everything under way has happened, and
# whether the command is refused.
TABLE: list[tuple[str, str, State, bool]] = [
    ("stopped", "start", S.RUNNING, False),
    ("stopped", "stop", S.STOPPED, False),
    ("stopped", "restart", S.RUNNING, False),
    ("stopped", "disable", S.DISABLED, False),
    ("stopped", "enable", S.STOPPED, False),
    ("running", "start", S.RUNNING, False),
    ("running", "stop", S.STOPPED, False),
    ("running", "restart", S.RUNNING, False),
    ("running", "disable", S.DISABLED, False),
    ("running", "enable", S.RUNNING, False),
    ("failed", "start", S.RUNNING, False),
    ("failed", "stop", S.FAILED, False),
    ("failed", "restart", S.RUNNING, False),
    ("failed", "disable", S.DISABLED, False),
    ("failed", "enable", S.FAILED, False),
    ("disabled", "start", S.DISABLED, True),
    ("disabled", "stop", S.DISABLED, False),
    ("disabled", "restart", S.DISABLED, True),
    ("disabled", "disable", S.DISABLED, False),
    ("disabled", "enable", S.STOPPED, False),
    ("backoff", "start", S.RUNNING, False),
    ("backoff", "stop", S.STOPPED, False),
    ("backoff", "restart", S.RUNNING, False),
    ("backoff", "disable", S.DISABLED, False),
    ("backoff", "enable", S.BACKOFF, False),
    ("starting", "start", S.RUNNING, False),
    ("starting", "stop", S.STOPPED, False),
    ("starting", "restart", S.RUNNING, False),
    ("starting", "disable", S.DISABLED, False),
    ("starting", "enable", S.RUNNING, False),
    ("stopping", "start", S.RUNNING, False),
    ("stopping", "stop", S.STOPPED, False),
    ("stopping", "restart", S.RUNNING, False),
    ("stopping", "disable", S.DISABLED, False),
    ("stopping", "enable", S.STOPPED, False),
]


def _handled(r: Rig, command: str, outcome: list[BaseException | None]) -> bool:
    """The command reached the runner: a start waits for the ready, the others move or answer."""
    return command == "start" or bool(outcome) or r.runner.state is not S.STARTING


@pytest.mark.parametrize(("state", "command", "final", "refused"), TABLE)
async def test_command_in_state(state: str, command: str, final: State, refused: bool) -> None:
    ext, script = SETUP[state]
    async with rig(ext, *script) as r:
        await _reach(r, state)
        spawned = len(r.spawn.workers)
        outcome: list[BaseException | None] = []

        async def run() -> None:
            try:
                await getattr(r.runner, command)()
                outcome.append(None)
            except CommandFailed as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # what is under way finishes: a held start says ready, a stubborn stop is killed
            if state == "starting":
                await r.until("handled", lambda: _handled(r, command, outcome))
                r.spawn.workers[0].release.set()
            elif state == "stopping":
                r.spawn.workers[0].killed(9)
        await r.state(final)
        assert len(outcome) == 1
        if refused:
            assert isinstance(outcome[0], CommandFailed)
            assert "disabled" in str(outcome[0])
        else:
            assert outcome[0] is None, outcome[0]
        runner = r.runner
        assert runner.goal in AT_REST[runner.state], (runner.state, runner.goal)
        if command == "restart" and not refused:
            assert len(r.spawn.workers) > spawned  # a new worker, not the old one
        if (state, command) in (("running", "start"), ("running", "enable")):
            assert len(r.spawn.workers) == spawned  # the same worker


@pytest.mark.parametrize(
    ("script", "restart", "final", "reason", "restarts"),
    [
        (
            ("exit:1",),
            RestartConfig(policy="never"),
            S.STOPPED,
            "policy never: exited with status 1",
            0,
        ),
        (("exit:0",), RestartConfig(), S.STOPPED, "exited cleanly (policy on-failure)", 0),
        (("exit:1",), QUICK, S.RUNNING, "ready", 1),
        # status 3 that the worker did not report as a load error is an ordinary crash
        (("exit:3",), QUICK, S.RUNNING, "ready", 1),
        (
            ("load_error",),
            QUICK,
            S.FAILED,
            "load error once: load error (exit 3): ModuleNotFoundError: No module named 'x'",
            0,
        ),
        (
            ("exit:1",) * 3,
            RestartConfig(policy="always", max_restarts=2, backoff=0.0, max_backoff=0.0),
            S.FAILED,
            "2 restarts within 60s: exited with status 1",
            2,
        ),
    ],
)
async def test_exit_judged(
    script: tuple[str, ...], restart: RestartConfig, final: State, reason: str, restarts: int
) -> None:
    async with rig(_ext(restart=restart), *script) as r:
        r.runner.post_start()
        await r.until(
            f"{final}",
            lambda: bool(r.moved) and r.moved[-1].to is final and r.runner.restarts == restarts,
        )
        assert r.runner.sm.reason.startswith(reason), r.runner.sm.reason
        assert r.runner.goal in AT_REST[r.runner.state]


@pytest.mark.parametrize(
    ("script", "reason"),
    [((), LEARNED), (("load_error",), NOT_LEARNED_REASON)],
)
async def test_discover_learns_then_stops_and_never_restarts(
    script: tuple[str, ...], reason: str
) -> None:
    async with rig(_ext(), *script) as r:
        r.runner.discover()
        await r.until("discovered", lambda: len(r.moved) >= 3 and r.runner.state is S.STOPPED)
        assert r.runner.sm.reason.startswith(reason)
        assert len(r.spawn.workers) == 1 and r.runner.restarts == 0
        if not script:
            assert r.runner.catalog == {"tools": []}


async def test_a_start_during_discovery_keeps_it_running() -> None:
    async with rig(_ext(), "hold") as r:
        r.runner.discover()
        await r.until("held", lambda: bool(r.spawn.workers) and r.runner.state is S.STARTING)
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.runner.start)
            await r.until("goal up", lambda: r.runner.goal.value == "up")
            r.spawn.last.release.set()
        assert r.runner.state is S.RUNNING


async def test_a_late_message_about_an_old_worker_is_ignored() -> None:
    async with rig(_ext()) as r:
        await r.runner.start()
        await r.runner.restart()
        assert len(r.spawn.workers) == 2
        r.runner._post(Exited(1, Exit(1, None)))  # about worker 1, long gone
        await r.runner.start()  # handled after it (the inbox is in order)
        assert r.runner.state is S.RUNNING and r.runner.restarts == 0
        assert r.runner.pid == r.spawn.last.proc.pid


async def test_progress_of_concurrent_callers_with_one_token_stays_apart() -> None:
    async with rig(_ext()) as r:
        await r.runner.start()
        got: dict[str, list[list[object]]] = {"a": [], "b": []}
        seen: dict[str, object] = {}

        async def call(who: str) -> None:
            answer = await r.runner.mcp(
                "tools/call", {"who": who}, {"progressToken": 7}, got[who].append
            )
            seen[who] = answer["token_seen"]

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a")
                tg.start_soon(call, "b")
        assert got == {w: [[7, 1, 2, "tools/call 1"], [7, 2, 2, "tools/call 2"]] for w in "ab"}
        assert seen["a"] != seen["b"]  # the worker saw tokens of the core's own
        assert r.runner.calls.progress_in_flight == 0
        # a token without a callback is not passed on: nobody would hear the reports
        answer = await r.runner.mcp("tools/call", {}, {"progressToken": 7})
        assert answer["token_seen"] is None
