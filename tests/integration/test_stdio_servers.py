"""Stdio MCP servers (``command: [...]`` in servers.yaml): the worker's ``stdio`` kind alone,
then hosted by a real ``spctl serve`` and called through it — the fixture server written with
the SDK, and published servers from PyPI installed into venvs of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    InstallFailed,
    Serve,
    descendants,
    pid_gone,
    pip_venv,
    serve_fixture,
    wait_for,
)
from tests.integration.harness import FIXTURES, WorkerHarness, call, text
from worker.protocol import EXIT_ERROR, EXIT_LOAD_ERROR, EXIT_OK

SERVER = FIXTURES / "stdio_server" / "server.py"
TOOLS = ["echo", "add", "slow", "boom", "grow", "pid", "env", "cwd"]


# -- the worker's stdio kind, driven by the harness --------------------------------------------


def stdio_harness(tmp_path: Path, command: list[str] | None = None, **env: str) -> WorkerHarness:
    spec = {
        "name": "fx",
        "kind": "stdio",
        "path": str(tmp_path),
        "command": command or [sys.executable, str(SERVER)],
        "cwd": str(tmp_path),
        "env": {"MARKERS": str(tmp_path), **env},
    }
    return WorkerHarness(SERVER.parent, name="fx", spec=spec)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
class TestWorker:
    async def test_ready_calls_progress_catalog_and_shutdown(self, tmp_path: Path) -> None:
        async with stdio_harness(tmp_path, GREETING="hi") as h:
            info = await h.ready(timeout=30)
            assert info["kind"] == "stdio"
            assert info["metadata"]["server"] == "stdio-fixture"
            assert info["metadata"]["protocol"] == "2025-11-25"
            catalog = info["catalog"]
            assert [t["name"] for t in catalog["tools"]] == TOOLS
            assert [r["uri"] for r in catalog["resources"]] == ["fixture://readme"]
            assert [p["name"] for p in catalog["prompts"]] == ["greet"]
            assert await call(h, "add", a=2, b=40) == {
                "content": [text("42")],
                "structuredContent": {"result": 42},
                "isError": False,
            }
            assert (await call(h, "cwd"))["structuredContent"] == {"result": str(tmp_path)}
            assert (await call(h, "env", name="GREETING"))["structuredContent"] == {"result": "hi"}
            for private in ("SPCTL_CHANNEL_FD", "SPCTL_PARENT_PID"):
                assert (await call(h, "env", name=private))["structuredContent"] == {"result": ""}
            boom = await call(h, "boom")
            assert boom["isError"] is True
            read = await h.request("mcp", "resources/read", {"uri": "fixture://readme"}, {})
            assert read["contents"][0]["text"] == "hello from the stdio fixture"
            prompt = await h.request(
                "mcp", "prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}
            )
            assert prompt["messages"][0]["content"] == text("Hello, Ada!")
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
            server_pid = (await call(h, "pid"))["structuredContent"]["result"]
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
            wait_for(lambda: pid_gone(server_pid), 5, "the server to end with the worker")

    async def test_server_exit_ends_the_worker(self, tmp_path: Path) -> None:
        async with stdio_harness(tmp_path) as h:
            await h.ready(timeout=30)
            server_pid = (await call(h, "pid"))["structuredContent"]["result"]
            os.kill(server_pid, signal.SIGKILL)
            assert await h.exit_code() == EXIT_ERROR
            error = await h.notification("error")
            assert error["message"] == "the stdio server was killed by SIGKILL"

    async def test_the_worker_never_loads_the_sdk(self, tmp_path: Path) -> None:
        async with stdio_harness(tmp_path) as h:
            info = await h.ready(timeout=30)
            assert (await call(h, "echo", text="x"))["content"] == [text("x")]
            # the SDK imports pydantic, whose core is a shared library: it would be mapped
            maps = Path(f"/proc/{info['pid']}/maps").read_text()
            assert "pydantic_core" not in maps
            assert "msgpack/_cmsgpack" in maps  # the worker's own extension module, for contrast

    async def test_missing_command_is_a_load_error(self, tmp_path: Path) -> None:
        async with stdio_harness(tmp_path, ["/nonexistent/mcp-server"]) as h:
            assert await h.exit_code(timeout=20) == EXIT_LOAD_ERROR
            assert "load_error" in [m for m, _ in h.notifications]
            await h.line("cannot run /nonexistent/mcp-server", "stderr")

    async def test_server_dies_with_a_killed_worker(self, tmp_path: Path) -> None:
        async with stdio_harness(tmp_path) as h:
            await h.ready(timeout=30)
            server_pid = (await call(h, "pid"))["structuredContent"]["result"]
            h.kill()
            await h.exit_code()
            wait_for(lambda: pid_gone(server_pid), 5, "PDEATHSIG to end the server")


# -- through a real supervisor -----------------------------------------------------------------


def fixture_entry(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return {
        "name": "fx",
        "type": "local",
        "command": [sys.executable, "server.py"],
        "path": "./servers/stdio_server",
        "env": {"MARKERS": str(markers)},
        **extra,
    }


def spctl_call(s: Serve, ext: str, tool: str, args: dict[str, Any]) -> Any:
    out = s.spctl("call", ext, tool, "--json", json.dumps(args))
    return out


def test_fixture_server_through_spctl(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [fixture_entry(tmp_path)]) as s:
        s.start()
        s.wait_state("fx", "running", timeout=30)
        out = s.spctl("tools", "--json")
        assert out.returncode == 0, out.stderr
        tools = {t["tool"]: t for t in json.loads(out.stdout)["tools"]}
        assert set(tools) == set(TOOLS)
        assert tools["add"]["name"] == "fx__add"
        out = s.spctl("call", "fx", "add", "--arg", "a=2", "--arg", "b=40")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
        out = spctl_call(s, "fx", "echo", {"text": "hello"})
        assert out.stdout.strip() == "hello"
        out = spctl_call(s, "fx", "cwd", {})
        assert out.stdout.strip() == str(s.extensions / "servers" / "stdio_server")
        out = s.spctl("call", "fx", "boom")
        assert out.returncode == 1
        assert "boom" in out.stdout

        # the server's stderr reaches `spctl logs`: through another pipe than its answer, so
        # it may come in after the call returned; wait for it, do not race it
        def with_traceback() -> str | None:
            logs = s.spctl("logs", "fx", "-n", "200").stdout
            return logs if "ValueError: boom" in logs else None

        logs = wait_for(with_traceback, 10, "the server's traceback in `spctl logs`")
        assert "started stdio server" in logs


def test_timeout_cancels_the_servers_call(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [fixture_entry(tmp_path, timeout="1s")]) as s:
        s.start()
        s.wait_state("fx", "running", timeout=30)
        t0 = time.monotonic()
        out = s.spctl("call", "fx", "slow", "--arg", "seconds=30")
        assert out.returncode == 1
        assert "fx: no answer within timeout 1s" in out.stderr
        assert time.monotonic() - t0 < 10
        cancelled = tmp_path / "markers" / "slow.cancelled"
        wait_for(cancelled.exists, 5, "notifications/cancelled to reach the server")


def test_killed_server_restarts_the_extension(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [fixture_entry(tmp_path)]) as s:
        s.start()
        worker = s.wait_state("fx", "running", timeout=30)["pid"]
        server = int(spctl_call(s, "fx", "pid", {}).stdout)
        assert server in descendants(worker)
        os.kill(server, signal.SIGKILL)
        wait_for(  # a dead worker has no pid (None) until the supervisor sees it crash
            lambda: (e := s.ext("fx"))["state"] == "running" and e["pid"] not in (worker, None),
            30,
            "the extension to restart",
        )
        assert pid_gone(worker)
        out = spctl_call(s, "fx", "pid", {})
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) != server


# -- published servers from PyPI ---------------------------------------------------------------


def published(package: str) -> Path:
    """The bin/ of a venv (cached under .venv/test-cache) with ``package`` installed; skips the
    test when it cannot be installed (no network, say)."""
    try:
        return pip_venv(package, [package]) / "bin"
    except InstallFailed as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def time_server() -> Path:
    return published("mcp-server-time") / "mcp-server-time"


def test_published_mcp_server_time(tmp_path: Path, time_server: Path) -> None:
    entry = {
        "name": "time",
        "type": "local",
        "command": [str(time_server), "--local-timezone=UTC"],
        "sandbox": {},  # the default: strict, outbound
    }
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        s.wait_state("time", "running", timeout=30)
        out = s.spctl("tools", "--json")
        tools = {t["tool"] for t in json.loads(out.stdout)["tools"]}
        assert {"get_current_time", "convert_time"} <= tools
        out = spctl_call(s, "time", "get_current_time", {"timezone": "UTC"})
        assert out.returncode == 0, out.stderr
        assert '"timezone": "UTC"' in out.stdout
        out = spctl_call(
            s,
            "time",
            "convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )
        assert out.returncode == 0, out.stderr
        assert "21:00" in out.stdout
        # latency: through spctl's control socket (one connection per call, as an MCP front
        # would keep) versus the SDK client talking to the same server directly
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            s.call("call", "time", "get_current_time", {"timezone": "UTC"})
            times.append(time.perf_counter() - t0)
        via = statistics.median(times) * 1000
        direct = asyncio.run(_direct_latency([str(time_server)]))
        print(
            f"\nget_current_time median: via spctl {via:.2f} ms, direct SDK stdio {direct:.2f} ms"
        )


async def _direct_latency(argv: list[str]) -> float:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=argv[0], args=argv[1:])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            await session.call_tool("get_current_time", {"timezone": "UTC"})
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def test_published_mcp_server_git(tmp_path: Path) -> None:
    git = published("mcp-server-git") / "mcp-server-git"
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "hello.txt").write_text("hi\n")
    entry = {
        "name": "git",
        "type": "local",
        "command": [str(git), "--repository", str(repo)],
        "sandbox": {"writable": [str(repo)]},
    }
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        s.wait_state("git", "running", timeout=30)
        out = spctl_call(s, "git", "git_status", {"repo_path": str(repo)})
        assert out.returncode == 0, out.stderr
        assert "hello.txt" in out.stdout
