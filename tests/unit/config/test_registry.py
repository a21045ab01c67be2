"""Valid registries: the seed's own files, every key, defaults, equality and the result API."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.config import (
    Auth,
    ConfigError,
    Extension,
    FrozenDict,
    Limits,
    RestartConfig,
    Secret,
    load_registry,
    thaw,
)
from tests.unit.config.helpers import Tree, lines

SEED = Path(__file__).with_name("seed")
SEED_ENV = {"CLIENT_ID": "seed-client", "CLIENT_SECRET": "seed-secret"}


@pytest.fixture
def seed_tree(tree: Tree) -> Tree:
    """The seed document's servers.yaml and modules.yaml, byte for byte, and their packages."""
    shutil.copy(SEED / "servers.yaml", tree.root / "servers.yaml")
    shutil.copy(SEED / "modules.yaml", tree.root / "modules.yaml")
    tree.package("servers/my-server")
    tree.package("modules/my-daemon")
    return tree


def test_seed_examples_load_unchanged(seed_tree: Tree) -> None:
    result = seed_tree.load(SEED_ENV)
    assert result.ok, lines(result)
    registry = result.registry
    assert registry.names == ("my-local-server", "external-api", "my-daemon", "cloud-service")

    local = registry.get("my-local-server")
    assert local is not None
    assert (local.kind, local.type, local.enabled) == ("server", "local", True)
    assert local.path == (seed_tree.root / "servers" / "my-server").resolve()
    assert local.config == {"option1": "value1", "option2": "value2"}

    remote = registry.get("external-api")
    assert remote is not None
    assert remote.url == "https://api.example.com/mcp"
    assert remote.auth == Auth(
        "oauth2", client_id=Secret("seed-client"), client_secret=Secret("seed-secret")
    )
    assert remote.headers == {"X-Custom-Header": "value"}

    daemon = registry.get("my-daemon")
    assert daemon is not None
    assert (daemon.kind, daemon.module_type, daemon.config) == (
        "module",
        "daemon",
        {"interval": "30s"},
    )

    plugin = registry.get("cloud-service")
    assert plugin is not None
    assert (plugin.type, plugin.module_type, plugin.provides) == (
        "remote",
        "plugin",
        ("storage", "backup"),
    )
    assert [ext.name for ext in registry.modules] == ["my-daemon", "cloud-service"]


def test_seed_github_example_loads(tree: Tree) -> None:
    shutil.copy(SEED / "servers-github.yaml", tree.root / "servers.yaml")
    result = tree.load({"GITHUB_TOKEN": "ghp_x"})
    assert result.ok, lines(result)
    github = result.registry.get("github-mcp")
    assert github is not None
    assert github.auth is not None
    assert github.auth.token == Secret("ghp_x")


def test_seed_without_its_variables_names_them(seed_tree: Tree) -> None:
    result = seed_tree.load({})
    assert [(e.line, e.field) for e in result.errors] == [
        (19, "servers[1].auth.clientId"),
        (20, "servers[1].auth.clientSecret"),
    ]
    assert "CLIENT_ID is not set" in result.errors[0].message
    assert not result.fatal
    assert set(result.invalid) == {"external-api"}
    assert result.registry.names == ("my-local-server", "my-daemon", "cloud-service")


def test_defaults(tree: Tree) -> None:
    tree.servers("servers:\n  - {name: weather, type: local, path: servers/weather}\n")
    [ext] = tree.load().registry.extensions
    assert ext == Extension(
        name="weather",
        section="servers",
        type="local",
        source=ext.source,
        path=(tree.root / "servers" / "weather").resolve(),
    )
    assert (ext.enabled, ext.lazy, ext.timeout, ext.stop_timeout, ext.start_timeout) == (
        True, False, 30.0, 10.0, 30.0
    )  # fmt: skip
    assert ext.limits == Limits()
    assert ext.restart == RestartConfig("on-failure", 5, 60.0, 1.0, 30.0)
    assert (ext.config, ext.env, ext.headers, ext.depends_on, ext.command) == ({}, {}, {}, (), None)
    assert (ext.source.line, ext.source.column) == (2, 5)


def test_every_key(tree: Tree) -> None:
    venv_python = tree.base / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    tree.write("servers/single.py", "")
    tree.servers(
        f"""
        servers:
          - name: weather
            type: local
            path: servers/single.py
            enabled: false
            config:
              {{units: metric, nested: {{list: [1, two, '${{UNITS}}']}}, literal: '$${{HOME}}'}}
            limits: {{memory: 256MiB, cpu: 50%, cpuTime: 1h, openFiles: 256, processes: 16}}
            restart: {{policy: always, maxRestarts: 3, window: 2m, backoff: 500ms, maxBackoff: 1m}}
            timeout: 45s
            stopTimeout: 5
            startTimeout: 1m
            lazy: true
            env: {{PORT: 8080, LEVEL: '${{LEVEL:-info}}'}}
            python: {venv_python}
          - name: stdio-time
            type: local
            command: [uvx, mcp-server-time, '--tz=${{TZ:-UTC}}']
            dependsOn: [weather, backup]
          - name: api
            type: remote
            url: https://api.example.com/mcp
            auth: {{type: apikey, key: k}}
            headers: {{X-Version: 2, X-Token: '${{TOKEN}}'}}
        """
    )
    tree.modules(
        """
        modules:
          - name: backup
            type: local
            path: ./modules/backup
            moduleType: daemon
          - name: store
            type: remote
            url: http://127.0.0.1:9000/rpc
            moduleType: plugin
            provides: [storage, backup-service]
            auth: {type: oauth2, clientId: me, clientSecret: s, tokenUrl: 'https://a.example/t',
                   scopes: [read, write], tokenAuthMethod: client_secret_basic}
          - name: user
            type: remote
            url: http://127.0.0.1:9000/rpc
            moduleType: daemon
            auth: {type: oauth2, clientId: pub, grant: authorization_code}
        """
    )
    result = tree.load({"UNITS": "si", "TOKEN": "tok"})
    assert result.ok, lines(result)
    weather, stdio, api, backup, store, user = result.registry.extensions
    assert weather.path == (tree.root / "servers" / "single.py").resolve()
    assert not weather.enabled
    assert thaw(weather.config) == {
        "units": "metric",
        "nested": {"list": [1, "two", "si"]},
        "literal": "${HOME}",
    }
    assert weather.limits == Limits(256 * 1024**2, 0.5, 3600.0, 256, 16)
    assert weather.restart == RestartConfig("always", 3, 120.0, 0.5, 60.0)
    assert (weather.timeout, weather.stop_timeout, weather.start_timeout, weather.lazy) == (
        45.0, 5.0, 60.0, True
    )  # fmt: skip
    assert weather.env == {"PORT": "8080", "LEVEL": "info"}
    assert weather.python == venv_python  # the venv's symlink, not resolved
    assert stdio.command == ("uvx", "mcp-server-time", "--tz=UTC")
    assert stdio.path is None
    assert stdio.depends_on == ("weather", "backup")
    assert api.auth == Auth("apikey", key=Secret("k"), header="X-API-Key")
    assert api.headers == {"X-Version": "2", "X-Token": Secret("tok")}
    assert backup.module_type == "daemon"
    assert store.provides == ("storage", "backup-service")
    assert store.auth == Auth(
        "oauth2",
        client_id="me",
        client_secret=Secret("s"),
        token_url="https://a.example/t",
        scopes=("read", "write"),
        token_auth_method="client_secret_basic",
    )
    assert user.auth == Auth("oauth2", client_id="pub", grant="authorization_code")  # no secret


def test_variables_in_typed_fields_read_like_yaml(tree: Tree) -> None:
    tree.servers(
        """
        servers:
          - name: '${NAME:-weather}'
            type: local
            path: servers/weather
            enabled: '${ENABLED:-false}'
            lazy: ${LAZY}
            timeout: ${TIMEOUT:-5s}
            limits: {openFiles: '${FILES:-64}', memory: '${MEM}'}
        """
    )
    result = tree.load({"LAZY": "yes", "MEM": "1G"})
    assert result.ok, lines(result)
    [ext] = result.registry.extensions
    assert (ext.name, ext.enabled, ext.lazy, ext.timeout) == ("weather", False, True, 5.0)
    assert (ext.limits.open_files, ext.limits.memory) == (64, 1024**3)


def test_a_quoted_boolean_without_a_variable_is_still_a_string(tree: Tree) -> None:
    tree.servers("servers:\n  - {name: w, type: local, path: servers/weather, enabled: 'true'}\n")
    assert lines(tree.load()) == [
        "extensions/servers.yaml:2:60: servers[0].enabled: expected true or false, got 'true'"
    ]


def test_environ_defaults_to_os_environ(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPCTL_TEST_UNITS", "imperial")
    tree.servers(
        "servers:\n  - {name: w, type: local, path: servers/weather, "
        "config: {u: '${SPCTL_TEST_UNITS}'}}\n"
    )
    result = load_registry(tree.root)
    assert result.registry.extensions[0].config == {"u": "imperial"}


class TestImmutability:
    """Loaded values are frozen, hashable, and equal across loads of the same text."""

    TEXT = """
        servers:
          - name: weather
            type: local
            path: servers/weather
            config: {a: [1, {b: 2}]}
            env: {X: y}
          - name: api
            type: remote
            url: https://a.example
            headers: {X-A: '${A}'}
            auth: {type: bearer, token: '${A}'}
        """

    def test_two_loads_compare_equal_and_hash_alike(self, tree: Tree) -> None:
        tree.servers(self.TEXT)
        first, second = tree.load({"A": "1"}), tree.load({"A": "1"})
        assert first == second
        assert hash(first.registry) == hash(second.registry)
        assert tree.load({"A": "2"}).registry.get("api") != first.registry.get("api")

    def test_moving_an_entry_is_not_a_change(self, tree: Tree) -> None:
        tree.servers(self.TEXT)
        before = tree.load({"A": "1"}).registry
        tree.servers("# a comment moves every line down\n\n" + textwrap.dedent(self.TEXT).lstrip())
        after = tree.load({"A": "1"}).registry
        assert after.extensions == before.extensions
        assert after.extensions[0].source.line == before.extensions[0].source.line + 2

    def test_nothing_can_be_changed(self, tree: Tree) -> None:
        tree.servers(self.TEXT)
        weather = tree.load({"A": "1"}).registry.extensions[0]
        with pytest.raises(dataclasses.FrozenInstanceError):
            weather.name = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            weather.config["a"] = 1  # type: ignore[index]
        with pytest.raises(TypeError):
            weather.env["X"] = "z"  # type: ignore[index]
        assert isinstance(weather.config, FrozenDict)
        assert weather.config["a"] == (1, {"b": 2})


class TestResult:
    """fatal, invalid and the Registry accessors."""

    def test_a_bad_named_entry_fails_alone(self, tree: Tree) -> None:
        tree.servers(
            "servers:\n"
            "  - {name: good, type: local, path: servers/weather}\n"
            "  - {name: bad, type: local, path: servers/weather, timeout: soon}\n"
        )
        result = tree.load()
        assert not result.ok
        assert not result.fatal
        assert result.registry.names == ("good",)
        assert [e.field for e in result.invalid["bad"]] == ["servers[1].timeout"]
        assert result.registry.get("bad") is None

    def test_an_unnamed_entry_is_fatal(self, tree: Tree) -> None:
        tree.servers("servers:\n  - {type: local, path: servers/weather}\n")
        result = tree.load()
        assert result.fatal
        assert dict(result.invalid) == {}
        assert result.errors[0].extension is None

    def test_a_duplicate_name_is_fatal_and_the_first_survives(self, tree: Tree) -> None:
        entry = "  - {name: w, type: local, path: servers/weather}\n"
        tree.servers("servers:\n" + entry + entry)
        result = tree.load()
        assert result.fatal
        assert result.registry.names == ("w",)
        assert dict(result.invalid) == {}


class TestConfigError:
    """How an error prints."""

    def test_relative_to_the_cwd(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        error = ConfigError(
            tmp_path / "extensions" / "servers.yaml", 14, 7, "servers[1].path", "bad"
        )
        assert str(error) == "extensions/servers.yaml:14:7: servers[1].path: bad"
        assert error.to_dict() == {
            "file": "extensions/servers.yaml",
            "line": 14,
            "column": 7,
            "field": "servers[1].path",
            "message": "bad",
            "extension": None,
        }

    def test_absolute_outside_the_cwd(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        error = ConfigError(tmp_path / "servers.yaml", 0, 0, "", "too big")
        assert str(error) == f"{tmp_path}{os.sep}servers.yaml: too big"


def test_config_is_plain_data(tree: Tree) -> None:
    tree.servers(
        """
        servers:
          - name: weather
            type: local
            path: servers/weather
            config: {when: 2001-12-14, at: 2001-12-14t21:59:43.10-05:00, n: 1.5, b: !!binary aGk=}
        """
    )
    result = tree.load()
    assert result.ok, lines(result)
    assert thaw(result.registry.extensions[0].config) == {
        "when": "2001-12-14",
        "at": "2001-12-14t21:59:43.10-05:00",
        "n": 1.5,
        "b": b"hi",
    }
