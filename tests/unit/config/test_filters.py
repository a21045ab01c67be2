"""``tools:``, ``prompts:`` and ``resources:`` (per-server filters): defaults, what is kept, and
every mistake an error with its file, line, field and reason."""

from __future__ import annotations

import pytest

from supervisor.config.schema import Filter, GlobSource
from tests.unit.config.helpers import Tree, lines

SERVER = "servers:\n  - name: notes\n    type: local\n    command: [notes-server]\n"  # line 5 on


def test_the_default_lets_everything_through(tree: Tree) -> None:
    tree.servers(SERVER)
    ext = tree.load().registry.get("notes")
    assert ext is not None
    assert ext.tools == ext.prompts == ext.resources == Filter()
    assert ext.tools.everything


def test_globs_are_kept_with_where_they_were_written(tree: Tree) -> None:
    tree.servers(
        SERVER + "    tools:\n      allow: [get_*, list_*]\n      deny: [get_secret]\n"
        "    prompts: {allow: []}\n    resources: {deny: ['file:///etc/*']}\n"
    )
    result = tree.load()
    assert lines(result) == []
    ext = result.registry.get("notes")
    assert ext is not None
    assert ext.tools == Filter(("get_*", "list_*"), ("get_secret",))
    assert ext.prompts == Filter((), ())  # an empty allow-list allows nothing
    assert not ext.prompts.everything
    assert ext.resources == Filter(None, ("file:///etc/*",))
    assert ext.tools.sources == (
        GlobSource("servers[0].tools.allow[0]", 6, 15, "get_*"),
        GlobSource("servers[0].tools.allow[1]", 6, 22, "list_*"),
        GlobSource("servers[0].tools.deny[0]", 7, 14, "get_secret"),
    )


def test_where_a_glob_was_written_is_no_change(tree: Tree) -> None:
    tree.servers(SERVER + "    tools: {allow: [a*]}\n")
    first = tree.load().registry.get("notes")
    tree.servers(SERVER + "    # moved\n\n    tools:\n      allow:\n        - a*\n")
    second = tree.load().registry.get("notes")
    assert first == second and first is not None and second is not None
    assert first.tools.sources != second.tools.sources


BAD = [
    ("string", "tools: {allow: get_*}", "servers[0].tools.allow", "expected a list of strings"),
    ("number", "tools: {deny: [get, 7]}", "servers[0].tools.deny[1]", "expected a string, got 7"),
    ("mapping", "prompts: {allow: [{a: 1}]}", "servers[0].prompts.allow[0]", "expected a string"),
    ("empty", "tools: {allow: ['']}", "servers[0].tools.allow[0]", "expected a glob"),
    ("shape", "tools: [get_*]", "servers[0].tools", "expected a mapping"),
    ("key", "resources: {alow: [x]}", "servers[0].resources.alow",
     "unknown key 'alow' (did you mean 'allow'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "field", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_filter(tree: Tree, keys: str, field: str, message: str) -> None:
    tree.servers(SERVER + f"    {keys}\n")
    result = tree.load()
    assert len(result.errors) == 1, lines(result)
    (line,) = lines(result)
    assert line.startswith("extensions/servers.yaml:5:"), line
    assert f" {field}: " in line, line
    assert message in line, line
    assert "notes" in result.invalid


def test_filters_are_for_servers_only(tree: Tree) -> None:
    tree.modules(
        "modules:\n  - name: backup\n    type: local\n    path: ./modules/backup\n"
        "    moduleType: daemon\n    tools: {deny: [x]}\n"
    )
    tree.package("modules/backup")
    (line,) = lines(tree.load())
    assert line.startswith("extensions/modules.yaml:6:"), line
    assert "modules[0].tools: is only for servers" in line, line
