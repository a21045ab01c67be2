"""In which order extensions start and stop, and when boot is over."""

from __future__ import annotations

import anyio
import structlog

from supervisor.core.catalogs import Catalogs
from supervisor.core.fleet import Fleet
from supervisor.core.runner import CommandFailed, Runner
from supervisor.rules.states import SETTLED, UP, Transition

__all__ = ["Ordering"]

log = structlog.get_logger("spctl.serve")


class Ordering:
    def __init__(self, fleet: Fleet, catalogs: Catalogs) -> None:
        self.fleet = fleet
        self.catalogs = catalogs
        self.settled = anyio.Event()  # every eager extension has tried to start and settled

    def boot(self) -> None:
        """Start every enabled eager extension (without waiting)."""
        for runner in self.fleet:
            if runner.ext.enabled and not runner.ext.lazy:
                runner.post_start()
        self._check_settled()  # nothing to start at all

    async def discover_lazy(self) -> None:
        """After boot, start each lazy server with no known catalog once, to learn it."""
        await self.settled.wait()  # after the eager extensions: they are what boot waits on
        for runner in self.fleet:
            if runner.state not in UP:
                self.catalogs.learn(runner)

    async def start(self, runner: Runner) -> None:
        """Start ``runner``; returns when it runs. Raises CommandFailed."""
        await runner.start()

    async def stop(self, runners: list[Runner]) -> None:
        """Stop all of ``runners``."""
        async with anyio.create_task_group() as tg:
            for runner in runners:
                tg.start_soon(_quiet_stop, runner)

    def on_transition(self, runner: Runner, tr: Transition) -> None:
        self._check_settled()

    def _check_settled(self) -> None:
        if not self.settled.is_set() and all(
            r.attempted and r.state in SETTLED
            for r in self.fleet
            if r.ext.enabled and not r.ext.lazy
        ):
            self.settled.set()


async def _quiet_stop(runner: Runner) -> None:
    try:
        await runner.stop()
    except CommandFailed as exc:  # pragma: no cover - stop does not fail today
        log.warning("stop failed", extension=runner.name, reason=str(exc))
