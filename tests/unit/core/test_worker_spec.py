"""The boot spec the supervisor builds for each kind of entry is one the worker accepts."""

from __future__ import annotations

from pathlib import Path

from supervisor.core.worker_spec import boot_spec, build_spec
from tests.unit.config.helpers import Tree
from worker.protocol import BootSpec


def test_every_kind_of_entry_boots_with_a_spec_the_worker_parses(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.package("servers/echo")
    tree.package("modules/clock")
    tree.package("modules/kv")
    tree.servers(
        """
        servers:
          - {name: echo, type: local, path: ./servers/echo, config: {units: metric}}
          - {name: cmd, type: local, command: [node, server.js]}
          - name: far
            type: remote
            url: https://example.com/mcp
            auth: {type: bearer, token: "${TOKEN}"}
            headers: {X-Custom: v}
        """
    )
    tree.modules(
        """
        modules:
          - {name: clock, type: local, path: ./modules/clock, moduleType: daemon}
          - {name: kv, type: local, path: ./modules/kv, moduleType: plugin, provides: [kv]}
          - {name: store, type: remote, url: "http://127.0.0.1:9/rpc", moduleType: plugin,
             provides: [storage]}
        """
    )
    result = tree.load({"TOKEN": "s3cret"})
    assert result.ok, result.errors
    specs = {ext.name: boot_spec(ext) for ext in result.registry.extensions}
    for ext in result.registry.extensions:
        assert BootSpec.parse(build_spec(ext)) == specs[ext.name]
    kinds = {name: spec.kind for name, spec in specs.items()}
    assert kinds == {
        "echo": "handler",
        "cmd": "stdio",
        "far": "remote",
        "clock": "daemon",
        "kv": "plugin",
        "store": "remote_module",
    }
    assert specs["echo"].config == {"units": "metric"}
    assert specs["cmd"].command == ("node", "server.js")
    assert specs["cmd"].cwd == str(tree.root)
    assert specs["far"].auth == {"type": "bearer", "token": "s3cret"}  # revealed for the worker
    assert specs["far"].headers == {"X-Custom": "v"}
    assert specs["far"].provides == ()
    assert specs["kv"].provides == ("kv",)
    assert specs["store"].provides == ("storage",)
    assert all(spec.rlimits["CORE"] == [0, 0] for spec in specs.values())
