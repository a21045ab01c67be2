"""A retired runner ignores late messages (a backoff timer firing after a reload removed the
extension used to raise ClosedResourceError and take the supervisor's task group down)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config import Extension, Source
from supervisor.core.inbox import BackoffDone
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from supervisor.rules.states import State


def _runner(spawn: object = None) -> Runner:
    ext = Extension(
        name="gone",
        section="modules",
        type="local",
        source=Source(Path("modules.yaml"), 1, 1),
        module_type="daemon",
    )

    async def never_spawned(*args: object) -> None:
        raise AssertionError("not started in this test")

    ctx = RunnerContext(spawn=spawn or never_spawned, keeper_watch=print, keeper_unwatch=print)
    return Runner(ext, ctx)


@pytest.mark.anyio
async def test_late_message_after_retire_is_ignored() -> None:
    runner = _runner()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_guarded, runner)
        with anyio.fail_after(5):
            await runner.retire()
        runner._post(BackoffDone(1))  # what a sleeping backoff timer does later
    assert runner.state is State.STOPPED


@pytest.mark.anyio
async def test_a_crashing_runner_does_not_take_its_task_group_down() -> None:
    async def buggy_spawn(*args: object) -> None:
        raise RuntimeError("a bug")  # not an OSError: a bug in spctl, not a failed start

    runner = _runner(buggy_spawn)
    with capture_logs() as logged, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_guarded, runner)
            runner.post_start()
    # reaching here means the task group survived; the crash was logged, naming the extension
    crashed = [e for e in logged if e["event"] == "runner crashed (a bug in spctl)"]
    assert len(crashed) == 1, logged
    assert crashed[0]["extension"] == "gone"
    assert crashed[0]["log_level"] == "error"
    assert crashed[0]["exc_info"] is True  # the traceback goes with it
