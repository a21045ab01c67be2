"""``sandbox:`` and ``passEnv:``: defaults, the ``off`` shorthand, resolved paths, and every
mistake an error with its file, line, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.schema import Sandbox
from tests.unit.config.helpers import Tree, lines

MODULE = "modules:\n  - name: backup\n    type: local\n    path: ./modules/backup\n"
MODULE += "    moduleType: daemon\n"  # added keys from line 6
REMOTE = "servers:\n  - name: far\n    type: remote\n    url: https://example.com/mcp\n"


def test_the_default_is_strict_and_outbound(tree: Tree) -> None:
    tree.modules(MODULE)
    ext = tree.load().registry.get("backup")
    assert ext is not None
    assert ext.sandbox == Sandbox("strict", "outbound", (), (), False) and not ext.sandbox.off
    assert ext.pass_env == ()


@pytest.mark.parametrize("value", ["off", "false", "'off'"])
def test_off_turns_everything_off(tree: Tree, value: str) -> None:
    tree.modules(MODULE + f"    sandbox: {value}\n")
    ext = tree.load().registry.get("backup")
    assert ext is not None and ext.sandbox.off


def test_settings_and_paths(tree: Tree) -> None:
    tree.modules(
        MODULE + "    sandbox:\n      network: none\n      required: true\n"
        "      readable: [/srv/docs, ./shared]\n      writable: [/srv/repo/]\n"
        "    passEnv: [GITHUB_TOKEN, LANG]\n"
    )
    result = tree.load()
    assert lines(result) == []
    ext = result.registry.get("backup")
    assert ext is not None
    assert ext.sandbox == Sandbox(
        "strict",
        "none",
        (Path("/srv/docs"), tree.root.resolve() / "shared"),
        (Path("/srv/repo"),),
        True,
    )
    assert ext.pass_env == ("GITHUB_TOKEN", "LANG")


BAD = [
    ("fs", "sandbox: {filesystem: loose}", "modules[0].sandbox.filesystem",
     "expected 'strict' or 'off', got 'loose'"),
    ("net", "sandbox: {network: udp}", "modules[0].sandbox.network",
     "expected one of none, outbound, any, got 'udp'"),
    ("key", "sandbox: {writeable: [/x]}", "modules[0].sandbox.writeable",
     "unknown key 'writeable' (did you mean 'writable'?)"),
    ("rel", "sandbox: {readable: [srv/docs]}", "modules[0].sandbox.readable[0]",
     "expected an absolute path or ./…, got 'srv/docs'"),
    ("list", "sandbox: {readable: /srv}", "modules[0].sandbox.readable", "expected a list"),
    ("req", "sandbox: {required: maybe}", "modules[0].sandbox.required", "expected true or false"),
    ("shape", "sandbox: [strict]", "modules[0].sandbox", "expected a mapping"),
    ("env", "passEnv: [GOOD, 'no-dash']", "modules[0].passEnv[1]", "is not a valid variable name"),
    ("twice", "passEnv: [A, A]", "modules[0].passEnv[1]", "is listed twice"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "field", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_sandbox_or_pass_env(tree: Tree, keys: str, field: str, message: str) -> None:
    tree.modules(MODULE + f"    {keys}\n")
    result = tree.load()
    assert len(result.errors) == 1, lines(result)
    (line,) = lines(result)
    assert line.startswith("extensions/modules.yaml:6:"), line
    assert f" {field}: " in line, line
    assert message in line, line
    assert "backup" in result.invalid


def test_a_remote_extension_cannot_have_no_network(tree: Tree) -> None:
    tree.servers(REMOTE + "    sandbox: {network: none}\n")
    (line,) = lines(tree.load())
    assert "servers[0].sandbox.network" in line and "connects to its url" in line
