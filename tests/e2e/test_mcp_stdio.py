"""``spctl mcp [SERVER]`` over stdio: a real ``spctl serve --no-front``, and the official MCP
SDK client launching ``spctl mcp`` as its server (as a desktop client does), in both protocol
eras; plus the exit codes, with raw pipes where the process itself is under test."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.helpers import SPCTL, Serve, make_extensions, server_entry, wait_for

MODES = ["auto", "legacy"]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


@dataclass
class Env:
    serve: Serve
    markers: dict[str, Path]

    def params(self, *args: str) -> StdioServerParameters:
        """How a desktop client is configured: the venv's spctl, the socket in env."""
        return StdioServerParameters(
            command=SPCTL, args=["mcp", *args], env={"SPCTL_SOCKET": str(self.serve.socket)}
        )


def start_serve(root: Path, names: tuple[str, ...]) -> tuple[Serve, dict[str, Path]]:
    markers = {n: root / f"markers-{n}" for n in names}
    for path in markers.values():
        path.mkdir()
    servers = [server_entry(n, "mcp_echo", config={"markers": str(p)}) for n, p in markers.items()]
    serve = Serve(root, make_extensions(root, [], servers), root / "run" / "control.sock")
    serve.start()
    for name in names:
        serve.wait_state(name, "running")
    return serve, markers


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("stdio")
    serve: Serve | None = None
    try:
        serve, markers = start_serve(root, ("echo", "changer"))
        yield Env(serve, markers)
    finally:
        if serve is not None:
            serve.kill()


def names(result: Any, key: str = "tools") -> list[str]:
    return [item.name for item in getattr(result, key)]


def spctl_mcp(socket: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SPCTL_SOCKET": str(socket)}
    return subprocess.Popen(
        [SPCTL, "mcp", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- through the SDK client ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_listings_are_prefixed_on_the_aggregate_and_original_per_server(
    env: Env, mode: str
) -> None:
    async def body() -> None:
        async with Client(env.params(), mode=mode) as c:
            assert c.server_capabilities.tools is not None
            tools = names(await c.list_tools())
            assert {"echo__echo", "echo__add", "echo__boom", "changer__echo"} <= set(tools)
            assert all("__" in t for t in tools)
            assert "echo__greet" in names(await c.list_prompts(), "prompts")
        async with Client(env.params("echo"), mode=mode) as c:
            assert names(await c.list_tools())[:3] == ["echo", "add", "slow"]
            assert names(await c.list_prompts(), "prompts") == ["greet"]

    anyio.run(body)


@pytest.mark.parametrize(
    ("mode", "args", "prefix"),
    [(m, a, p) for m in MODES for a, p in [((), "echo__"), (("echo",), "")]],
)
def test_calls_errors_and_progress(env: Env, mode: str, args: tuple[str, ...], prefix: str) -> None:
    async def body() -> None:
        async with Client(env.params(*args), mode=mode) as c:
            result = await c.call_tool(prefix + "echo", {"text": "hi"})
            assert result.content[0].text == "hi" and not result.is_error  # type: ignore[union-attr]
            result = await c.call_tool(prefix + "add", {"a": 2, "b": 40})
            assert result.content[0].text == "42"  # type: ignore[union-attr]
            result = await c.call_tool(prefix + "boom", {})
            assert result.is_error
            assert result.content[0].text == "ValueError: boom"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as err:
                await c.call_tool(prefix + "nope", {})
            assert err.value.code == types.INVALID_PARAMS
            assert err.value.message == f"Unknown tool: {prefix}nope"
            seen: list[float] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append(progress)

            result = await c.call_tool(
                prefix + "progress", {"steps": 3}, progress_callback=on_progress
            )
            assert result.structured_content == {"steps": 3}
            assert seen == [1, 2, 3]

    anyio.run(body)


def test_list_changed_reaches_a_legacy_stdio_session(env: Env) -> None:
    async def body() -> None:
        heard = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.set()

        async with Client(env.params("changer"), mode="legacy", message_handler=on_message) as c:
            # A round trip first: the face takes the session in at its (spawned) `initialized`
            # handler, and a change before that is not the session's to hear.
            assert "new1" not in names(await c.list_tools())
            await anyio.to_thread.run_sync(
                lambda: env.serve.call(
                    "mcp", "changer", "fixture/tools_changed", {"add": "new1"}, {}
                )
            )
            with anyio.fail_after(10):
                await heard.wait()
            assert "new1" in names(await c.list_tools())

    anyio.run(body)


# -- the process: stdout, exit codes ---------------------------------------------------------


def test_stdout_carries_only_mcp_and_eof_exits_0(env: Env) -> None:
    proc = spctl_mcp(env.serve.socket, "echo")
    assert proc.stdin is not None and proc.stdout is not None
    call = {"name": "echo", "arguments": {"text": "x"}}
    for message in [
        INIT,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call},
    ]:
        proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()
    # Every line is JSON-RPC (a log line or stray print would fail to parse).
    answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert [m.get("id") for m in answers] == [1, 2]
    assert answers[0]["result"]["serverInfo"]["name"] == "spctl/echo"
    assert answers[1]["result"]["content"][0]["text"] == "x"
    out, err = proc.communicate("", timeout=60)  # closes stdin: the client has gone
    assert (proc.returncode, out) == (0, ""), err


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("nope",), 1, "no MCP server named 'nope'"),
        (("Not_A_Name",), 1, "no MCP server named 'Not_A_Name'"),
    ],
)
def test_unknown_server_exits_1(env: Env, args: tuple[str, ...], code: int, says: str) -> None:
    proc = spctl_mcp(env.serve.socket, *args)
    out, err = proc.communicate("", timeout=60)
    assert (proc.returncode, out) == (code, "")
    assert says in err


def test_no_supervisor_exits_3(tmp_path: Path) -> None:
    proc = spctl_mcp(tmp_path / "absent.sock")
    out, err = proc.communicate("", timeout=60)
    assert (proc.returncode, out) == (3, "")
    assert "no supervisor on" in err and "spctl serve" in err


def test_supervisor_going_away_exits_1_with_no_reconnect(tmp_path: Path) -> None:
    serve, _ = start_serve(tmp_path, ("solo",))
    proc = spctl_mcp(serve.socket, "--no-reconnect")
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(INIT) + "\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())  # serving, with its stdin still open
        assert answer["result"]["serverInfo"]["name"] == "spctl"
        serve.kill()
        wait_for(lambda: proc.poll() is not None, 20, "spctl mcp to exit")
        assert proc.returncode == 1
        assert proc.stderr is not None and "the supervisor went away" in proc.stderr.read()
    finally:
        serve.kill()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_restarted_supervisor_is_reconnected_and_changes_announced(tmp_path: Path) -> None:
    """``systemctl restart spctl`` under a desktop client: the session lives on; calls fail
    clearly while the supervisor is away, work again once it is back, and the client hears
    that the tools changed (the new supervisor has one more server)."""
    first, markers = start_serve(tmp_path, ("solo",))
    params = StdioServerParameters(
        command=SPCTL, args=["mcp"], env={"SPCTL_SOCKET": str(first.socket)}
    )

    async def body() -> None:
        heard = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.set()

        async with Client(params, mode="legacy", message_handler=on_message) as c:
            assert "solo__echo" in names(await c.list_tools())
            await anyio.to_thread.run_sync(first.kill)
            with pytest.raises(MCPError) as err:
                await c.call_tool("solo__echo", {"text": "anyone?"})
            assert "the spctl supervisor is unreachable" in err.value.message
            assert "solo__echo" in names(await c.list_tools())  # the last listing is kept
            extensions = make_extensions(
                tmp_path,
                [],
                [
                    server_entry("solo", "mcp_echo", config={"markers": str(markers["solo"])}),
                    server_entry("extra", "mcp_echo", config={"markers": str(markers["solo"])}),
                ],
            )
            second = Serve(tmp_path, extensions, first.socket)
            second.log_path = tmp_path / "serve2.log"
            try:
                await anyio.to_thread.run_sync(second.start)
                # both servers start at once: wait for each, not only the one the test adds
                for name in ("solo", "extra"):
                    await anyio.to_thread.run_sync(second.wait_state, name, "running")
                with anyio.fail_after(20):
                    await heard.wait()
                    while not {"solo__echo", "extra__echo"} <= set(names(await c.list_tools())):
                        heard = anyio.Event()  # the next announcement (one per server up),
                        with anyio.move_on_after(1):  # or look again: one may have come
                            await heard.wait()  # while we were listing
                result = await c.call_tool("solo__echo", {"text": "back"})
                assert result.content[0].text == "back"  # type: ignore[union-attr]
            finally:
                await anyio.to_thread.run_sync(second.kill)

    try:
        anyio.run(body)
    finally:
        first.kill()
