"""Entry validation: every bad field gives one error with its file, line, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import load_registry
from tests.unit.config.helpers import Tree, lines

LOCAL = "servers:\n  - name: weather\n    type: local\n    path: ./servers/weather\n"
REMOTE = "servers:\n  - name: api\n    type: remote\n    url: https://api.example.com/mcp\n"
MODULE = "modules:\n  - name: backup\n    type: local\n    path: ./modules/backup\n"

# (id, servers.yaml, modules.yaml, "file:line:column", field, message). The entry starts on
# line 2 and its keys at column 5.
BAD_ENTRIES: list[tuple[str, str, str, str, str, str]] = [
    ("entry not a mapping", "servers:\n  - weather\n", "", "servers.yaml:2:5", "servers[0]",
     "expected a mapping (name: …, type: …), got 'weather'"),
    ("name missing", "servers:\n  - type: local\n    path: ./servers/weather\n", "",
     "servers.yaml:2:5", "servers[0].name", "is required"),
    ("name style", LOCAL.replace("weather\n", "My_Server\n", 1), "", "servers.yaml:2:11",
     "servers[0].name", "expected lowercase letters, digits and single hyphens (like my-server), "
     "at most 48 characters, got 'My_Server'"),
    ("name too long", LOCAL.replace("weather\n", "a" * 49 + "\n", 1), "", "servers.yaml:2:11",
     "servers[0].name", "at most 48 characters"),
    ("name double hyphen", LOCAL.replace("weather\n", "a--b\n", 1), "", "servers.yaml:2:11",
     "servers[0].name", "single hyphens"),
    ("name not a string", LOCAL.replace("weather\n", "42\n", 1), "", "servers.yaml:2:11",
     "servers[0].name", "expected a string, got 42"),
    ("type missing", "servers:\n  - name: weather\n    path: ./servers/weather\n", "",
     "servers.yaml:2:5", "servers[0].type", "is required"),
    ("type unknown", LOCAL.replace("local", "cloud"), "", "servers.yaml:3:11", "servers[0].type",
     "expected 'local' or 'remote', got 'cloud'"),
    ("unknown key", LOCAL + "    paht: x\n", "", "servers.yaml:5:5", "servers[0].paht",
     "unknown key 'paht' (did you mean 'path'?)"),
    ("snake_case key", LOCAL + "    stop_timeout: 5s\n", "", "servers.yaml:5:5",
     "servers[0].stop_timeout", "unknown key 'stop_timeout' (did you mean 'stopTimeout'?)"),
    ("unknown key without a near miss", LOCAL + "    zzz: 1\n", "", "servers.yaml:5:5",
     "servers[0].zzz", "unknown key 'zzz'; expected one of: name, type, enabled"),
    ("duplicate key", LOCAL + "    path: ./servers/weather\n", "", "servers.yaml:5:5",
     "servers[0].path", "duplicate key 'path' (first at line 4, column 5); YAML would silently "
     "keep only the last one"),
    ("path escapes", LOCAL.replace("./servers/weather", "../../etc"), "", "servers.yaml:4:11",
     "servers[0].path", "resolves outside extensions/ (../../etc)"),
    ("path absolute", LOCAL.replace("./servers/weather", "/etc"), "", "servers.yaml:4:11",
     "servers[0].path", "must be relative to extensions/, got an absolute path (/etc)"),
    ("path is the root", LOCAL.replace("./servers/weather", "."), "", "servers.yaml:4:11",
     "servers[0].path", "resolves outside extensions/ (.)"),
    ("path missing", LOCAL.replace("weather\n", "nope\n"), "", "servers.yaml:4:11",
     "servers[0].path", "does not exist (./servers/nope)"),
    ("path not a package", LOCAL.replace("./servers/weather", "./servers"), "",
     "servers.yaml:4:11", "servers[0].path",
     "is a directory without __init__.py, not a package (./servers)"),
    ("path not python", LOCAL.replace("./servers/weather", "servers/weather/__init__.pyc"), "",
     "servers.yaml:4:11", "servers[0].path", "does not exist"),
    ("local needs path", "servers:\n  - name: weather\n    type: local\n", "",
     "servers.yaml:2:5", "servers[0].path", "is required for type local"),
    ("local with url", LOCAL + "    url: https://x.example\n", "", "servers.yaml:5:5",
     "servers[0].url", "is only for type remote"),
    ("local with auth", LOCAL + "    auth: {type: bearer, token: t}\n", "", "servers.yaml:5:5",
     "servers[0].auth", "is only for type remote"),
    ("remote with path", REMOTE + "    path: ./servers/weather\n", "", "servers.yaml:5:5",
     "servers[0].path", "is only for type local"),
    ("remote with command", REMOTE + "    command: [x]\n", "", "servers.yaml:5:5",
     "servers[0].command", "is only for type local"),
    ("remote needs url", "servers:\n  - name: api\n    type: remote\n", "", "servers.yaml:2:5",
     "servers[0].url", "is required"),
    ("url file", REMOTE.replace("https://api.example.com/mcp", "file:///etc/passwd"), "",
     "servers.yaml:4:10", "servers[0].url",
     "expected an http:// or https:// URL, got scheme 'file'"),
    ("url ftp", REMOTE.replace("https://", "ftp://"), "", "servers.yaml:4:10", "servers[0].url",
     "got scheme 'ftp'"),
    ("url without host", REMOTE.replace("https://api.example.com/mcp", "https://"), "",
     "servers.yaml:4:10", "servers[0].url", "with a host, got no host"),
    ("url without scheme", REMOTE.replace("https://", ""), "", "servers.yaml:4:10",
     "servers[0].url", "got no scheme"),
    ("url bad port", REMOTE.replace(".com/", ".com:99999/"), "", "servers.yaml:4:10",
     "servers[0].url", "cannot be parsed"),
    ("auth kerberos", REMOTE + "    auth: {type: kerberos}\n", "", "servers.yaml:5:18",
     "servers[0].auth.type", "expected one of bearer, apikey, oauth2, got 'kerberos'"),
    ("auth not a mapping", REMOTE + "    auth: bearer\n", "", "servers.yaml:5:11",
     "servers[0].auth", "expected a mapping, got 'bearer'"),
    ("bearer without token", REMOTE + "    auth:\n      type: bearer\n", "", "servers.yaml:6:7",
     "servers[0].auth.token", "is required"),
    ("bearer with apikey field", REMOTE + "    auth: {type: bearer, token: t, key: k}\n", "",
     "servers.yaml:5:36", "servers[0].auth.key", "is not used by bearer (takes token)"),
    ("apikey without key", REMOTE + "    auth: {type: apikey}\n", "", "servers.yaml:5:11",
     "servers[0].auth.key", "is required"),
    ("apikey bad header", REMOTE + "    auth: {type: apikey, key: k, header: 'X Key'}\n", "",
     "servers.yaml:5:42", "servers[0].auth.header", "is not a valid header name"),
    ("oauth2 without secret", REMOTE + "    auth:\n      type: oauth2\n      clientId: me\n", "",
     "servers.yaml:6:7", "servers[0].auth.clientSecret", "is required"),
    ("oauth2 bad token url",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, tokenUrl: 'ftp://x'}\n",
     "", "servers.yaml:5:66", "servers[0].auth.tokenUrl", "got scheme 'ftp'"),
    ("oauth2 scopes not a list",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, scopes: read}\n", "",
     "servers.yaml:5:64", "servers[0].auth.scopes", "expected a list of strings, got 'read'"),
    ("oauth2 bad grant",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, grant: password}\n", "",
     "servers.yaml:5:63", "servers[0].auth.grant",
     "expected 'client_credentials' or 'authorization_code', got 'password'"),
    ("oauth2 bad auth method",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, tokenAuthMethod: jwt}\n",
     "", "servers.yaml:5:73", "servers[0].auth.tokenAuthMethod",
     "expected 'client_secret_basic' or 'client_secret_post', got 'jwt'"),
    ("oauth2 code flow, auth method without a secret",
     REMOTE + "    auth: {type: oauth2, clientId: a, grant: authorization_code,"
     " tokenAuthMethod: client_secret_post}\n", "", "servers.yaml:5:83",
     "servers[0].auth.tokenAuthMethod", "needs clientSecret"),
    ("oauth2 resource with a fragment",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, resource: 'https://x#y'}\n",
     "", "servers.yaml:5:66", "servers[0].auth.resource",
     "expected an absolute URI without a fragment (RFC 8707), or '' to send none"),
    ("oauth2 resource not a URI",
     REMOTE + "    auth: {type: oauth2, clientId: a, clientSecret: b, resource: crm}\n",
     "", "servers.yaml:5:66", "servers[0].auth.resource", "expected an absolute URI"),
    ("auth near miss", REMOTE + "    auth: {type: bearer, token: a, tokn: b}\n", "",
     "servers.yaml:5:36", "servers[0].auth.tokn", "unknown key 'tokn' (did you mean 'token'?)"),
    ("auth snake_case", REMOTE + "    auth:\n      type: oauth2\n      clientId: a\n"
     "      clientSecret: b\n      token_url: https://x.example\n", "", "servers.yaml:9:7",
     "servers[0].auth.token_url", "unknown key 'token_url' (did you mean 'tokenUrl'?)"),
    ("headers not a mapping", REMOTE + "    headers: [a]\n", "", "servers.yaml:5:14",
     "servers[0].headers", "expected a mapping, got a list"),
    ("header name", REMOTE + "    headers: {'Bad Header': v}\n", "", "servers.yaml:5:15",
     "servers[0].headers['Bad Header']", "'Bad Header' is not a valid header name"),
    ("header value", REMOTE + "    headers: {X-A: [v]}\n", "", "servers.yaml:5:20",
     "servers[0].headers.X-A", "expected a string, got a list"),
    ("header line break", REMOTE + "    headers: {X-A: \"a\\r\\nX-B: b\"}\n", "",
     "servers.yaml:5:20", "servers[0].headers.X-A", "must not contain line breaks"),
    ("memory lots", LOCAL + "    limits: {memory: lots}\n", "", "servers.yaml:5:22",
     "servers[0].limits.memory", "expected a size like 512MiB or 1G, got 'lots'"),
    ("memory zero", LOCAL + "    limits: {memory: 0}\n", "", "servers.yaml:5:22",
     "servers[0].limits.memory", "must be greater than zero, got 0"),
    ("cpu zero", LOCAL + "    limits: {cpu: 0%}\n", "", "servers.yaml:5:19",
     "servers[0].limits.cpu", "greater than zero, got '0%'"),
    ("cpuTime", LOCAL + "    limits: {cpuTime: forever}\n", "", "servers.yaml:5:23",
     "servers[0].limits.cpuTime", "expected a duration like 30s"),
    ("openFiles zero", LOCAL + "    limits: {openFiles: 0}\n", "", "servers.yaml:5:25",
     "servers[0].limits.openFiles", "expected a whole number of at least 1, got 0"),
    ("processes text", LOCAL + "    limits: {processes: many}\n", "", "servers.yaml:5:25",
     "servers[0].limits.processes", "expected a whole number of at least 1, got 'many'"),
    ("limits near miss", LOCAL + "    limits: {mem: 1G}\n", "", "servers.yaml:5:14",
     "servers[0].limits.mem", "unknown key 'mem' (did you mean 'memory'?)"),
    ("restart policy", LOCAL + "    restart: {policy: sometimes}\n", "", "servers.yaml:5:23",
     "servers[0].restart.policy", "expected one of always, on-failure, never, got 'sometimes'"),
    ("maxRestarts negative", LOCAL + "    restart: {maxRestarts: -1}\n", "", "servers.yaml:5:28",
     "servers[0].restart.maxRestarts", "expected a whole number of at least 0, got -1"),
    ("maxBackoff below backoff", LOCAL + "    restart: {backoff: 1m, maxBackoff: 30s}\n", "",
     "servers.yaml:5:40", "servers[0].restart.maxBackoff",
     "maxBackoff (30s) must not be less than backoff (60s)"),
    ("window zero", LOCAL + "    restart: {window: 0s}\n", "", "servers.yaml:5:23",
     "servers[0].restart.window", "must be greater than zero"),
    ("timeout text", LOCAL + "    timeout: soon\n", "", "servers.yaml:5:14",
     "servers[0].timeout", "expected a duration like 30s, 250ms, 5m, 1h or 1m30s, got 'soon'"),
    ("stopTimeout zero", LOCAL + "    stopTimeout: 0\n", "", "servers.yaml:5:18",
     "servers[0].stopTimeout", "must be greater than zero, got 0"),
    ("enabled text", LOCAL + "    enabled: yes please\n", "", "servers.yaml:5:14",
     "servers[0].enabled", "expected true or false, got 'yes please'"),
    ("lazy number", LOCAL + "    lazy: 1\n", "", "servers.yaml:5:11", "servers[0].lazy",
     "expected true or false, got 1"),
    ("unset variable", LOCAL + "    config: {key: '${UNSET}'}\n", "", "servers.yaml:5:19",
     "servers[0].config.key",
     "environment variable UNSET is not set (write ${UNSET:-default} for a default)"),
    ("malformed variable", LOCAL + "    config: {key: '${1}'}\n", "", "servers.yaml:5:19",
     "servers[0].config.key", "malformed variable reference"),
    ("config not a mapping", LOCAL + "    config: [a]\n", "", "servers.yaml:5:13",
     "servers[0].config", "expected a mapping, got a list"),
    ("config set", LOCAL + "    config: {s: !!set {a: null}}\n", "", "servers.yaml:5:17",
     "servers[0].config.s", "unsupported value of type set"),
    ("config duplicate key", LOCAL + "    config:\n      a: 1\n      a: 2\n", "",
     "servers.yaml:7:7", "servers[0].config.a", "duplicate key 'a' (first at line 6, column 7)"),
    ("env name", LOCAL + "    env: {1X: a}\n", "", "servers.yaml:5:11", "servers[0].env.1X",
     "'1X' is not a valid environment variable name"),
    ("env value", LOCAL + "    env: {X: {a: 1}}\n", "", "servers.yaml:5:14", "servers[0].env.X",
     "expected a string, got a mapping"),
    ("command empty", "servers:\n  - name: a\n    type: local\n    command: []\n", "",
     "servers.yaml:4:14", "servers[0].command", "expected a non-empty list of strings"),
    ("command a string", "servers:\n  - name: a\n    type: local\n    command: npx x\n", "",
     "servers.yaml:4:14", "servers[0].command", "expected a list of strings, got 'npx x'"),
    ("command item", "servers:\n  - name: a\n    type: local\n    command: [npx, 1]\n", "",
     "servers.yaml:4:20", "servers[0].command[1]", "expected a string, got 1"),
    ("python missing", LOCAL + "    python: ./venv/bin/python\n", "", "servers.yaml:5:13",
     "servers[0].python", "interpreter not found (./venv/bin/python)"),
    ("python is a directory", LOCAL + "    python: servers\n", "", "servers.yaml:5:13",
     "servers[0].python", "is not a file (servers)"),
    ("dependsOn unknown", LOCAL + "    dependsOn: [wether]\n", "", "servers.yaml:5:17",
     "servers[0].dependsOn[0]", "no extension is named 'wether' (did you mean 'weather'?)"),
    ("dependsOn twice", LOCAL + "    dependsOn: [backup, backup]\n",
     MODULE + "    moduleType: daemon\n", "servers.yaml:5:25", "servers[0].dependsOn[1]",
     "'backup' is listed twice"),
    ("dependsOn itself", LOCAL + "    dependsOn: [weather]\n", "", "servers.yaml:5:17",
     "servers[0].dependsOn[0]", "dependency cycle: weather -> weather"),
    ("moduleType on a server", LOCAL + "    moduleType: daemon\n", "", "servers.yaml:5:5",
     "servers[0].moduleType", "is only for modules (modules.yaml)"),
    ("provides on a server", LOCAL + "    provides: [x]\n", "", "servers.yaml:5:5",
     "servers[0].provides", "is only for modules (modules.yaml)"),
    ("moduleType missing", "", MODULE, "modules.yaml:2:5", "modules[0].moduleType",
     "is required"),
    ("moduleType unknown", "", MODULE + "    moduleType: cron\n", "modules.yaml:5:17",
     "modules[0].moduleType", "expected 'daemon' or 'plugin', got 'cron'"),
    ("provides on a daemon", "", MODULE + "    moduleType: daemon\n    provides: [x]\n",
     "modules.yaml:6:5", "modules[0].provides", "is only for moduleType plugin"),
    ("provides bad name", "", MODULE + "    moduleType: plugin\n    provides: [a.b]\n",
     "modules.yaml:6:16", "modules[0].provides[0]", "'a.b' is not a valid service name"),
    ("command on a module", "", MODULE + "    moduleType: daemon\n    command: [x]\n",
     "modules.yaml:6:5", "modules[0].command", "is only for servers (servers.yaml)"),
    ("name in both files", LOCAL, MODULE.replace("backup", "weather", 1)
     + "    moduleType: daemon\n", "modules.yaml:2:11", "modules[0].name",
     "'weather' is already used by servers[0] (extensions/servers.yaml:2:11)"),
    ("name twice in a file", LOCAL + LOCAL.removeprefix("servers:\n"), "", "servers.yaml:5:11",
     "servers[1].name", "'weather' is already used by servers[0] (extensions/servers.yaml:2:11)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("servers", "modules", "where", "field", "message"),
    [case[1:] for case in BAD_ENTRIES],
    ids=[case[0] for case in BAD_ENTRIES],
)
def test_bad_entry(
    tree: Tree, servers: str, modules: str, where: str, field: str, message: str
) -> None:
    if servers:
        tree.servers(servers)
    if modules:
        tree.modules(modules)
    result = tree.load()
    assert not result.ok
    found = lines(result)
    assert len(found) == 1, found
    assert found[0].startswith(f"extensions/{where}: {field}: "), found[0]
    assert message in found[0]


def test_symlink_out_of_the_tree_is_refused(tree: Tree) -> None:
    outside = tree.base / "outside"
    outside.mkdir()
    (outside / "__init__.py").write_text("", encoding="utf-8")
    (tree.root / "servers" / "evil").symlink_to(outside)
    tree.servers(LOCAL.replace("./servers/weather", "servers/evil"))
    assert lines(tree.load()) == [
        f"extensions/servers.yaml:4:11: servers[0].path: resolves outside extensions/ "
        f"(servers/evil -> {outside.resolve()})"
    ]


def test_symlink_inside_the_tree_is_followed(tree: Tree) -> None:
    (tree.root / "servers" / "alias").symlink_to(tree.root / "servers" / "weather")
    tree.servers(LOCAL.replace("./servers/weather", "servers/alias"))
    result = tree.load()
    assert result.ok, lines(result)
    assert result.registry.extensions[0].path == (tree.root / "servers" / "weather").resolve()


def test_python_not_executable(tree: Tree) -> None:
    tree.write("venv/bin/python", "")
    tree.servers(LOCAL + "    python: venv/bin/python\n")
    assert lines(tree.load()) == [
        "extensions/servers.yaml:5:13: servers[0].python: is not executable (venv/bin/python)"
    ]


def test_dependency_cycle_is_reported_on_each_member(tree: Tree) -> None:
    tree.package("servers/other")
    tree.servers(
        LOCAL
        + "    dependsOn: [other]\n"
        + "  - {name: other, type: local, path: servers/other, dependsOn: [weather]}\n"
    )
    assert lines(tree.load()) == [
        "extensions/servers.yaml:5:17: servers[0].dependsOn[0]: dependency cycle: "
        "weather -> other -> weather",
        "extensions/servers.yaml:6:65: servers[1].dependsOn[0]: dependency cycle: "
        "weather -> other -> weather",
    ]


def test_depending_on_an_invalid_entry_is_an_error(tree: Tree) -> None:
    tree.servers(
        LOCAL
        + "    limits: {memory: lots}\n"
        + "  - {name: a, type: local, path: servers/weather, dependsOn: [b]}\n"
        + "  - {name: b, type: local, path: servers/weather, dependsOn: [weather]}\n"
    )
    result = tree.load()
    assert lines(result)[1:] == [
        "extensions/servers.yaml:6:63: servers[1].dependsOn[0]: depends on 'b', which has "
        "configuration errors",
        "extensions/servers.yaml:7:63: servers[2].dependsOn[0]: depends on 'weather', which has "
        "configuration errors",
    ]
    assert set(result.invalid) == {"weather", "a", "b"}
    assert not result.fatal


def test_a_service_is_provided_once(tree: Tree) -> None:
    tree.modules(
        """
        modules:
          - {name: one, type: remote, url: 'https://a.example', moduleType: plugin, provides: [s]}
          - {name: two, type: remote, url: 'https://b.example', moduleType: plugin, provides: [s]}
        """
    )
    assert lines(tree.load()) == [
        "extensions/modules.yaml:3:88: modules[1].provides[0]: service 's' is already provided "
        "by one"
    ]


def test_every_error_is_collected(tree: Tree) -> None:
    tree.servers(
        """
        servers:
          - name: Bad_Name
            type: local
            path: ../outside
            timeout: never
            limits: {memory: lots, cpu: none}
            restart: {policy: sometimes}
            bogus: 1
          - name: api
            type: remote
            url: ftp://x
            auth: {type: kerberos}
        """
    )
    tree.modules("modules:\n  - {name: m, type: local, path: modules/backup}\n")
    result = tree.load()
    fields = [error.field for error in result.errors]
    assert fields == [
        "servers[0].name",
        "servers[0].path",
        "servers[0].timeout",
        "servers[0].limits.memory",
        "servers[0].limits.cpu",
        "servers[0].restart.policy",
        "servers[0].bogus",
        "servers[1].url",
        "servers[1].auth.type",
        "modules[0].moduleType",
    ]
    # servers[0] has no usable name, so its errors are fatal; the others are per extension.
    assert result.fatal
    assert set(result.invalid) == {"api", "m"}
    assert [error.extension for error in result.errors][-3:] == ["api", "api", "m"]


@pytest.mark.parametrize("key", ["path", "python"])
def test_a_name_too_long_is_an_error_not_a_crash(tree: Tree, key: str) -> None:
    long_name = "x" * 5000
    text = LOCAL if key == "python" else "servers:\n  - name: weather\n    type: local\n"
    tree.servers(text + f"    {key}: {long_name}\n")
    [line] = lines(tree.load())
    assert f"servers[0].{key}: cannot be checked: File name too long" in line
    assert long_name not in line


def test_a_symlink_loop_is_an_error(tree: Tree) -> None:
    (tree.root / "servers" / "loop").symlink_to(tree.root / "servers" / "loop")
    tree.servers(LOCAL.replace("./servers/weather", "servers/loop"))
    [line] = lines(tree.load())
    assert line.startswith("extensions/servers.yaml:4:11: servers[0].path: ")


def test_a_root_name_too_long_is_an_error(tmp_path: Path) -> None:
    result = load_registry(tmp_path / ("x" * 5000), environ={})
    assert result.fatal
    assert "File name too long" in result.errors[0].message
