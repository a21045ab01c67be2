"""Reload as a diff: which extensions start, stop, restart or are kept (pure).

An extension is *changed* when any field that affects its worker differs (``Extension``
equality ignores only where the entry sits in the file, so moving an entry or adding a
comment changes nothing). ``enabled`` is handled apart: turning it off stops the extension,
turning it on starts it; neither counts as a change of the worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.config import Extension

__all__ = ["Plan", "plan"]


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...] = ()  # new, or newly enabled
    stop: tuple[str, ...] = ()  # removed (the runner goes away)
    disable: tuple[str, ...] = ()  # still listed, now disabled
    restart: tuple[str, ...] = ()  # changed
    update: tuple[str, ...] = ()  # changed but not running: take the new config quietly
    keep: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.disable or self.restart or self.update)


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
        same_worker = dataclasses.replace(before, enabled=ext.enabled) == ext
        if before.enabled and not ext.enabled:
            disable.append(name)
        elif not before.enabled and ext.enabled:
            start.append(name)
        elif not same_worker:
            (restart if name in running else update).append(name)
        else:
            keep.append(name)
    return Plan(*(tuple(x) for x in (start, stop, disable, restart, update, keep)))
