"""Fleet and Catalogs over real runners that never start: lookups, the declared vs effective
entry, what is listed to MCP clients, and the one router rebuilt only on a new version."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import Extension, Filter, LoadResult, Registry, Source
from supervisor.core.catalog_cache import CatalogCache
from supervisor.core.catalogs import Catalogs
from supervisor.core.fleet import Fleet, NotHosted
from supervisor.core.runner import RunnerContext
from supervisor.overrides import Overrides
from supervisor.rules.reload_plan import hostable

SRC = Source(Path("servers.yaml"), 1, 1)
TOOLS = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}


def server(name: str, **kw: Any) -> Extension:
    return Extension(**{"name": name, "section": "servers", "type": "local", "source": SRC, **kw})


async def _never(*args: object) -> None:
    raise AssertionError("no worker is started in these tests")


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    ctx = RunnerContext(spawn=_never, keeper_watch=print, keeper_unwatch=print)
    fleet = Fleet(ctx, Overrides(tmp_path / "state"))
    loaded = LoadResult(Registry(tmp_path, (server("eager"), server("lazy", lazy=True))))
    h = hostable(loaded, {"eager": False})  # an override disables the eager one
    fleet.adopt(h)
    for ext in h.runnable.values():
        fleet.ensure(ext)
    return fleet


def test_require_names_why_an_entry_has_no_runner(fleet: Fleet) -> None:
    assert fleet.require("lazy").name == "lazy"
    fleet.invalid["broken"] = "invalid configuration: bad"
    with pytest.raises(NotHosted) as bad:
        fleet.require("broken")
    assert bad.value.reason == "invalid configuration: bad"
    assert str(bad.value) == "broken: invalid configuration: bad"
    with pytest.raises(NotHosted) as unknown:
        fleet.require("nope")
    assert unknown.value.reason is None
    assert str(unknown.value) == "no extension named 'nope'"


def test_declared_and_effective_entries(fleet: Fleet, tmp_path: Path) -> None:
    eager = fleet.require("eager")
    assert eager.ext.enabled is False  # effective: the override
    assert fleet.declared["eager"].enabled is True  # declared: the YAML
    fleet.overrides.enabled["eager"] = False
    assert fleet.snapshot(eager)["enabled_source"].startswith("override")
    fleet.set_enabled(eager, True)  # back to what the YAML says: the override goes
    assert eager.ext.enabled is True
    assert "eager" not in fleet.overrides.enabled
    assert fleet.snapshot(eager)["enabled_source"] == "servers.yaml"


def test_a_held_extension_shows_what_it_waits_for(fleet: Fleet) -> None:
    runner = fleet.require("lazy")
    fleet.held["lazy"] = "waiting for eager"
    assert fleet.snapshot(runner)["reason"] == "waiting for eager"
    fleet.remove("lazy")
    assert "lazy" not in fleet.held


def test_listed_and_one_router_per_version(fleet: Fleet, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path / "catalogs")
    catalogs = Catalogs(fleet, cache)
    assert catalogs.listed() == {}
    lazy = fleet.require("lazy")
    cache.save(lazy.ext, TOOLS)
    before = catalogs.version
    catalogs.load(lazy)  # a stopped lazy server is listed with its cached catalog
    assert catalogs.version > before
    assert catalogs.listed() == {"lazy": TOOLS}
    router = catalogs.router()
    assert router.servers == ("lazy",)
    assert catalogs.router() is router  # same version: the same router
    fleet.require("eager").catalog = TOOLS  # disabled (stopped): not listed
    catalogs.changed("eager")
    assert catalogs.router() is not router
    assert catalogs.router().servers == ("lazy",)
    assert catalogs.tools()["tools"][0]["name"] == "lazy__echo"
    catalogs.forget("lazy")
    assert cache.load(lazy.ext) is None


def test_a_changed_lazy_config_forgets_the_cached_catalog(fleet: Fleet, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path / "catalogs")
    catalogs = Catalogs(fleet, cache)
    lazy = fleet.require("lazy")
    cache.save(lazy.ext, TOOLS)
    catalogs.load(lazy)
    lazy.update(dataclasses.replace(lazy.ext, config={"other": 1}))
    catalogs.load(lazy)
    assert lazy.catalog is None
    assert catalogs.listed() == {}


def test_what_is_listed_is_filtered_and_the_whole_catalog_kept(
    fleet: Fleet, tmp_path: Path
) -> None:
    cache = CatalogCache(tmp_path / "catalogs")
    catalogs = Catalogs(fleet, cache)
    lazy = fleet.require("lazy")
    whole = {"tools": [{"name": "echo"}, {"name": "add"}, {"name": "admin_reset"}]}
    cache.save(lazy.ext, whole)
    catalogs.load(lazy)
    lazy.update(dataclasses.replace(lazy.ext, tools=Filter(allow=("a*",), deny=("admin_*",))))
    catalogs.load(lazy)  # the filters are not in the fingerprint: the cached catalog stays
    assert lazy.catalog == whole
    listed = catalogs.listed()
    assert listed == {"lazy": {"tools": [{"name": "add"}]}}
    assert catalogs.listed()["lazy"] is listed["lazy"]  # filtered once, until a change
    catalogs.changed()
    assert [t["name"] for t in catalogs.tools()["tools"]] == ["lazy__add"]
    lazy.update(dataclasses.replace(lazy.ext, tools=Filter()))  # a reload's refilter
    catalogs.changed("lazy")
    assert catalogs.listed() == {"lazy": whole}
    assert [t["tool"] for t in catalogs.tools()["tools"]] == ["echo", "add", "admin_reset"]
