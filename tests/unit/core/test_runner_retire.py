"""A retired runner ignores late messages (a backoff timer firing after a reload removed the
extension used to raise ClosedResourceError and take the supervisor's task group down)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from supervisor.config import Extension, Source
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from supervisor.core.states import State


def _runner() -> Runner:
    ext = Extension(
        name="gone",
        section="modules",
        type="local",
        source=Source(Path("modules.yaml"), 1, 1),
        module_type="daemon",
    )

    async def never_spawned(*args: object) -> None:
        raise AssertionError("not started in this test")

    return Runner(ext, RunnerContext(spawn=never_spawned, keeper_watch=print, keeper_unwatch=print))


@pytest.mark.anyio
async def test_late_message_after_retire_is_ignored() -> None:
    runner = _runner()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
        with anyio.fail_after(5):
            await runner.retire()
        runner._post(("backoff_done", 1))  # what a sleeping backoff timer does later
    assert runner.state is State.STOPPED


@pytest.mark.anyio
async def test_a_crashing_runner_does_not_take_its_task_group_down() -> None:
    runner = _runner()

    async def boom() -> None:
        raise RuntimeError("a bug")

    runner.run = boom  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
    # reaching here means the exception was contained and logged
