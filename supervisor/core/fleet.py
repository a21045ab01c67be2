"""The fleet: one runner per hostable extension, the entries that cannot run, and the YAML.

Theory of operation: the fleet is the one owner of "which extensions exist". It holds the
runners by name (each runs its actor loop in the supervisor's task group, see :meth:`attach`),
the entries that cannot run with the reason (``status`` lists them as ``failed``), the ones
held back by their dependencies (see ``ordering``), and each
entry twice: as *declared* in the YAML and as *effective* (the runner's ``ext``: the
``spctl enable``/``disable`` overrides applied). :meth:`adopt` takes a new
:class:`~supervisor.rules.reload_plan.Hostable` (at start and on reload); :meth:`require` is
the one lookup every control verb uses, raising :class:`NotHosted` for a name that has no
runner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import structlog
from anyio.abc import TaskGroup

from supervisor.config import Extension
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from supervisor.overrides import Overrides
from supervisor.rules.reload_plan import Hostable
from supervisor.rules.states import State

__all__ = ["Fleet", "NotHosted"]

log = structlog.get_logger("spctl.serve")


class NotHosted(LookupError):
    """No runner has this name: ``reason`` says why the entry cannot run, or None when no
    entry has that name at all."""

    def __init__(self, name: str, reason: str | None) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}" if reason else f"no extension named {name!r}")


class Fleet:
    def __init__(self, ctx: RunnerContext, overrides: Overrides) -> None:
        self.ctx = ctx
        self.overrides = overrides
        if overrides.error:
            log.warning("overrides", error=overrides.error)
        self.runners: dict[str, Runner] = {}  # a live view: the watchdog iterates it
        self.invalid: dict[str, str] = {}
        self.declared: dict[str, Extension] = {}
        self.held: dict[str, str] = {}  # name → why it is not started yet ("waiting for x")
        self._tg: TaskGroup | None = None

    # ----- lookups -----

    def require(self, name: str) -> Runner:
        runner = self.runners.get(name)
        if runner is None:
            raise NotHosted(name, self.invalid.get(name))
        return runner

    def get(self, name: str) -> Runner | None:
        return self.runners.get(name)

    def __iter__(self) -> Iterator[Runner]:
        return iter(list(self.runners.values()))

    def provider(self, service: str) -> Runner | None:
        """The plugin module that provides ``service``, if any."""
        return next((r for r in self if r.ext.kind == "module" and service in r.ext.provides), None)

    def snapshot(self, runner: Runner) -> dict[str, Any]:
        """``runner``'s status row: where ``enabled`` comes from, and why it waits, if so."""
        snap = runner.snapshot()
        declared = self.declared.get(runner.name, runner.ext)
        snap["enabled_source"] = self.overrides.source(runner.name, declared.section)
        held = self.held.get(runner.name)
        if held is not None and runner.state in (State.STOPPED, State.FAILED):
            snap["reason"] = held
        return snap

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        if self.invalid:
            counts["failed"] = counts.get("failed", 0) + len(self.invalid)
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no extensions"

    # ----- changes -----

    def adopt(self, hostable: Hostable) -> None:
        """Take what a (re)load found; the runners themselves move by the reload plan."""
        self.invalid = dict(hostable.invalid)
        self.declared = dict(hostable.declared)

    def ensure(self, ext: Extension) -> Runner:
        """The runner of ``ext`` with this configuration, created (and run) if new."""
        runner = self.runners.get(ext.name)
        if runner is None:
            runner = self.runners[ext.name] = Runner(ext, self.ctx)
            if self._tg is not None:
                self._tg.start_soon(run_guarded, runner)
        else:
            runner.update(ext)
        return runner

    def remove(self, name: str) -> None:
        self.runners.pop(name, None)
        self.held.pop(name, None)

    def set_enabled(self, runner: Runner, enabled: bool) -> None:
        """Persist ``spctl enable/disable`` (an override only where it differs from the YAML)
        and make it the runner's configuration; the caller moves the runner."""
        declared = self.declared.get(runner.name, runner.ext)
        self.overrides.set(runner.ext, enabled, declared.enabled)
        runner.update(dataclasses.replace(runner.ext, enabled=enabled))

    # ----- tasks -----

    def attach(self, tg: TaskGroup) -> None:
        """Run every runner's actor loop in ``tg``, and those of runners added later."""
        self._tg = tg
        for runner in self:
            tg.start_soon(run_guarded, runner)

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the supervisor's task group (dropped before it serves)."""
        if self._tg is not None:
            self._tg.start_soon(fn, *args)
