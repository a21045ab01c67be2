"""Published MCP servers of other ages and languages, hosted by a real ``spctl serve`` and called
through ``spctl tools`` / ``spctl call``: ``mcp-server-sqlite`` from PyPI on an old Python SDK
(``mcp<2``), and Node.js servers from npm on the TypeScript SDK.

Theory of operation: each server is installed once into a directory of its own under
``.venv/test-cache`` (a venv for PyPI, an npm ``--prefix`` for npm), with a ``.installed``
marker naming exactly what was installed, so a changed pin reinstalls and later runs reuse the
cache. An install that cannot be done here (no network, no node) skips the test with the
installer's own error as the reason. The worker speaks the 2025-11-25 era of MCP to every
server; the assertions check what each server answers through spctl, and the sqlite test also
reads the database file the server wrote."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import InstallFailed, Serve, npm_bin, pip_venv, serve_fixture

# Pinned to the versions verified here; bump deliberately (the marker makes a bump reinstall).
SQLITE_PIP = ["mcp-server-sqlite==2025.4.25", "mcp<2"]
EVERYTHING_NPM = "@modelcontextprotocol/server-everything@2026.8.31"
FILESYSTEM_NPM = "@modelcontextprotocol/server-filesystem@2026.8.31"
PROTOCOL = "2025-11-25"  # what each pinned server settles on with the worker (measured)


def pip_server(name: str, requirements: list[str]) -> Path:
    """The bin/ of a venv under the cache with ``requirements`` installed."""
    try:
        return pip_venv(name, requirements) / "bin"
    except InstallFailed as e:
        pytest.skip(str(e))


def npm_server(spec: str) -> list[str]:
    """``[node, <entry>]`` for the npm package ``spec``, installed under the cache."""
    try:
        return npm_bin(spec)
    except InstallFailed as e:
        pytest.skip(str(e))


def call(s: Serve, ext: str, tool: str, args: dict[str, Any]) -> str:
    out = s.spctl("call", ext, tool, "--json", json.dumps(args))
    assert out.returncode == 0, f"{tool}: {out.stderr}{out.stdout}"
    return out.stdout.strip()


def tool_names(s: Serve, ext: str) -> set[str]:
    out = s.spctl("tools", "--json")
    assert out.returncode == 0, out.stderr
    return {
        t["tool"] for t in json.loads(out.stdout)["tools"] if t["name"] == f"{ext}__{t['tool']}"
    }


def hosted(s: Serve, ext: str, server: str) -> None:
    """Start ``s``, wait for ``ext`` to run, and check whom the worker is talking to."""
    s.start()
    info = s.wait_state(ext, "running", timeout=60)
    meta: dict[str, Any] = info["metadata"]
    assert meta["server"] == server, meta
    assert meta["protocol"] == PROTOCOL, meta


# -- PyPI: mcp-server-sqlite on the 1.x Python SDK -----------------------------------------------


def test_mcp_server_sqlite_on_an_old_sdk(tmp_path: Path) -> None:
    bin_dir = pip_server("mcp-server-sqlite", SQLITE_PIP)
    db = tmp_path / "test.db"
    entry = {
        "name": "sqlite",
        "type": "local",
        "command": [str(bin_dir / "mcp-server-sqlite"), "--db-path", str(db)],
        "sandbox": {"writable": [str(tmp_path)]},  # the db and its journal beside it
    }
    with serve_fixture(tmp_path, [], [entry]) as s:
        hosted(s, "sqlite", "sqlite")
        assert {"create_table", "write_query", "read_query", "list_tables"} <= tool_names(
            s, "sqlite"
        )
        create = call(s, "sqlite", "create_table", {"query": "CREATE TABLE t (x INTEGER)"})
        assert create == "Table created successfully"
        insert = call(s, "sqlite", "write_query", {"query": "INSERT INTO t (x) VALUES (7), (35)"})
        assert insert == "[{'affected_rows': 2}]"
        select = call(s, "sqlite", "read_query", {"query": "SELECT SUM(x) AS total FROM t"})
        assert select == "[{'total': 42}]"
        assert call(s, "sqlite", "list_tables", {}) == "[{'name': 't'}]"
        # the server's own refusal is a result, not a transport error
        refused = call(s, "sqlite", "read_query", {"query": "DELETE FROM t"})
        assert refused == "Error: Only SELECT queries are allowed for read_query"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(7,), (35,)]


# -- npm: Node.js servers on the TypeScript SDK --------------------------------------------------


def test_node_server_everything_echo(tmp_path: Path) -> None:
    command = npm_server(EVERYTHING_NPM)
    entry = {"name": "everything", "type": "local", "command": [*command, "stdio"], "sandbox": {}}
    with serve_fixture(tmp_path, [], [entry]) as s:
        hosted(s, "everything", "mcp-servers/everything")
        assert "echo" in tool_names(s, "everything")
        assert call(s, "everything", "echo", {"message": "hello, node"}) == "Echo: hello, node"


def test_node_server_filesystem_list_directory(tmp_path: Path) -> None:
    command = npm_server(FILESYSTEM_NPM)
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "a.txt").write_text("alpha\n")
    entry = {
        "name": "fs",
        "type": "local",
        "command": [*command, str(shared)],
        "sandbox": {"readable": [str(shared)]},
    }
    with serve_fixture(tmp_path, [], [entry]) as s:
        hosted(s, "fs", "secure-filesystem-server")
        assert {"list_directory", "read_text_file"} <= tool_names(s, "fs")
        listing = call(s, "fs", "list_directory", {"path": str(shared)})
        assert sorted(listing.splitlines()) == ["[DIR] sub", "[FILE] a.txt"]
        read = call(s, "fs", "read_text_file", {"path": str(shared / "a.txt")})
        assert read == "alpha"
        # outside the allowed directory: the server refuses, spctl reports a failed call
        out = s.spctl("call", "fs", "list_directory", "--json", json.dumps({"path": "/etc"}))
        assert out.returncode == 1
        assert "outside allowed directories" in out.stdout + out.stderr
