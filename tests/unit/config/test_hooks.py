"""``hooks:`` in an entry and at the top of a file: argv lists, the file's as defaults, and
every mistake an error with its file, line, field and reason."""

from __future__ import annotations

import pytest

from supervisor.config.schema import Hooks
from tests.unit.config.helpers import Tree, lines

MODULE = "modules:\n  - name: backup\n    type: local\n    path: ./modules/backup\n"
MODULE += "    moduleType: daemon\n"  # added keys from line 6


def test_no_hooks_by_default(tree: Tree) -> None:
    tree.modules(MODULE)
    ext = tree.load().registry.get("backup")
    assert ext is not None and ext.hooks == Hooks()


def test_an_entrys_hooks(tree: Tree) -> None:
    tree.modules(
        MODULE + "    hooks:\n      onFailed: [/usr/local/bin/notify, --to, ops]\n"
        "      onCrash: [./hooks/page.sh]\n      timeout: 3s\n"
    )
    result = tree.load()
    assert lines(result) == []
    ext = result.registry.get("backup")
    assert ext is not None
    assert dict(ext.hooks.commands) == {
        "onFailed": ("/usr/local/bin/notify", "--to", "ops"),
        "onCrash": (str(tree.root.resolve() / "hooks/page.sh"),),
    }
    assert ext.hooks.timeout == 3.0


def test_the_files_hooks_are_every_entrys_defaults(tree: Tree) -> None:
    tree.package("modules/other")
    tree.modules(
        "hooks:\n  onCrash: [/bin/a]\n  onFailed: [/bin/b]\n  timeout: 7\n"
        + MODULE
        + "    hooks: {onFailed: [/bin/c, x]}\n"
        + "  - name: other\n    type: local\n    path: ./modules/other\n    moduleType: daemon\n"
    )
    result = tree.load()
    assert lines(result) == []
    backup, other = result.registry.get("backup"), result.registry.get("other")
    assert backup is not None and other is not None
    assert dict(backup.hooks.commands) == {"onCrash": ("/bin/a",), "onFailed": ("/bin/c", "x")}
    assert backup.hooks.timeout == 7.0
    assert dict(other.hooks.commands) == {"onCrash": ("/bin/a",), "onFailed": ("/bin/b",)}


BAD = [
    ("event", "hooks: {onCrashed: [/bin/x]}", "modules[0].hooks.onCrashed",
     "unknown key 'onCrashed' (did you mean 'onCrash'?)"),
    ("shell", "hooks: {onCrash: '/bin/x --y'}", "modules[0].hooks.onCrash", "expected a list"),
    ("empty", "hooks: {onCrash: []}", "modules[0].hooks.onCrash", "non-empty list"),
    ("timeout", "hooks: {onCrash: [/bin/x], timeout: 0}", "modules[0].hooks.timeout",
     "greater than zero"),
    ("shape", "hooks: [/bin/x]", "modules[0].hooks", "expected a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "field", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_hooks(tree: Tree, keys: str, field: str, message: str) -> None:
    tree.modules(MODULE + f"    {keys}\n")
    result = tree.load()
    assert len(result.errors) == 1, lines(result)
    (line,) = lines(result)
    assert line.startswith("extensions/modules.yaml:6:"), line
    assert f" {field}: " in line, line
    assert message in line, line
    assert "backup" in result.invalid


def test_bad_top_level_hooks_are_the_files_error(tree: Tree) -> None:
    tree.servers("hooks:\n  onFailed: notify\nservers: []\n")
    (line,) = lines(tree.load())
    assert line.startswith("extensions/servers.yaml:2:"), line
    assert " hooks.onFailed: " in line and "expected a list" in line
