"""MCP servers exported as SDK objects (``mcp = MCPServer(...)`` in a ``path:`` package): the
worker's ``sdk`` kind alone, then hosted by a real ``spctl serve`` and called through it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import serve_fixture, server_entry, wait_for
from tests.integration.harness import FIXTURES, WorkerHarness, call, text
from worker.protocol import EXIT_LOAD_ERROR, EXIT_OK

FIXTURE = FIXTURES / "mcp_sdk_server"
TOOLS = ["echo", "add", "slow", "boom", "grow", "pid"]


def sdk_harness(tmp_path: Path, path: Path = FIXTURE) -> WorkerHarness:
    # The supervisor boots every `path:` server as kind "handler"; the worker picks "sdk".
    return WorkerHarness(path, name="fx", kind="handler", env={"MARKERS": str(tmp_path)})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
class TestWorker:
    async def test_ready_calls_progress_catalog_and_shutdown(self, tmp_path: Path) -> None:
        async with sdk_harness(tmp_path) as h:
            info = await h.ready(timeout=30)
            assert info["kind"] == "sdk"
            meta = info["metadata"]
            assert (meta["server"], meta["version"]) == ("sdk-fixture", "1.2.3")
            assert meta["object"].endswith(".mcp")
            catalog = info["catalog"]
            assert [t["name"] for t in catalog["tools"]] == TOOLS
            assert [r["uri"] for r in catalog["resources"]] == ["fixture://readme"]
            assert [p["name"] for p in catalog["prompts"]] == ["greet"]
            assert await call(h, "add", a=2, b=40) == {
                "content": [text("42")],
                "structuredContent": {"result": 42},
                "isError": False,
            }
            # in-process: the tool runs in the worker itself
            assert (await call(h, "pid"))["structuredContent"] == {"result": h.pid}
            boom = await call(h, "boom")
            assert boom["isError"] is True
            assert "boom" in boom["content"][0]["text"]
            read = await h.request("mcp", "resources/read", {"uri": "fixture://readme"}, {})
            assert read["contents"][0]["text"] == "hello from the sdk fixture"
            prompt = await h.request(
                "mcp", "prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}
            )
            assert prompt["messages"][0]["content"] == text("Hello, Ada!")
            done = await h.request(
                "mcp",
                "completion/complete",
                {
                    "ref": {"type": "ref/prompt", "name": "greet"},
                    "argument": {"name": "name", "value": "a"},
                },
            )
            assert done["completion"]["values"] == ["ada", "alan"]
            assert await h.request("mcp", "ping") == {}
            # progress: the server's reports, under the caller's token, before the answer
            done = await call(h, "slow", {"progressToken": "t1"}, seconds=0.3)
            assert done["structuredContent"] == {"result": "done"}
            reports = [p for m, p in h.notifications if m == "progress"]
            assert [r[0] for r in reports] == ["t1", "t1", "t1"]
            assert [r[1] for r in reports] == [0, 1, 2]
            # list_changed → refetch → catalog
            assert (await call(h, "grow"))["structuredContent"] == {"result": "grown"}
            changed = await h.notification("catalog")
            assert [t["name"] for t in changed["tools"]] == [*TOOLS, "extra"]
            assert (await call(h, "extra"))["content"] == [text("extra!")]
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK


LOW_LEVEL = "from mcp.server import Server\nserver = Server('low-level', version='0.1')\n"
BOTH = (
    "from mcp.server.mcpserver import MCPServer\napp = MCPServer('x')\n"
    "def create_handler(config):\n    return lambda method, params: {}\n"
)
LIFESPAN_FAILS = """
from contextlib import asynccontextmanager
from mcp.server.mcpserver import MCPServer

@asynccontextmanager
async def lifespan(server):
    raise RuntimeError("no database")
    yield

mcp = MCPServer("broken", lifespan=lifespan)
"""


@pytest.mark.anyio
class TestKindChoice:
    @pytest.mark.parametrize(
        ("source", "kind", "server"),
        [
            (LOW_LEVEL, "sdk", "low-level"),  # a low-level Server object is served too
            (BOTH, "handler", None),  # create_handler wins over an SDK object
        ],
    )
    async def test_ready_as(self, tmp_path: Path, source: str, kind: str, server: str) -> None:
        (tmp_path / "__init__.py").write_text(source)
        async with sdk_harness(tmp_path, tmp_path) as h:
            info = await h.ready(timeout=30)
            assert info["kind"] == kind
            assert info["metadata"].get("server") == server
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            ("x = 1\n", "nor an MCP SDK server object (a module-level mcp, server or app holding"),
            (
                "from mcp.server.mcpserver.exceptions import ToolError\napp = ToolError('x')\n",
                "no MCP SDK server object in ",
            ),
            (LIFESPAN_FAILS, "no database"),
        ],
    )
    async def test_load_errors(self, tmp_path: Path, source: str, message: str) -> None:
        (tmp_path / "__init__.py").write_text(source)
        async with sdk_harness(tmp_path, tmp_path) as h:
            error = await h.notification("load_error", timeout=30)
            assert await h.exit_code() == EXIT_LOAD_ERROR
        assert message in error["message"]
        assert h.ready_info is None


# -- through a real supervisor -----------------------------------------------------------------


def _entry(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return server_entry("fx", "mcp_sdk_server", env={"MARKERS": str(markers)}, **extra)


def test_sdk_server_through_spctl(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_entry(tmp_path)]) as s:
        s.start()
        worker = s.wait_state("fx", "running", timeout=30)["pid"]
        out = s.spctl("tools", "--json")
        assert out.returncode == 0, out.stderr
        tools = {t["tool"]: t for t in json.loads(out.stdout)["tools"]}
        assert set(tools) == set(TOOLS)
        assert tools["add"]["name"] == "fx__add"
        out = s.spctl("call", "fx", "add", "--arg", "a=2", "--arg", "b=40")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
        out = s.spctl("call", "fx", "echo", "--json", json.dumps({"text": "hello"}))
        assert out.stdout.strip() == "hello"
        assert int(s.spctl("call", "fx", "pid").stdout) == worker
        out = s.spctl("call", "fx", "boom")
        assert out.returncode == 1
        assert "boom" in out.stdout


def test_timeout_cancels_the_servers_call(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [_entry(tmp_path, timeout="1s")]) as s:
        s.start()
        s.wait_state("fx", "running", timeout=30)
        t0 = time.monotonic()
        out = s.spctl("call", "fx", "slow", "--arg", "seconds=30")
        assert out.returncode == 1
        assert "fx: no answer within timeout 1s" in out.stderr
        assert time.monotonic() - t0 < 10
        cancelled = tmp_path / "markers" / "slow.cancelled"
        wait_for(cancelled.exists, 5, "notifications/cancelled to reach the server")
        assert os.path.exists(tmp_path / "markers" / "slow.started")
