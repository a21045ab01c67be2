"""``spctl add`` / ``spctl remove`` (DESIGN §9): real uv, real PyPI, a registry fixture on
127.0.0.1, a real supervisor. Every refusal leaves servers.yaml, spctl.lock and the
environments exactly as they were.

One uv cache is shared by the module (``UV_CACHE_DIR``), so each package is downloaded once.
Tests that need PyPI skip when it cannot be reached and the cache is empty.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    SPCTL,
    interruptible,
    make_extensions,
    serve_fixture,
    server_entry,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

HEADER = "# my servers (a comment spctl add/remove must keep)\n"
TIME_VERSION = "2026.10.19"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


@pytest.fixture(scope="module", autouse=True)
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("uv-cache")
    old = os.environ.get("UV_CACHE_DIR")
    os.environ["UV_CACHE_DIR"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = old


def extensions(root: Path) -> Path:
    """An extensions dir with one server and a comment, as an operator keeps it."""
    ext = make_extensions(root, [], [server_entry("echo", "mcp_echo")])
    text = (ext / "servers.yaml").read_text()
    (ext / "servers.yaml").write_text(HEADER + text)
    return ext


def spctl(
    *args: str, root: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "STATE_DIRECTORY": str(root / "state"),
        "SPCTL_SOCKET": str(root / "run" / "control.sock"),
        **(env or {}),
    }
    return subprocess.run(
        [SPCTL, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def snapshot(root: Path) -> tuple[str, str | None, list[str]]:
    ext = root / "extensions"
    lock = ext / "spctl.lock"
    envs = root / "state" / "envs"
    return (
        (ext / "servers.yaml").read_text(),
        lock.read_text() if lock.exists() else None,
        sorted(p.name for p in envs.iterdir()) if envs.is_dir() else [],
    )


def refused(out: subprocess.CompletedProcess[str], *words: str) -> None:
    if "cannot be reached" in out.stderr:
        pytest.skip(f"PyPI not reachable: {out.stderr.strip()}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "nothing was changed" in out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def server_json(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "server.json"
    path.write_text(json.dumps(doc))
    return str(path)


def time_package(**extra: Any) -> dict[str, Any]:
    return {
        "registryType": "pypi",
        "identifier": "mcp-server-time",
        "version": TIME_VERSION,
        "runtimeHint": "uvx",
        "transport": {"type": "stdio"},
        **extra,
    }


# -- the whole path, through a real supervisor ------------------------------------------------


def test_add_pypi_server_then_call_it_then_remove_it(tmp_path: Path) -> None:
    ext = extensions(tmp_path)
    with serve_fixture(tmp_path, [], None) as s:
        (ext / "servers.yaml").write_text(
            HEADER + "servers:\n  # the echo server\n  - name: echo\n    type: local\n"
            "    path: ./servers/mcp_echo\n"
        )
        s.start()
        s.wait_state("echo", "running", timeout=30)
        out = s.spctl("add", "pypi:mcp-server-time", "--yes", "-e", str(ext), timeout=240)
        if out.returncode != 0 and "cannot be reached" in out.stderr:
            pytest.skip("PyPI not reachable")
        assert out.returncode == 0, out.stderr
        assert "will run: " in out.stdout and "/bin/mcp-server-time" in out.stdout
        assert "reloaded the running supervisor" in out.stdout
        text = (ext / "servers.yaml").read_text()
        assert text.startswith(HEADER) and "  # the echo server\n" in text  # comments kept
        assert f"install: pypi:mcp-server-time=={TIME_VERSION}" in text  # pinned exactly
        assert "command: [mcp-server-time]" in text
        assert "[extensions.time]" in (ext / "spctl.lock").read_text()
        s.wait_state("time", "running", timeout=60)
        call = s.spctl("call", "time", "get_current_time", "--arg", "timezone=UTC")
        assert call.returncode == 0, call.stderr
        assert '"timezone": "UTC"' in call.stdout
        # a name that is taken: refused, nothing changed
        before = snapshot(tmp_path)
        again = s.spctl("add", "pypi:mcp-server-time", "--yes", "-e", str(ext))
        refused(again, "'time' is already taken", "--name")
        assert snapshot(tmp_path) == before
        # remove: the entry and its lock entry go, the env is left to gc, the rest stays
        gone = s.spctl("remove", "time", "--yes", "-e", str(ext))
        assert gone.returncode == 0, gone.stderr
        assert "left to `spctl gc`" in gone.stdout and "reloaded" in gone.stdout
        after = (ext / "servers.yaml").read_text()
        assert after.startswith(HEADER) and "  # the echo server\n" in after
        assert "time" not in after and "added by spctl add" not in after
        assert "[extensions.time]" not in (ext / "spctl.lock").read_text()
        wait_for(lambda: "time" not in {e["name"] for e in s.try_status()["extensions"]}, 30)
        assert s.ext("echo")["state"] == "running"
        gc = s.spctl("gc", "-e", str(ext))
        assert gc.returncode == 0 and "removed" in gc.stdout and "time-" in gc.stdout


def test_add_from_a_registry_fixture_maps_env_and_secrets(tmp_path: Path) -> None:
    doc = {
        "server": {
            "$schema": SCHEMA,
            "name": "io.github.example/mcp-server-time",
            "version": TIME_VERSION,
            "packages": [
                {"registryType": "oci", "identifier": "ghcr.io/example/time:1"},
                time_package(
                    packageArguments=[
                        {"type": "named", "name": "--local-timezone", "default": "UTC"}
                    ],
                    environmentVariables=[
                        {
                            "name": "TIME_API_KEY",
                            "isSecret": True,
                            "isRequired": True,
                            "description": "the API key",
                        },
                        {"name": "TIME_LOG", "default": "info", "description": "log level"},
                    ],
                ),
            ],
        },
        "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active"}},
    }
    seen: list[str] = []

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            wanted = "/v0.1/servers/io.github.example%2Fmcp-server-time/versions/latest"
            body = json.dumps(doc).encode() if self.path == wanted else b"{}"
            self.send_response(200 if self.path == wanted else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ext = extensions(tmp_path)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        source = "registry:io.github.example/mcp-server-time"
        # a required secret that is not set: refused before anything is built
        before = snapshot(tmp_path)
        out = spctl("add", source, "--registry", base, "--yes", "-e", str(ext), root=tmp_path)
        refused(out, "TIME_API_KEY is required (the API key)")
        assert snapshot(tmp_path) == before
        secret = {"TIME_API_KEY": "s3cret-value"}
        out = spctl(
            "add", source, "--registry", base, "--yes", "-e", str(ext), root=tmp_path, env=secret
        )
        if out.returncode != 0 and "cannot be reached" in out.stderr:
            pytest.skip("PyPI not reachable")
        assert out.returncode == 0, out.stderr
        text = (ext / "servers.yaml").read_text()
        assert "s3cret-value" not in text + out.stdout + out.stderr  # never a literal
        assert "TIME_API_KEY: '${TIME_API_KEY}'" in text and "TIME_LOG: info" in text
        assert "command: [mcp-server-time, --local-timezone=UTC]" in text
        assert f"# added by spctl add: io.github.example/mcp-server-time {TIME_VERSION}" in text
        assert "set TIME_API_KEY in the supervisor's environment (the API key)" in out.stdout
        assert "\n- name: time\n" in text and text.startswith(HEADER)
        # unknown to the registry
        out = spctl(
            "add",
            "registry:io.github.example/none",
            "--registry",
            base,
            "--yes",
            "-e",
            str(ext),
            root=tmp_path,
        )
        refused(out, "the registry has no server named 'io.github.example/none'")
    finally:
        server.shutdown()
        server.server_close()


# -- bad input: each refused, nothing written --------------------------------------------------


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("pypi:no-such-package-xyz", ["no-such-package-xyz", "cannot lock"]),
        ("pypi:mcp-server-time==1999.1.1", ["mcp-server-time==1999.1.1", "cannot lock"]),
        ("pypi:idna==3.10", ["idna 3.10 installs no console script"]),
        ("pypi:pip==25.3", ["pip 25.3 installs several console scripts (pip, pip3", "--command"]),
    ],
)
def test_bad_pypi_sources_change_nothing(tmp_path: Path, source: str, words: list[str]) -> None:
    ext = extensions(tmp_path)
    before = snapshot(tmp_path)
    out = spctl("add", source, "--yes", "-e", str(ext), root=tmp_path)
    refused(out, *words)
    assert snapshot(tmp_path) == before  # and an env built for nothing is removed


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (
            {
                "$schema": "https://example.com/other.json",
                "name": "x",
                "version": "1",
                "packages": [time_package()],
            },
            ["unknown server.json schema"],
        ),
        ({"$schema": SCHEMA, "version": "1", "packages": [time_package()]}, ["name: missing"]),
        ({"$schema": SCHEMA, "name": "x", "version": "1"}, ["neither packages[] nor remotes[]"]),
        (
            {
                "$schema": SCHEMA,
                "name": "x",
                "version": "1",
                "packages": [{"registryType": "oci", "identifier": "ghcr.io/x/y:1"}],
            },
            ["oci not supported"],
        ),
        (
            {
                "$schema": SCHEMA,
                "name": "x",
                "version": "1",
                "packages": [
                    {
                        "registryType": "npm",
                        "identifier": "@x/y",
                        "version": "latest",
                        "transport": {"type": "stdio"},
                    }
                ],
            },
            ["packages[0].version: an exact version is required, got 'latest'"],
        ),
        (
            {
                "$schema": SCHEMA,
                "name": "x",
                "version": "1",
                "packages": [
                    time_package(
                        environmentVariables=[
                            {
                                "name": "REGION",
                                "isRequired": True,
                                "description": "the region to serve",
                            }
                        ]
                    )
                ],
            },
            ["REGION is required (the region to serve)", "--env REGION=VALUE"],
        ),
    ],
)
def test_bad_server_json_changes_nothing(
    tmp_path: Path, doc: dict[str, Any], words: list[str]
) -> None:
    ext = extensions(tmp_path)
    before = snapshot(tmp_path)
    out = spctl("add", server_json(tmp_path, doc), "--yes", "-e", str(ext), root=tmp_path)
    refused(out, *words)
    assert snapshot(tmp_path) == before


def test_refusals_before_any_work(tmp_path: Path) -> None:
    ext = extensions(tmp_path)
    before = snapshot(tmp_path)
    out = spctl("add", "npm:@x/y@^1.0.0", "--yes", "-e", str(ext), root=tmp_path)
    refused(out, "'^1.0.0' is not an exact version")
    out = spctl("add", "pypi:mcp-server-time", "-e", str(ext), root=tmp_path)  # no tty
    refused(out, "stdin is not a terminal and --yes was not given")
    out = spctl(
        "add", "pypi:mcp-server-time", "--name", "echo", "--yes", "-e", str(ext), root=tmp_path
    )
    refused(out, "'echo' is already taken")
    out = spctl(
        "add", "pypi:mcp-server-time", "--name", "Bad_Name", "--yes", "-e", str(ext), root=tmp_path
    )
    refused(out, "an entry name is lowercase")
    secret = {
        "$schema": SCHEMA,
        "name": "x",
        "version": "1",
        "packages": [time_package(environmentVariables=[{"name": "KEY", "isSecret": True}])],
    }
    given = ("--env", "KEY=literal", "--yes", "-e", str(ext))
    out = spctl("add", server_json(tmp_path, secret), *given, root=tmp_path)
    refused(out, "KEY is a secret: spctl add writes ${KEY}, never a literal")
    out = spctl("remove", "nope", "--yes", "-e", str(ext), root=tmp_path)
    refused(out, "has no entry named 'nope'")
    assert snapshot(tmp_path) == before


def test_remote_from_server_json(tmp_path: Path) -> None:
    ext = extensions(tmp_path)
    doc = {
        "$schema": SCHEMA,
        "name": "com.example/weather-mcp",
        "version": "2.0.0",
        "remotes": [
            {
                "type": "streamable-http",
                "url": "https://{tenant}.example.com/mcp",
                "variables": {"tenant": {"default": "acme"}},
                "headers": [{"name": "X-Api-Key", "isSecret": True, "isRequired": True}],
            },
        ],
    }
    out = spctl(
        "add",
        server_json(tmp_path, doc),
        "--yes",
        "-e",
        str(ext),
        root=tmp_path,
        env={"X_API_KEY": "k"},
    )
    assert out.returncode == 0, out.stderr
    text = (ext / "servers.yaml").read_text()
    assert "- name: weather\n  type: remote\n  url: https://acme.example.com/mcp" in text
    assert "X-Api-Key: '${X_API_KEY}'" in text
    lock = tomllib.loads((ext / "spctl.lock").read_text())
    assert "extensions" not in lock  # no environment to lock: only where it came from
    assert set(lock["origins"]) == {"weather"}
    assert "no supervisor is running: it will be picked up at the next start" in out.stdout


def test_ctrl_c_during_the_build_leaves_nothing(tmp_path: Path) -> None:
    ext = extensions(tmp_path)
    before = snapshot(tmp_path)
    env = {
        **os.environ,
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "SPCTL_SOCKET": str(tmp_path / "run" / "control.sock"),
        "UV_CACHE_DIR": str(tmp_path / "cold-cache"),  # a cold cache: the build downloads
    }
    proc = subprocess.Popen(
        interruptible(
            [SPCTL, "add", "pypi:mcp-server-time==" + TIME_VERSION, "--yes", "-e", str(ext)]
        ),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    envs = tmp_path / "state" / "envs"
    try:
        building = wait_for(
            lambda: proc.poll() is not None or (envs.is_dir() and any(envs.glob(".tmp-time-*"))),
            120,
            "the build to start",
        )
        if proc.poll() is not None:
            out, err = proc.communicate()
            if "cannot be reached" in err:
                pytest.skip("PyPI not reachable")
            pytest.fail(f"add ended before its build could be interrupted: {out}{err}")
        assert building
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    assert snapshot(tmp_path) == before  # no entry, no lock, no env (not even a temp dir)


def on_a_terminal(
    root: Path, ext: Path, source: str, typed: bytes
) -> subprocess.CompletedProcess[str]:
    """``spctl add source`` with a pseudo-terminal as stdin, ``typed`` already waiting on it."""
    import pty

    leader, follower = pty.openpty()
    try:
        os.write(leader, typed)
        return subprocess.run(
            [SPCTL, "add", source, "-e", str(ext)],
            env={
                **os.environ,
                "STATE_DIRECTORY": str(root / "state"),
                "SPCTL_SOCKET": str(root / "run" / "control.sock"),
            },
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)


def test_on_a_terminal_it_shows_what_it_will_run_and_asks(tmp_path: Path) -> None:
    ext = extensions(tmp_path)
    doc = {
        "$schema": SCHEMA,
        "name": "com.example/weather-mcp",
        "version": "2.0.0",
        "remotes": [{"type": "streamable-http", "url": "https://weather.example.com/mcp"}],
    }
    source = server_json(tmp_path, doc)
    before = snapshot(tmp_path)
    for answer, code in (("n", 1), ("y", 0)):
        out = on_a_terminal(tmp_path, ext, source, f"{answer}\n".encode())
        assert out.returncode == code, out.stdout + out.stderr
        assert "weather: will run: (remote) https://weather.example.com/mcp" in out.stdout
        assert "write weather to" in out.stdout
        if answer == "n":
            assert "not confirmed" in out.stderr and snapshot(tmp_path) == before
    assert "- name: weather\n  type: remote\n" in (ext / "servers.yaml").read_text()


def test_on_a_terminal_a_required_input_without_a_value_is_asked_for(tmp_path: Path) -> None:
    """DESIGN §9: an input's value comes from --env/--arg, then its default, then a prompt; a
    terminal gets the prompt (quoting the input's description), and the answer is written."""

    ext = extensions(tmp_path)
    doc = {
        "$schema": SCHEMA,
        "name": "com.example/weather-mcp",
        "version": "2.0.0",
        "remotes": [
            {
                "type": "streamable-http",
                "url": "https://weather.example.com/mcp",
                "headers": [
                    {"name": "X-Region", "isRequired": True, "description": "the region to serve"}
                ],
            }
        ],
    }
    source = server_json(tmp_path, doc)
    # the answer, then the confirmation
    out = on_a_terminal(tmp_path, ext, source, b"eu-west\ny\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "X-Region (the region to serve)" in out.stdout
    text = (ext / "servers.yaml").read_text()
    assert "X-Region: eu-west" in text, text
