"""``dependsOn`` decisions: what an extension waits for, how that reads, the stop order."""

from __future__ import annotations

import pytest

from supervisor.rules.depends import blockers, stop_waves, waiting_reason, will_not_come
from supervisor.rules.states import State

S = State
# name → (state, has tried to start); "gone" has no runner
FLEET = {
    "up": (S.RUNNING, True),
    "booting": (S.STARTING, True),
    "new": (S.STOPPED, False),
    "tried": (S.STOPPED, True),
    "dead": (S.FAILED, True),
    "off": (S.DISABLED, False),
    "retrying": (S.BACKOFF, True),
}


def lookup(name: str) -> tuple[State, bool] | None:
    return FLEET.get(name)


@pytest.mark.parametrize(
    ("depends_on", "waiting", "reason"),
    [
        ((), (), None),
        (("up",), (), None),
        (("booting",), ("booting",), "waiting for booting"),
        (("up", "new", "retrying"), ("new", "retrying"), "waiting for new, retrying"),
        (("dead",), ("dead",), "waiting for dead (failed)"),
        (("off", "up", "booting"), ("off", "booting"), "waiting for off (disabled), booting"),
        (("tried",), ("tried",), "waiting for tried (stopped)"),
        (("gone",), ("gone",), "waiting for gone (cannot run)"),
    ],
)
def test_blockers_and_reason(
    depends_on: tuple[str, ...], waiting: tuple[str, ...], reason: str | None
) -> None:
    assert blockers(depends_on, lookup) == waiting
    if reason is not None:
        assert waiting_reason(waiting, lookup) == reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("up", False),
        ("booting", False),
        ("new", False),  # it will be started
        ("retrying", False),
        ("tried", True),
        ("dead", True),
        ("off", True),
        ("gone", True),
    ],
)
def test_will_not_come(name: str, expected: bool) -> None:
    assert will_not_come(name, lookup) is expected


@pytest.mark.parametrize(
    ("names", "depends_on", "waves"),
    [
        ((), {}, []),
        (("a", "b"), {}, [["a", "b"]]),
        (("app", "db"), {"app": ("db",)}, [["app"], ["db"]]),
        # a chain: top first
        (("a", "b", "c"), {"a": ("b",), "b": ("c",)}, [["a"], ["b"], ["c"]]),
        # a diamond: both middles together
        (
            ("top", "l", "r", "base"),
            {"top": ("l", "r"), "l": ("base",), "r": ("base",)},
            [["top"], ["l", "r"], ["base"]],
        ),
        # a dependency outside the set is not waited for
        (("app",), {"app": ("db",)}, [["app"]]),
        (("db", "other"), {"app": ("db",)}, [["db", "other"]]),
    ],
)
def test_stop_waves(
    names: tuple[str, ...], depends_on: dict[str, tuple[str, ...]], waves: list[list[str]]
) -> None:
    assert stop_waves(names, depends_on) == waves
