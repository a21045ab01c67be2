"""The lazy servers' catalog cache: what invalidates an entry, and what it survives."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from supervisor.config import Extension, Filter, load_registry
from supervisor.core.catalog_cache import CatalogCache, fingerprint

CATALOG = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}


@pytest.fixture
def ext(tmp_path: Path) -> Extension:
    root = tmp_path / "extensions"
    (root / "servers" / "echo").mkdir(parents=True)
    (root / "servers" / "echo" / "__init__.py").write_text("")
    (root / "servers.yaml").write_text(
        "servers:\n"
        "  - name: echo\n"
        "    type: local\n"
        "    path: ./servers/echo\n"
        "    lazy: true\n"
        "    env: {TOKEN: '${TOKEN}'}\n"
        "    config: {greeting: hi}\n"
    )
    loaded = load_registry(root, {"TOKEN": "s3cret-value"})
    assert not loaded.errors, loaded.errors
    (only,) = loaded.registry.extensions
    return only


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"enabled": False}, True),
        ({"lazy": False}, True),
        ({"idle_timeout": 60.0}, True),
        ({"timeout": 1.0}, True),
        ({"tools": Filter(allow=("get_*",))}, True),  # the same catalog, filtered when listed
        ({"prompts": Filter(deny=("x",))}, True),
        ({"resources": Filter(allow=())}, True),
        ({"config": {"greeting": "hello"}}, False),
        ({"command": ("python", "server.py")}, False),
        ({"env": {"TOKEN": "other"}}, False),
    ],
)
def test_what_changes_the_fingerprint(
    ext: Extension, change: dict[str, object], same: bool
) -> None:
    changed = dataclasses.replace(ext, **change)  # type: ignore[arg-type]
    assert (fingerprint(changed) == fingerprint(ext)) is same


def test_round_trip_and_a_stale_entry_is_ignored(ext: Extension, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path / "state" / "catalogs")
    assert cache.load(ext) is None
    assert cache.save(ext, CATALOG) is None
    assert cache.load(ext) == CATALOG
    assert cache.load(dataclasses.replace(ext, lazy=False)) == CATALOG
    assert cache.load(dataclasses.replace(ext, config={"greeting": "hello"})) is None
    assert oct((tmp_path / "state" / "catalogs").stat().st_mode & 0o777) == "0o700"


def test_secrets_never_reach_the_disk(ext: Extension, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    cache.save(ext, CATALOG)
    assert "s3cret-value" not in (tmp_path / "echo.json").read_text()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"fingerprint": 1}', ""])
def test_an_unreadable_entry_is_ignored_and_replaced(
    ext: Extension, tmp_path: Path, content: str
) -> None:
    where = tmp_path / "catalogs"
    where.mkdir()
    (where / "echo.json").write_text(content)
    cache = CatalogCache(where)
    assert cache.load(ext) is None
    assert cache.save(ext, CATALOG) is None
    assert json.loads((where / "echo.json").read_text())["catalog"] == CATALOG
    assert [p.name for p in where.iterdir()] == ["echo.json"]  # no temporary file left


def test_a_failed_save_is_an_error_text_not_an_exception(ext: Extension, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    error = CatalogCache(blocked / "catalogs").save(ext, CATALOG)
    assert error is not None and "echo" in error and str(blocked) in error


def test_forget_removes_the_entry(ext: Extension, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    cache.save(ext, CATALOG)
    cache.forget("echo")
    cache.forget("echo")  # already gone: fine
    assert cache.load(ext) is None


def test_the_same_catalog_is_not_written_again(ext: Extension, tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    assert cache.save(ext, CATALOG) is None
    inode = (tmp_path / "echo.json").stat().st_ino
    assert cache.save(ext, dict(CATALOG)) is None  # a lazy server's next start: same tools
    assert (tmp_path / "echo.json").stat().st_ino == inode
    changed = {"tools": [*CATALOG["tools"], {"name": "more", "inputSchema": {}}]}
    assert cache.save(ext, changed) is None
    assert (tmp_path / "echo.json").stat().st_ino != inode
    assert CatalogCache(tmp_path).load(ext) == changed
