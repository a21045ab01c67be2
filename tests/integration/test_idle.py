"""An idle supervisor does only the periodic work it needs (DESIGN §14): a worker whose limits
its cgroup enforces is read from the cgroup's counters and never swept by the
watchdog; without cgroups the watchdog samples exactly the workers with limits; with no
worker at all the watchdog task schedules no timer. Real supervisors, real workers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import anyio
import pytest

from supervisor.core.cgroups import detect
from supervisor.core.watchdog import LINEAGE_PERIOD, LimitsEnforcer, aligned
from tests.helpers import module_entry, serve_fixture, wait_for

SUPPORT = detect(environ={})
needs_cgroups = pytest.mark.skipif(
    SUPPORT.mode == "none" or os.geteuid() != 0,
    reason=f"needs root and cgroups ({SUPPORT.mode}: {SUPPORT.reason})",
)
LIMITED = {"memory": "256MiB"}


def _modules() -> list[dict[str, object]]:
    return [
        module_entry("limited", "ok_daemon", limits=LIMITED),
        module_entry("free", "ok_daemon"),
    ]


@needs_cgroups
def test_workers_in_their_cgroups_are_read_from_its_counters(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, _modules()) as s:
        s.start()
        for name in ("limited", "free"):
            s.wait_state(name, "running")
        status = s.try_status()
        assert status is not None
        assert status["supervisor"]["watchdog"] == []  # the kernel holds the memory limit
        for ext in status["extensions"]:
            usage = ext["usage"]
            assert usage["source"] == "cgroup", ext
            assert usage["rss"] > 0 and usage["processes"] == 1 and usage["open_files"] >= 3
            if "memory" in SUPPORT.controllers:
                assert usage["cgroup_memory"] is not None  # what its limit is enforced on
        wait_for(lambda: s.ext("limited")["usage"]["cpu_seconds"] > 0, 10, "CPU counted")

        def recorded() -> bool:
            rss = s.call("history", "limited")["series"]["limited"]["rss"]
            return any(r is not None and r > 0 for r in rss)

        wait_for(recorded, 10, "a history point from the counters")


def test_without_cgroups_the_watchdog_samples_only_the_limited(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, _modules(), extra_args=["--no-cgroups"]) as s:
        s.start()
        for name in ("limited", "free"):
            s.wait_state(name, "running")
        status = s.try_status()
        assert status is not None
        assert status["supervisor"]["watchdog"] == ["limited"]
        assert {e["usage"]["source"] for e in status["extensions"]} == {"processes"}
        assert s.spctl("stop", "limited").returncode == 0
        status = s.try_status()
        assert status is not None and status["supervisor"]["watchdog"] == []


def _timers(within: float) -> list[asyncio.TimerHandle]:
    loop = asyncio.get_running_loop()
    at = loop.time() + within
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [h for h in scheduled if not h.cancelled() and h.when() < at]


def test_the_watchdog_of_no_worker_schedules_no_timer() -> None:
    """No worker: the task waits on the lineage's news, with no timeout at all."""

    async def main() -> int:
        limits = LimitsEnforcer()
        async with anyio.create_task_group() as tg:
            tg.start_soon(limits.watch, {})
            await anyio.wait_all_tasks_blocked()
            timers = len(_timers(3600.0))
            tg.cancel_scope.cancel()
        return timers

    assert anyio.run(main) == 0


def test_aligned_is_the_next_multiple_of_the_period() -> None:
    assert aligned(2.0, 10.0) == 12.0
    assert aligned(2.0, 10.5) == 12.0
    assert aligned(2.0, 11.999) == 12.0
    assert aligned(LINEAGE_PERIOD) > 0
