"""``dependsOn``: what an extension waits for, and in which order a set of them stops (pure).

An extension starts only once every extension it depends on is ``running``. Until then it is
*held*: it stays ``stopped`` and its reason says ``waiting for X``; a dependency that will not
come up by itself (``failed``, ``disabled``, ``stopped`` after a try, or not hostable) is named
with its state, ``waiting for X (failed)``. Stopping goes the other way: dependents first.
The registry guarantees that every name exists and that there are no cycles.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from supervisor.rules.states import State

__all__ = ["blockers", "stop_waves", "waiting_reason", "will_not_come"]

Lookup = Callable[[str], tuple[State, bool] | None]
"""name → (state, has tried to start), or None for an entry that has no runner."""


def blockers(depends_on: Collection[str], lookup: Lookup) -> tuple[str, ...]:
    """The dependencies that are not running, in declared order."""
    return tuple(d for d in depends_on if (s := lookup(d)) is None or s[0] is not State.RUNNING)


def will_not_come(name: str, lookup: Lookup) -> bool:
    """True when dependency ``name`` will not reach ``running`` unless someone acts."""
    seen = lookup(name)
    if seen is None:
        return True
    state, attempted = seen
    return state in (State.FAILED, State.DISABLED) or (state is State.STOPPED and attempted)


def waiting_reason(waiting: Collection[str], lookup: Lookup) -> str:
    """``waiting for a, b (failed)``: each dependency that will not come names its state."""

    def one(name: str) -> str:
        seen = lookup(name)
        if seen is None:
            return f"{name} (cannot run)"
        return f"{name} ({seen[0].value})" if will_not_come(name, lookup) else name

    return "waiting for " + ", ".join(one(n) for n in waiting)


def stop_waves(
    names: Collection[str], depends_on: Mapping[str, Collection[str]]
) -> list[list[str]]:
    """``names`` in groups to stop one after another, dependents before their dependencies;
    the members of a group do not depend on each other (they stop together). Sorted."""
    left = set(names)
    waves: list[list[str]] = []
    while left:
        needed = {d for n in left for d in depends_on.get(n, ()) if d in left}
        wave = sorted(left - needed) or sorted(left)  # no cycles; never loop forever
        waves.append(wave)
        left -= set(wave)
    return waves
