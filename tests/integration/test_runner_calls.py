"""The runner's call path against a real worker: progress reports reach the caller that asked.

Two clients (the HTTP front and ``spctl mcp``) each number their progress tokens from 1; the
core is where they fan in, so it gives each call its own token towards the worker and maps the
reports back to the caller's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor.config import Extension, Source
from supervisor.core.process import WorkerProcess, spawn_worker
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from tests.integration.harness import FIXTURES

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _server(name: str, fixture: str) -> Extension:
    return Extension(
        name=name,
        section="servers",
        type="local",
        source=Source(Path("servers.yaml"), 1, 1),
        path=FIXTURES / fixture,
    )


async def _spawn(
    ext: Extension, on_line: Callable[[str, str], None], on_spawned: Any
) -> WorkerProcess:
    env = {**os.environ, "SPCTL_EXTENSION": ext.name}
    argv = [sys.executable, "-P", "-m", "worker"]
    return await spawn_worker(argv=argv, env=env, on_line=on_line, on_spawned=on_spawned)


@asynccontextmanager
async def running(ext: Extension) -> AsyncIterator[Runner]:
    ctx = RunnerContext(
        spawn=_spawn, keeper_watch=lambda pgid: None, keeper_unwatch=lambda pgid: None
    )
    runner = Runner(ext, ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
        with anyio.fail_after(30):
            await runner.start()
        try:
            yield runner
        finally:
            with anyio.fail_after(30):
                await runner.retire()


async def test_two_callers_with_the_same_progress_token_each_get_their_own_reports() -> None:
    async with running(_server("echo", "mcp_echo")) as runner:
        got: dict[str, list[list[Any]]] = {"a": [], "b": []}
        results: dict[str, Any] = {}

        async def call(who: str, steps: int) -> None:
            params = {"name": "progress", "arguments": {"steps": steps}}
            results[who] = await runner.mcp(
                "tools/call", params, {"progressToken": 1}, got[who].append
            )

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", 3)
                tg.start_soon(call, "b", 5)
        assert set(results) == {"a", "b"}  # both answered
        # every report under the caller's own token, each caller only its own steps, in order
        assert [r[:3] for r in got["a"]] == [[1, i, 3] for i in (1, 2, 3)]
        assert [r[:3] for r in got["b"]] == [[1, i, 5] for i in (1, 2, 3, 4, 5)]
        # and the worker saw tokens of the core's own, not the callers' (no report is left over)
        assert not runner.calls.progress_in_flight
