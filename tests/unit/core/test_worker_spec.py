"""The boot spec the supervisor builds for each kind of entry is one the worker accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_oauth2_entries_tell_the_worker_their_grant_and_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.kinds.remote_auth import RemoteAuth

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    tree = Tree(tmp_path)
    tree.servers(
        """
        servers:
          - name: svc
            type: remote
            url: https://example.com/mcp
            auth: {type: oauth2, clientId: a, clientSecret: "${S}",
                   tokenAuthMethod: client_secret_basic, scopes: [r]}
          - name: crm
            type: remote
            url: https://example.com/mcp
            auth: {type: oauth2, clientId: pub, grant: authorization_code}
        """
    )
    result = tree.load({"S": "s3cret"})
    assert result.ok, result.errors
    svc, crm = (boot_spec(ext).auth for ext in result.registry.extensions)
    assert svc == {
        "type": "oauth2",
        "clientId": "a",
        "clientSecret": "s3cret",
        "tokenAuthMethod": "client_secret_basic",
        "scopes": ["r"],
    }
    token_file = tmp_path / "state" / "extensions" / "crm" / "oauth-tokens.json"
    assert crm == {
        "type": "oauth2",
        "clientId": "pub",
        "grant": "authorization_code",
        "tokenFile": str(token_file),
    }
    parsed = RemoteAuth.parse(crm)  # what the worker makes of it
    assert (parsed.grant, parsed.token_file, parsed.client_secret) == (
        "authorization_code",
        str(token_file),
        "",
    )
    assert RemoteAuth.parse(svc).token_auth_method == "client_secret_basic"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "oauth2", "clientId": "a"}, "'clientSecret' is required for oauth2"),
        ({"type": "oauth2", "clientId": "a", "grant": "authorization_code"},
         "'tokenFile' is required for oauth2"),
        ({"type": "oauth2", "clientId": "a", "clientSecret": "s", "grant": "implicit"},
         "'grant' must be one of client_credentials, authorization_code"),
        ({"type": "oauth2", "clientId": "a", "clientSecret": "s", "tokenAuthMethod": "jwt"},
         "'tokenAuthMethod' must be one of client_secret_basic, client_secret_post"),
    ],
)  # fmt: skip
def test_the_worker_refuses_a_bad_oauth2_spec(raw: dict[str, str], message: str) -> None:
    from worker.kinds.remote_auth import RemoteAuth

    with pytest.raises(ValueError, match=message):
        RemoteAuth.parse(raw)
