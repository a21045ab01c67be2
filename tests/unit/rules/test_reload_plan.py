"""Reload planning (which extensions move) and ``hostable`` (what can run, overrides applied):
pure functions, table-driven."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import Auth, ConfigError, Extension, Filter, LoadResult, Registry, Source
from supervisor.rules.reload_plan import Plan, hostable, plan

SRC = Source(Path("modules.yaml"), 1, 1)


def ext(name: str, **kw: Any) -> Extension:
    return Extension(**{"name": name, "section": "modules", "type": "local", "source": SRC, **kw})


A, B, C = ext("a"), ext("b"), ext("c")
A_OFF = dataclasses.replace(A, enabled=False)
A_CHANGED = dataclasses.replace(A, config={"v": 2})
A_MOVED = dataclasses.replace(A, source=Source(Path("modules.yaml"), 9, 3))
A_CHANGED_OFF = dataclasses.replace(A_CHANGED, enabled=False)
A_FILTERED = dataclasses.replace(A, tools=Filter(allow=("get_*",)))
A_FILTERED_CHANGED = dataclasses.replace(A_FILTERED, config={"v": 2})
A_FILTERED_OFF = dataclasses.replace(A_FILTERED, enabled=False)


def exts(*items: Extension) -> dict[str, Extension]:
    return {e.name: e for e in items}


# (case, old, new, running, expected plan fields; unlisted fields are empty)
PLANS: list[tuple[str, dict[str, Extension], dict[str, Extension], set[str], dict[str, Any]]] = [
    ("nothing changes", exts(A, B), exts(A, B), {"a", "b"}, {"keep": ("a", "b")}),
    ("a new entry starts", exts(A), exts(A, B), {"a"}, {"start": ("b",), "keep": ("a",)}),
    ("a new disabled entry is only taken", exts(), exts(A_OFF), set(), {"update": ("a",)}),
    ("a removed entry stops", exts(A, B), exts(B), {"a", "b"}, {"stop": ("a",), "keep": ("b",)}),
    ("enabled → disabled", exts(A), exts(A_OFF), {"a"}, {"disable": ("a",)}),
    ("disabled → enabled starts", exts(A_OFF), exts(A), set(), {"start": ("a",)}),
    ("changed and running restarts", exts(A), exts(A_CHANGED), {"a"}, {"restart": ("a",)}),
    ("changed but not running is taken quietly", exts(A), exts(A_CHANGED), set(),
     {"update": ("a",)}),
    ("changed and disabled: only disabled", exts(A), exts(A_CHANGED_OFF), {"a"},
     {"disable": ("a",)}),
    ("moved in the file is no change", exts(A), exts(A_MOVED), {"a"}, {"keep": ("a",)}),
    ("disabled stays disabled", exts(A_OFF), exts(A_OFF), set(), {"keep": ("a",)}),
    ("only the filters changed: refiltered, the worker kept", exts(A), exts(A_FILTERED), {"a"},
     {"refilter": ("a",)}),
    ("filters and the worker changed: restarts", exts(A), exts(A_FILTERED_CHANGED), {"a"},
     {"restart": ("a",)}),
    ("filters changed and disabled: only disabled", exts(A), exts(A_FILTERED_OFF), {"a"},
     {"disable": ("a",)}),
    ("a filter removed: refiltered", exts(A_FILTERED), exts(A), set(), {"refilter": ("a",)}),
    ("all at once", exts(A, B, C), exts(A_CHANGED, C, ext("d")), {"a", "c"},
     {"start": ("d",), "stop": ("b",), "restart": ("a",), "keep": ("c",)}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "running", "expected"), [pytest.param(*p[1:], id=p[0]) for p in PLANS]
)
def test_plan(
    old: dict[str, Extension],
    new: dict[str, Extension],
    running: set[str],
    expected: dict[str, Any],
) -> None:
    p = plan(old, new, frozenset(running))
    assert p == Plan(**expected)
    assert p.empty == (set(expected) <= {"keep"})
    assert p.as_dict() == {f: list(getattr(p, f)) for f in Plan.__dataclass_fields__}


OAUTH_NO_URL = ext("r", type="remote", url="https://x/mcp", auth=Auth("oauth2", client_id="i"))
OAUTH_OK = dataclasses.replace(OAUTH_NO_URL, name="s", auth=Auth("oauth2", token_url="https://t"))
BROKEN = ConfigError(Path("modules.yaml"), 3, 5, "modules[1].timeout", "not a duration", "bad")


def loaded(*items: Extension, invalid: dict[str, tuple[ConfigError, ...]] | None = None) -> Any:
    return LoadResult(Registry(Path("."), items), (), invalid or {})


# (case, loaded, overrides, runnable → enabled, invalid names → a part of the reason)
HOSTABLE: list[tuple[str, LoadResult, dict[str, bool], dict[str, bool], dict[str, str]]] = [
    ("as written", loaded(A, dataclasses.replace(A_OFF, name="b")), {},
     {"a": True, "b": False}, {}),
    ("an override disables", loaded(A, B), {"a": False}, {"a": False, "b": True}, {}),
    ("an override enables", loaded(A_OFF), {"a": True}, {"a": True}, {}),
    ("an override of an unknown name is ignored", loaded(A), {"zz": False}, {"a": True}, {}),
    ("an invalid entry is not runnable", loaded(A, invalid={"bad": (BROKEN,)}), {},
     {"a": True}, {"bad": "invalid configuration: "}),
    ("oauth2 without tokenUrl runs (the worker discovers it)", loaded(OAUTH_NO_URL, OAUTH_OK),
     {}, {"r": True, "s": True}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("result", "overrides", "runnable", "invalid"),
    [pytest.param(*h[1:], id=h[0]) for h in HOSTABLE],
)
def test_hostable(
    result: LoadResult,
    overrides: dict[str, bool],
    runnable: dict[str, bool],
    invalid: dict[str, str],
) -> None:
    h = hostable(result, overrides)
    assert {n: e.enabled for n, e in h.runnable.items()} == runnable
    assert set(h.invalid) == set(invalid)
    for name, part in invalid.items():
        assert part in h.invalid[name]
    # declared: every valid entry as the YAML says, overrides not applied
    assert dict(h.declared) == {e.name: e for e in result.registry.extensions}


def test_hostable_is_pure() -> None:
    """A dry run and a reload may compute it twice: same input, same value, input untouched."""
    result, overrides = loaded(A, B), {"a": False}
    first, again = hostable(result, overrides), hostable(result, overrides)
    assert first == again
    assert overrides == {"a": False}
    assert result.registry.extensions == (A, B)
