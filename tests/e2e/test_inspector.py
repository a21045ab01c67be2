"""MCP Inspector 0.15 and 2.12 reach one hosted server at ``/servers/<name>/mcp`` (#14).

Theory of operation: each pinned Inspector is installed once from the npm registry under
``.venv/test-cache`` (``npm_bin``: a changed pin reinstalls, later runs reuse it) and run
in its own non-interactive CLI mode (``--cli URL --method …``, the same transport code as its
web UI's connection) against a real ``spctl serve`` hosting two servers. A tools/list through
``/servers/echo/mcp`` must be echo's own names only (not the aggregate's ``echo__echo``), and a
tools/call must answer. The test also pins down why that path exists: 0.15's CLI turns any URL
whose path does not end in ``/mcp`` into ``/mcp`` (its ``createHTTPTransport``), so
``/mcp/echo`` gets the aggregate there; 2.12 keeps the URL as given (with ``--transport http``,
since it picks the transport from a ``/mcp`` or ``/sse`` suffix). Without node/npm, or with the
registry unreachable and nothing cached, the test skips with the installer's reason.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.e2e.test_front_supervised import running_front
from tests.helpers import (
    InstallFailed,
    Serve,
    make_extensions,
    npm_bin,
    server_entry,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

# Pinned: the versions checked here (bump deliberately; the marker makes a bump reinstall).
INSPECTORS = {
    "0.15": "@modelcontextprotocol/inspector@0.15.0",
    "2.12": "@modelcontextprotocol/inspector@2.12.0",
}


def inspector(version: str) -> list[str]:
    """``[node, <mcp-inspector bin>, --cli]`` for the pinned Inspector ``version``."""
    try:
        return [*npm_bin(INSPECTORS[version]), "--cli"]
    except InstallFailed as e:
        pytest.skip(f"the MCP Inspector is a Node.js program: {e}")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a front hosting ``echo`` and ``other``."""
    root = tmp_path_factory.mktemp("inspector")
    ext = make_extensions(
        root, [], [server_entry("echo", "mcp_echo"), server_entry("other", "mcp_sdk_server")]
    )
    s = Serve(root, ext, root / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    s.start()
    try:
        s.wait_state("echo", "running")
        s.wait_state("other", "running")
        url = urllib.parse.urlsplit(wait_for(lambda: running_front(s), 60, "the front")["url"])
        yield f"{url.scheme}://{url.netloc}"
    finally:
        s.stop(10)


def run(cli: list[str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli, url, *args], capture_output=True, text=True, timeout=120)


def listed(cli: list[str], url: str, *args: str) -> set[str]:
    out = run(cli, url, *args, "--method", "tools/list")
    assert out.returncode == 0, out.stderr + out.stdout
    return {t["name"] for t in json.loads(out.stdout)["tools"]}


@pytest.mark.parametrize("version", sorted(INSPECTORS))
def test_the_inspector_reaches_one_server_at_servers_name_mcp(base: str, version: str) -> None:
    cli = inspector(version)
    one = f"{base}/servers/echo/mcp"
    names = listed(cli, one)
    assert "echo" in names and not any("__" in n for n in names), names

    out = run(cli, one, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hi")
    assert out.returncode == 0, out.stderr + out.stdout
    assert json.loads(out.stdout)["content"] == [{"type": "text", "text": "hi"}]

    # Why /servers/<name>/mcp: 0.15 rewrites /mcp/echo to /mcp (the aggregate); 2.12 does not.
    rewritten = listed(cli, f"{base}/mcp/echo", "--transport", "http")
    if version == "0.15":
        assert "echo__echo" in rewritten and "echo" not in rewritten, rewritten
    else:
        assert rewritten == names
