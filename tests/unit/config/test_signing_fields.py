"""``signature:`` / ``allowedSigners:``: relative paths inside the extensions directory, given
together; errors name the file, line and field."""

from __future__ import annotations

import pytest

from tests.unit.config.helpers import Tree, lines

LOCAL = "servers:\n  - name: weather\n    type: local\n    path: ./servers/weather\n"


def test_both_fields_load_as_paths_inside_the_tree(tree: Tree) -> None:
    tree.servers(LOCAL + "    signature: ./servers/weather.sig\n    allowedSigners: allowed\n")
    result = tree.load()
    assert result.ok, lines(result)
    ext = result.registry.extensions[0]
    assert ext.signature == tree.root.resolve() / "servers" / "weather.sig"
    assert ext.allowed_signers == tree.root.resolve() / "allowed"


def test_without_them_nothing_changes(tree: Tree) -> None:
    tree.servers(LOCAL)
    ext = tree.load().registry.extensions[0]
    assert ext.signature is None
    assert ext.allowed_signers is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    signature: x.sig\n", "extensions/servers.yaml:5:16: servers[0].signature: needs "
         "allowedSigners: as well"),
        ("    allowedSigners: allowed\n", "extensions/servers.yaml:5:21: "
         "servers[0].allowedSigners: needs signature: as well"),
        ("    signature: ../x.sig\n    allowedSigners: allowed\n", "extensions/servers.yaml:5:16:"
         " servers[0].signature: resolves outside extensions/ (../x.sig)"),
        ("    signature: /etc/x.sig\n    allowedSigners: allowed\n", "extensions/servers.yaml:"
         "5:16: servers[0].signature: expected a relative path inside the extensions directory"),
        ("    signature: x.sig\n    allowedSigners: [a]\n", "extensions/servers.yaml:6:21: "
         "servers[0].allowedSigners: expected a string, got a list"),
    ],
    ids=["signature alone", "allowedSigners alone", "outside", "absolute", "not a string"],
)  # fmt: skip
def test_bad_signing_fields(tree: Tree, extra: str, message: str) -> None:
    tree.servers(LOCAL + extra)
    assert lines(tree.load()) == [message]


def test_a_remote_entry_has_no_files_to_sign(tree: Tree) -> None:
    tree.servers(
        "servers:\n  - name: api\n    type: remote\n    url: https://api.example.com/mcp\n"
        "    signature: x.sig\n    allowedSigners: allowed\n"
    )
    assert lines(tree.load()) == [
        "extensions/servers.yaml:5:5: servers[0].signature: is only for type local",
        "extensions/servers.yaml:6:5: servers[0].allowedSigners: is only for type local",
    ]
