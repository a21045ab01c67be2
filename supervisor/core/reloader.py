"""``spctl reload`` (and SIGHUP, ``--watch``): apply the difference between what runs and the files.

Theory of operation: a reload re-reads both registry files. Any error refuses the whole change
(:class:`InvalidConfig`; nothing that runs is touched). Otherwise the pure
:func:`~supervisor.rules.reload_plan.hostable` says what can run with the operator's overrides
applied and :func:`~supervisor.rules.reload_plan.plan` what moves: only added, removed, changed
or (dis)enabled extensions. A dry run computes the same two values and returns the plan; it
changes no state at all. Reloads are serialised by a lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisor.config import load_registry
from supervisor.core.catalogs import Catalogs
from supervisor.core.fleet import Fleet
from supervisor.core.ordering import Ordering
from supervisor.core.runner import CommandFailed, Runner
from supervisor.rules.reload_plan import hostable, plan
from supervisor.rules.states import ACTIVE

__all__ = ["InvalidConfig", "Reloader"]

log = structlog.get_logger("spctl.control")


class InvalidConfig(Exception):
    """The registry files have errors; nothing changed. ``errors``: each one, as printed."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        count = f"{len(errors)} error{'' if len(errors) == 1 else 's'}"
        super().__init__(f"configuration is invalid ({count}); nothing changed")


class Reloader:
    def __init__(
        self,
        extensions: Path,
        fleet: Fleet,
        catalogs: Catalogs,
        order: Ordering,
    ) -> None:
        self.extensions = extensions
        self.fleet = fleet
        self.catalogs = catalogs
        self.order = order  # starts dependencies first, stops dependents first
        self._lock = anyio.Lock()

    async def reload(self, dry_run: bool = False) -> dict[str, Any]:
        """Apply the difference between what runs and the files; all or nothing on errors."""
        async with self._lock:
            fleet = self.fleet
            loaded = load_registry(self.extensions)
            if loaded.errors:
                raise InvalidConfig([str(e) for e in loaded.errors])
            new = hostable(loaded, fleet.overrides.enabled)
            old = {r.name: r.ext for r in fleet}
            running = frozenset(r.name for r in fleet if r.state in ACTIVE)
            p = plan(old, new.runnable, running)
            if dry_run:
                return {"plan": p.as_dict(), "applied": False, "errors": []}
            fleet.adopt(new)
            log.info("reload", **{k: v for k, v in p.as_dict().items() if v and k != "keep"})
            errors: list[str] = []
            runnable = new.runnable

            async def stop_or_disable(runner: Runner) -> None:
                if runner.name in p.disable:
                    runner.update(runnable[runner.name])
                    await runner.disable()
                else:
                    await runner.stop()

            await self.order.stop(
                [fleet.require(n) for n in (*p.stop, *p.disable)], stop_or_disable
            )
            for name in p.stop:
                await fleet.require(name).retire()
                fleet.remove(name)
                self.catalogs.forget(name)  # it left the registry: its cached tools go too
            for name in p.update:
                self.catalogs.learn(fleet.ensure(runnable[name]))
            for name in p.refilter:  # the same worker, other filters: listed anew below
                fleet.require(name).update(runnable[name])
            async with anyio.create_task_group() as tg:
                for name in p.restart:
                    fleet.require(name).update(runnable[name])
                    tg.start_soon(_act, fleet.require(name).restart, errors)
                for name in p.start:
                    tg.start_soon(self._enable_and_start, fleet.ensure(runnable[name]), errors)
            if not p.empty:
                self.catalogs.changed()  # a lazy flag or a kind may have changed
            return {"plan": p.as_dict(), "applied": True, "errors": errors}

    async def reload_quietly(self) -> None:
        """SIGHUP and ``--watch``: like ``spctl reload``; the outcome goes to the log."""
        try:
            result = await self.reload()
        except InvalidConfig as exc:
            log.error("reload refused", reason=str(exc), errors=exc.errors)
            return
        if result["errors"]:
            log.warning("reload applied with errors", errors=result["errors"])

    async def _enable_and_start(self, runner: Runner, errors: list[str]) -> None:
        await runner.enable()
        if runner.ext.lazy:
            self.catalogs.learn(runner)
        else:
            await _act(lambda: self.order.start(runner), errors)


async def _act(action: Callable[[], Awaitable[Any]], errors: list[str]) -> None:
    try:
        await action()
    except CommandFailed as exc:
        errors.append(str(exc))
