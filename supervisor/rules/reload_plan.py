"""Reload as a diff: which extensions start, stop, restart or are kept (pure).

An extension is *changed* when any field that affects its worker differs (``Extension``
equality ignores only where the entry sits in the file, so moving an entry or adding a
comment changes nothing). ``enabled`` is handled apart: turning it off stops the extension,
turning it on starts it; neither counts as a change of the worker. Nor do the filters
(``tools``/``prompts``/``resources``): they decide what is advertised of the same catalog, so
a change of only those is ``refilter``: the runner takes the new entry and keeps its worker.

:func:`hostable` is the other half of a reload: which entries of a loaded registry can run
once the operator's ``enable``/``disable`` overrides are applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.config import Extension, Filter, LoadResult
from supervisor.config.schema import Hooks

__all__ = ["Hostable", "Plan", "hostable", "plan"]


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...] = ()  # new, or newly enabled
    stop: tuple[str, ...] = ()  # removed (the runner goes away)
    disable: tuple[str, ...] = ()  # still listed, now disabled
    restart: tuple[str, ...] = ()  # changed
    update: tuple[str, ...] = ()  # changed but not running: take the new config quietly
    keep: tuple[str, ...] = ()
    refilter: tuple[str, ...] = ()  # only the filters changed: listed anew, worker kept

    def as_dict(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def empty(self) -> bool:
        return not (
            self.start or self.stop or self.disable or self.restart or self.update or self.refilter
        )


def plan(
    old: Mapping[str, Extension], new: Mapping[str, Extension], running: frozenset[str]
) -> Plan:
    """``running``: names whose worker is up or coming up (starting, running, backoff)."""
    start: list[str] = []
    stop: list[str] = []
    disable: list[str] = []
    restart: list[str] = []
    update: list[str] = []
    keep: list[str] = []
    refilter: list[str] = []
    for name in old:
        if name not in new:
            stop.append(name)
    for name, ext in new.items():
        before = old.get(name)
        if before is None:
            if ext.enabled:
                start.append(name)
            else:
                update.append(name)
            continue
        same_entry = dataclasses.replace(before, enabled=ext.enabled) == ext
        same_worker = same_entry or _unfiltered(before, ext.enabled) == _unfiltered(ext)
        if before.enabled and not ext.enabled:
            disable.append(name)
        elif not before.enabled and ext.enabled:
            start.append(name)
        elif not same_worker:
            (restart if name in running else update).append(name)
        elif not same_entry:
            refilter.append(name)
        else:
            keep.append(name)
    return Plan(*(tuple(x) for x in (start, stop, disable, restart, update, keep, refilter)))


def _unfiltered(ext: Extension, enabled: bool | None = None) -> Extension:
    """``ext`` without its filters (and with ``enabled``, when given): what its worker runs."""
    none = Filter()
    return dataclasses.replace(
        ext,
        enabled=ext.enabled if enabled is None else enabled,
        tools=none,
        prompts=none,
        resources=none,
        hooks=Hooks(),  # read by the core on each event: a new hook needs no new worker
    )


@dataclass(frozen=True)
class Hostable:
    """What a loaded registry means for the fleet, overrides applied (see :func:`hostable`)."""

    runnable: Mapping[str, Extension]  # effective entries: what the runners run
    invalid: Mapping[str, str]  # name → why it cannot run (``status`` shows it as failed)
    declared: Mapping[str, Extension]  # every valid entry as written in the YAML


def hostable(loaded: LoadResult, overrides: Mapping[str, bool]) -> Hostable:
    """The extensions of ``loaded`` that can run, with the ``spctl enable/disable`` overrides
    (name → enabled) applied, and why the others cannot run. Pure: ``reload --dry-run`` and
    ``reload`` compute the same value and only the latter adopts it."""
    invalid = {
        name: "invalid configuration: " + "; ".join(str(e) for e in errs)
        for name, errs in loaded.invalid.items()
    }
    declared = {e.name: e for e in loaded.registry.extensions}
    runnable: dict[str, Extension] = {}
    for ext in declared.values():
        if ext.name in overrides:
            ext = dataclasses.replace(ext, enabled=overrides[ext.name])
        runnable[ext.name] = ext
    return Hostable(runnable, invalid, declared)
