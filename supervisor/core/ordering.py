"""In which order extensions start and stop (``dependsOn``), and when boot is over.

``dependsOn: [X, …]`` orders starts and stops; it does not tie lifetimes together:

- An extension is started only once every extension it depends on is ``running``. Until then
  it stays ``stopped``, *held*, and ``status`` says ``waiting for X``; it starts by itself the
  moment the last of them is running. A dependency that will not come up by itself
  (``failed``, ``disabled``, stopped after a try) is named with its state,
  ``waiting for X (failed)``, and its dependents wait until an operator brings it back
  (``spctl restart X``). Boot is over (READY=1) when every eager extension has settled or
  waits for a dependency that will not come.
- An explicit start (``spctl start/restart/enable``, a reload that adds or enables one, the
  first call to a lazy server) starts the stopped dependencies first, in order, and is refused
  while one of them is ``failed`` or ``disabled``.
- Stopping everything (shutdown, and a reload that removes or disables several) stops
  dependents before their dependencies, wave by wave.
- A running dependent is left alone when a dependency crashes, restarts or fails: only what has
  not started yet waits (and its own restarts after a crash are the runner's, not held).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from supervisor.core.catalogs import Catalogs
from supervisor.core.fleet import Fleet
from supervisor.core.runner import CommandFailed, Runner
from supervisor.rules.depends import blockers, stop_waves, waiting_reason, will_not_come
from supervisor.rules.states import SETTLED, UP, State, Transition

__all__ = ["Ordering"]

Action = Callable[[Runner], Awaitable[None]]

log = structlog.get_logger("spctl.serve")


class Ordering:
    def __init__(self, fleet: Fleet, catalogs: Catalogs) -> None:
        self.fleet = fleet
        self.catalogs = catalogs
        self.settled = anyio.Event()  # every eager extension has tried to start and settled
        self._asked: set[str] = set()  # at boot: asked to start (each once)

    def _lookup(self, name: str) -> tuple[State, bool] | None:
        runner = self.fleet.get(name)
        return None if runner is None else (runner.state, runner.attempted)

    # ----- boot -----

    def boot(self) -> None:
        """Start every enabled eager extension (without waiting): its dependencies first."""
        for runner in self.fleet:
            if runner.ext.enabled and not runner.ext.lazy and runner.name not in self._asked:
                self._want(runner)
        self._check_settled()  # nothing to start at all

    async def discover_lazy(self) -> None:
        """After boot, start each lazy server with no known catalog once, to learn it."""
        await self.settled.wait()  # after the eager extensions: they are what boot waits on
        for runner in self.fleet:
            if runner.state not in UP and runner.name not in self.fleet.held:
                self.catalogs.learn(runner)

    def _want(self, runner: Runner) -> None:
        """Start ``runner`` as soon as its dependencies run (and ask for those that are
        merely stopped, never tried: a lazy one, say)."""
        self._asked.add(runner.name)
        waiting = blockers(runner.ext.depends_on, self._lookup)
        if not waiting:
            self.fleet.held.pop(runner.name, None)
            runner.post_start()
            return
        self.fleet.held[runner.name] = waiting_reason(waiting, self._lookup)
        for dep in filter(None, map(self.fleet.get, waiting)):
            idle = dep.state is State.STOPPED and not dep.attempted and dep.ext.enabled
            if idle and dep.name not in self._asked:
                self._want(dep)

    def on_transition(self, runner: Runner, tr: Transition) -> None:
        """Release what no longer waits; keep the reasons of the others current."""
        for name in list(self.fleet.held):
            held = self.fleet.get(name)
            if held is None or not held.ext.enabled or held.state is not State.STOPPED:
                self.fleet.held.pop(name, None)  # gone, disabled or started meanwhile
                continue
            waiting = blockers(held.ext.depends_on, self._lookup)
            if waiting:
                self.fleet.held[name] = waiting_reason(waiting, self._lookup)
            else:
                log.info("dependencies running", extension=name)
                self.fleet.held.pop(name)
                held.post_start()
        self._check_settled()

    def _check_settled(self) -> None:
        def settled(r: Runner) -> bool:
            if r.name in self.fleet.held:
                waiting = blockers(r.ext.depends_on, self._lookup)
                return any(will_not_come(d, self._lookup) for d in waiting)
            return r.attempted and r.state in SETTLED

        eager = [r for r in self.fleet if r.ext.enabled and not r.ext.lazy]
        if not self.settled.is_set() and all(settled(r) for r in eager):
            self.settled.set()

    # ----- commands -----

    async def start(self, runner: Runner) -> None:
        """Start ``runner`` after its dependencies; returns when it runs. Raises CommandFailed."""
        await self._dependencies_up(runner)
        await runner.start()

    async def restart(self, runner: Runner) -> None:
        await self._dependencies_up(runner)
        await runner.restart()

    async def _dependencies_up(self, runner: Runner) -> None:
        for name in runner.ext.depends_on:
            dep = self.fleet.get(name)
            if dep is not None and dep.state is State.RUNNING:
                continue
            if dep is None or dep.state in (State.FAILED, State.DISABLED):
                raise CommandFailed(f"{runner.name}: {waiting_reason([name], self._lookup)}")
            try:
                await self.start(dep)
            except CommandFailed as exc:
                raise CommandFailed(f"{runner.name}: waiting for {name}: {exc}") from None

    async def stop_one(self, runner: Runner) -> None:
        """``spctl stop``: this one only (its dependents are left alone); no longer waits."""
        self.fleet.held.pop(runner.name, None)
        await runner.stop()

    async def stop(self, runners: list[Runner], how: Action = Runner.stop) -> None:
        """Stop all of ``runners`` (``how``: stop, or disable): dependents first, each wave
        together."""
        for runner in runners:
            self.fleet.held.pop(runner.name, None)  # asked to stop: no longer waits to start
        by_name = {r.name: r for r in runners}
        deps = {r.name: r.ext.depends_on for r in runners}
        for wave in stop_waves(by_name, deps):
            async with anyio.create_task_group() as tg:
                for name in wave:
                    tg.start_soon(_quietly, how, by_name[name])


async def _quietly(how: Action, runner: Runner) -> None:
    try:
        await how(runner)
    except CommandFailed as exc:  # pragma: no cover - stop does not fail today
        log.warning("stop failed", extension=runner.name, reason=str(exc))
