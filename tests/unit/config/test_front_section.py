"""The MCP front's synthetic entry (kind ``front``) can never come from the registry files."""

from __future__ import annotations

from supervisor.config.schema import FRONT_SECTION, SECTIONS
from supervisor.core.front import FRONT_NAME, RESTART, front_extension
from tests.unit.config.helpers import Tree


def test_the_front_section_is_not_a_registry_file() -> None:
    assert FRONT_SECTION not in SECTIONS


def test_a_front_file_or_key_declares_nothing(tree: Tree) -> None:
    tree.write("front.yaml", "front:\n  - name: mcp-front\n    type: local\n")
    tree.servers("servers:\n  - name: weather\n    type: local\n    path: ./servers/weather\n")
    tree.modules("modules: []\n")
    result = tree.load()
    assert result.ok, result.errors
    assert [(e.name, e.kind) for e in result.registry.extensions] == [("weather", "server")]


def test_a_front_key_in_servers_yaml_is_an_error(tree: Tree) -> None:
    tree.servers("servers: []\nfront:\n  - name: mcp-front\n")
    tree.modules("modules: []\n")
    result = tree.load()
    assert not result.ok
    assert all(e.kind != "front" for e in result.registry.extensions)


def test_the_synthetic_entry_is_kind_front_with_the_documented_policy() -> None:
    ext = front_extension()
    assert (ext.name, ext.kind, ext.type) == (FRONT_NAME, "front", "local")
    assert ext.restart is RESTART
    assert (RESTART.policy, RESTART.max_restarts, RESTART.window) == ("always", 5, 60.0)
