"""All three kinds of MCP-server extension — a create_handler package, an SDK server object and
a stdio server given as `command:` — side by side behind one supervisor, reached by the official
SDK client through the core-managed front (/mcp and /mcp/<server>, both eras) and `spctl mcp`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.helpers import FIXTURES, SPCTL, Serve, make_extensions, wait_for


def _servers(root: Path) -> list[dict[str, Any]]:
    ext = root / "extensions"
    (ext / "servers").mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES / "stdio_server", ext / "servers" / "stdio_server")
    return [
        {"name": "handler", "type": "local", "path": "./servers/mcp_echo"},
        {"name": "sdk", "type": "local", "path": "./servers/mcp_sdk_server"},
        {
            "name": "stdio",
            "type": "local",
            "command": [sys.executable, "server.py"],
            "path": "./servers/stdio_server",
        },
    ]


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    ext = make_extensions(tmp_path, [], _servers(tmp_path))
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    s.start()
    try:
        for name in ("handler", "sdk", "stdio"):
            s.wait_state(name, "running", timeout=60)

        def front_url() -> str | None:
            st = s.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        s.url = wait_for(front_url, 30, "the MCP front")  # type: ignore[attr-defined]
        yield s
    finally:
        s.kill()


def _text(result: Any) -> str:
    return str(result.content[0].text)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_every_kind_through_the_http_front(serve: Serve, mode: str) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode=mode) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert {"handler__echo", "sdk__echo", "stdio__echo"} <= tools
            for server in ("handler", "sdk", "stdio"):
                result = await c.call_tool(f"{server}__echo", {"text": f"via {server}"})
                assert _text(result) == f"via {server}"
                assert not result.is_error
                boom = await c.call_tool(f"{server}__boom", {})
                assert boom.is_error
        for server in ("sdk", "stdio"):
            async with Client(url.replace("/mcp", f"/mcp/{server}"), mode=mode) as c:
                result = await c.call_tool("add", {"a": 2, "b": 40})
                assert "42" in _text(result)

    anyio.run(body)


def test_every_kind_through_spctl_mcp_stdio(serve: Serve) -> None:
    async def body() -> None:
        params = StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env)
        async with Client(params) as c:
            for server in ("handler", "sdk", "stdio"):
                result = await c.call_tool(f"{server}__echo", {"text": server})
                assert _text(result) == server

    anyio.run(body)
