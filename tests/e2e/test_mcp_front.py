"""The MCP front over real HTTP: a real ``spctl serve``, the front as its own process, and the
official MCP SDK client in both protocol eras (2026-07-28 stateless, the default; and
``mode="legacy"``, 2025-11-25 sessions over SSE)."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from supervisor.control.client import ControlClient
from supervisor.mcp.guard import parse_listen
from tests.helpers import Serve, make_extensions, pid_gone, server_entry, wait_for

MODES = ["auto", "legacy"]
TOKEN = "s3cret-token"
MAX_BODY = 4096


@dataclass
class Front:
    """``python -m supervisor.mcp.front`` on a free port."""

    proc: subprocess.Popen[str]
    port: int

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()  # our end of its stdout pipe


def start_front(sock: Path, log: Path, *extra: str) -> Front:
    argv = [sys.executable, "-m", "supervisor.mcp.front", "--socket", str(sock)]
    argv += ["--listen", "127.0.0.1:0", *extra]
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = ""
    while not line.startswith("listening on "):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
        if not ready or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"front did not start: {log.read_text()[-2000:]}")
        line = proc.stdout.readline()
    url = line.split()[-1]  # http://127.0.0.1:PORT/mcp
    return Front(proc, parse_listen(url.removeprefix("http://").removesuffix("/mcp"))[1])


@dataclass
class Env:
    serve: Serve
    front: Front
    guarded: Front  # with --token-file and a small --max-body
    markers: dict[str, Path]

    def core(self, *params: Any) -> Any:
        with ControlClient(self.serve.socket, timeout=30) as c:
            return c.call(*params)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("front")
    markers = {n: root / f"markers-{n}" for n in ("echo", "victim", "slowpoke", "changer")}
    for path in markers.values():
        path.mkdir()
    servers = [server_entry(n, "mcp_echo", config={"markers": str(p)}) for n, p in markers.items()]
    servers[2]["timeout"] = "1s"
    serve = Serve(root, make_extensions(root, [], servers), root / "run" / "control.sock")
    fronts: list[Front] = []
    try:
        serve.start()
        for name in markers:
            serve.wait_state(name, "running")
        token_file = root / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        fronts.append(start_front(serve.socket, root / "front.log"))
        fronts.append(
            start_front(
                serve.socket,
                root / "guarded.log",
                *("--token-file", str(token_file), "--max-body", str(MAX_BODY)),
            )
        )
        yield Env(serve, fronts[0], fronts[1], markers)
    finally:
        for front in fronts:
            front.stop()
        serve.kill()


def run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def names(result: Any, key: str = "tools") -> list[str]:
    return [item.name for item in getattr(result, key)]


# -- listings and calls ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_listings_are_prefixed_on_mcp_and_original_per_server(env: Env, mode: str) -> None:
    async def body() -> None:
        async with Client(env.front.url(), mode=mode) as c:
            assert c.server_capabilities.tools is not None
            assert c.server_capabilities.tools.list_changed
            tools = names(await c.list_tools())
            assert {"echo__echo", "echo__add", "victim__slow", "slowpoke__boom"} <= set(tools)
            assert all("__" in t for t in tools)
            assert "echo__greet" in names(await c.list_prompts(), "prompts")
            resources = await c.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["echo://readme"]  # first owner
        async with Client(env.front.url("/mcp/echo"), mode=mode) as c:
            assert names(await c.list_tools())[:3] == ["echo", "add", "slow"]
            assert names(await c.list_prompts(), "prompts") == ["greet"]
            assert (await c.list_resource_templates()).resource_templates == []

    run(body)


@pytest.mark.parametrize(
    ("mode", "path", "prefix"),
    [(m, p, x) for m in MODES for p, x in [("/mcp", "echo__"), ("/mcp/echo", "")]],
)
def test_calls_resources_prompts_and_progress(env: Env, mode: str, path: str, prefix: str) -> None:
    async def body() -> None:
        async with Client(env.front.url(path), mode=mode) as c:
            result = await c.call_tool(prefix + "echo", {"text": "hi"})
            assert result.content[0].text == "hi" and not result.is_error  # type: ignore[union-attr]
            result = await c.call_tool(prefix + "add", {"a": 2, "b": 40})
            assert result.structured_content is None
            assert result.content[0].text == "42"  # type: ignore[union-attr]
            result = await c.call_tool(prefix + "boom", {})
            assert result.is_error
            assert result.content[0].text == "ValueError: boom"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as err:
                await c.call_tool(prefix + "nope", {})
            assert err.value.code == types.INVALID_PARAMS
            assert err.value.message == f"Unknown tool: {prefix}nope"
            read = await c.read_resource("echo://readme")
            assert "mcp-echo" in read.contents[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as err:
                await c.read_resource("nowhere://x")
            assert err.value.code == -32002
            prompt = await c.get_prompt(prefix + "greet", {"name": "Ada"})
            assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]
            seen: list[tuple[float, float | None, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append((progress, total, message))

            result = await c.call_tool(
                prefix + "progress", {"steps": 3}, progress_callback=on_progress
            )
            assert result.structured_content == {"steps": 3}
            assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]

    run(body)


@pytest.mark.parametrize(
    ("mode", "path", "prefix"),
    [(m, p, x) for m in MODES for p, x in [("/mcp", "echo__"), ("/mcp/echo", "")]],
)
def test_completion_reaches_the_server_of_the_prompt(
    env: Env, mode: str, path: str, prefix: str
) -> None:
    async def body() -> None:
        async with Client(env.front.url(path), mode=mode) as c:
            assert c.server_capabilities.completions is not None
            ref = types.PromptReference(type="ref/prompt", name=prefix + "greet")
            done = await c.complete(ref, {"name": "name", "value": "al"})
            assert done.completion.values == ["alice", "alfred"]
            assert done.completion.total == 2
            with pytest.raises(MCPError) as err:  # the server's own error, passed through
                await c.complete(
                    types.ResourceTemplateReference(type="ref/resource", uri="echo://readme"),
                    {"name": "x", "value": ""},
                )
            assert err.value.code == types.INVALID_PARAMS
            assert "no completions" in err.value.message
            with pytest.raises(MCPError) as err:  # no such prompt: named, not forwarded
                await c.complete(
                    types.PromptReference(type="ref/prompt", name=prefix + "nope"),
                    {"name": "x", "value": ""},
                )
            assert err.value.code == types.INVALID_PARAMS
            assert f"Unknown prompt: {prefix}nope" in err.value.message

    run(body)


def test_progress_goes_to_the_call_that_asked(env: Env) -> None:
    """Clients pick their progress tokens independently (the SDK's are request ids, equal
    across clients); concurrent calls must still each get exactly their own reports."""
    seen: dict[str, list[float]] = {}

    async def caller(key: str, mode: str, steps: int) -> None:
        reports = seen.setdefault(key, [])

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            assert total == steps
            reports.append(progress)

        async with Client(env.front.url(), mode=mode) as c:
            for _ in range(3):
                await c.call_tool("echo__progress", {"steps": steps}, progress_callback=on_progress)

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for i, mode in enumerate(MODES * 2):
                tg.start_soon(caller, f"{mode}{i}", mode, 20 + i)

    run(body)
    for i, key in enumerate(f"{mode}{i}" for i, mode in enumerate(MODES * 2)):
        assert seen[key] == list(range(1, 21 + i)) * 3


@pytest.mark.parametrize("mode", MODES)
def test_client_cancel_reaches_the_worker(env: Env, mode: str) -> None:
    marker = env.markers["echo"]
    for f in marker.iterdir():
        f.unlink()

    async def body() -> None:
        async with Client(env.front.url(), mode=mode) as c:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await c.call_tool("echo__slow", {"seconds": 60})

                tg.start_soon(call)
                await anyio.to_thread.run_sync(
                    lambda: wait_for((marker / "slow.started").exists, 20, "slow to start")
                )
                tg.cancel_scope.cancel()
            await anyio.to_thread.run_sync(
                lambda: wait_for((marker / "slow.cancelled").exists, 10, "the worker's cancel")
            )
            result = await c.call_tool("echo__echo", {"text": "still here"})
            assert result.content[0].text == "still here"  # type: ignore[union-attr]

    run(body)


def test_timeout_is_an_error_naming_the_extension(env: Env) -> None:
    async def body() -> None:
        async with Client(env.front.url()) as c:
            with pytest.raises(MCPError) as err:
                await c.call_tool("slowpoke__slow", {"seconds": 30})
        assert err.value.code == -32001
        assert err.value.message == "slowpoke: no answer within timeout 1s"

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_worker_death_is_an_error_naming_the_extension_and_cause(env: Env, mode: str) -> None:
    def alive_pid() -> int | None:  # the last case's kill may not be noticed yet: "running"
        e = env.serve.ext("victim")
        pid = e.get("pid")
        return pid if e["state"] == "running" and pid and not pid_gone(pid) else None

    pid = wait_for(alive_pid, 20, "victim running in a live process")
    marker = env.markers["victim"]
    for f in marker.iterdir():
        f.unlink()

    async def body() -> None:
        async with (
            Client(env.front.url("/mcp/victim"), mode=mode) as c,
            anyio.create_task_group() as tg,
        ):

            async def kill() -> None:
                await anyio.to_thread.run_sync(
                    lambda: wait_for((marker / "slow.started").exists, 20, "slow to start")
                )
                os.kill(pid, signal.SIGKILL)

            tg.start_soon(kill)
            with pytest.raises(MCPError) as err, anyio.fail_after(20):
                await c.call_tool("slow", {"seconds": 60})
        assert err.value.code == -32011
        assert err.value.message.startswith("victim: worker went away during the call (")
        assert "SIGKILL" in err.value.message

    run(body)


# -- list changes ----------------------------------------------------------------------------


def test_list_changed_reaches_a_listening_2026_client(env: Env) -> None:
    async def body() -> None:
        async with Client(env.front.url()) as c, c.listen(tools_list_changed=True) as sub:
            await anyio.to_thread.run_sync(
                lambda: env.core("mcp", "changer", "fixture/tools_changed", {"add": "new1"}, {})
            )
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
            assert "changer__new1" in names(await c.list_tools())

    run(body)


def test_list_changed_reaches_a_legacy_session(env: Env) -> None:
    async def body() -> None:
        heard = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.set()

        async with Client(
            env.front.url("/mcp/changer"), mode="legacy", message_handler=on_message
        ) as c:
            # The client opens its standalone stream in the background: announce again until it
            # is heard (each change is real: one more tool).
            added: list[str] = []
            with anyio.fail_after(20):
                while not heard.is_set():
                    added.append(f"legacy{len(added)}")
                    await anyio.to_thread.run_sync(
                        env.core, "mcp", "changer", "fixture/tools_changed", {"add": added[-1]}, {}
                    )
                    with anyio.move_on_after(1):
                        await heard.wait()
            assert added[-1] in names(await c.list_tools())

    run(body)


def _subscription_lines(env: Env, server: str) -> list[str]:
    path = env.markers[server] / "subscriptions"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_resource_updates_reach_subscribed_legacy_sessions(env: Env) -> None:
    """Two sessions subscribe to the same URI on /mcp (its owner there: "changer"): the server
    is asked once, both hear the update, and the server is told to stop when both are gone."""
    uri = "echo://readme"
    before = len(_subscription_lines(env, "changer"))

    async def body() -> None:
        heard = [anyio.Event(), anyio.Event()]

        def handler(i: int) -> Callable[[Any], Awaitable[None]]:
            async def on_message(message: Any) -> None:
                if isinstance(message, types.ResourceUpdatedNotification):
                    assert str(message.params.uri) == uri
                    heard[i].set()

            return on_message

        async with (
            Client(env.front.url(), mode="legacy", message_handler=handler(0)) as one,
            Client(env.front.url(), mode="legacy", message_handler=handler(1)) as two,
        ):
            assert one.server_capabilities.resources is not None
            assert one.server_capabilities.resources.subscribe
            await one.subscribe_resource(uri)
            await two.subscribe_resource(uri)
            assert _subscription_lines(env, "changer")[before:] == [f"resources/subscribe {uri}"]
            with anyio.fail_after(20):  # the standalone streams open in the background
                while not all(e.is_set() for e in heard):
                    await anyio.to_thread.run_sync(
                        env.core, "mcp", "changer", "fixture/touch", {"uri": uri}, {}
                    )
                    with anyio.move_on_after(1):
                        await heard[0].wait()
                        await heard[1].wait()
            with pytest.raises(MCPError) as err:
                await one.subscribe_resource("nowhere://x")
            assert err.value.code == -32002

    run(body)
    wait_for(
        lambda: (
            _subscription_lines(env, "changer")[before:]
            == [f"resources/subscribe {uri}", f"resources/unsubscribe {uri}"]
        ),
        10,
        "the server told to unsubscribe once both sessions are gone",
    )


def test_resource_updates_reach_a_listening_2026_client(env: Env) -> None:
    uri = "echo://readme"
    before = len(_subscription_lines(env, "echo"))

    async def body() -> None:
        async with (
            Client(env.front.url("/mcp/echo")) as c,
            c.listen(resource_subscriptions=[uri]) as sub,
        ):
            assert _subscription_lines(env, "echo")[before:] == [f"resources/subscribe {uri}"]
            await anyio.to_thread.run_sync(
                env.core, "mcp", "echo", "fixture/touch", {"uri": "echo://other"}, {}
            )
            await anyio.to_thread.run_sync(
                env.core, "mcp", "echo", "fixture/touch", {"uri": uri}, {}
            )
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert type(event).__name__ == "ResourceUpdated"
            assert event.uri == uri  # type: ignore[union-attr]  # not the unsubscribed one

    run(body)
    wait_for(
        lambda: (
            _subscription_lines(env, "echo")[before:]
            == [f"resources/subscribe {uri}", f"resources/unsubscribe {uri}"]
        ),
        10,
        "the server told to unsubscribe once the stream ended",
    )


# -- HTTP: routes and security ---------------------------------------------------------------

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
)


def exchange(
    front: Front, headers: dict[str, str], body: str = INIT, path: str = "/mcp"
) -> http.client.HTTPResponse:
    """One raw POST; the response, read."""
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        base = {
            "Host": f"127.0.0.1:{front.port}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        conn.request("POST", path, body=body, headers={**base, **headers})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def post(front: Front, headers: dict[str, str], body: str = INIT, path: str = "/mcp") -> int:
    return exchange(front, headers, body, path).status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Host": "localhost:{port}"}, 200),
        ({"Origin": "http://localhost:6274"}, 200),
        ({"Origin": "http://127.0.0.1"}, 200),
        ({"Host": "evil.example.com"}, 421),
        ({"Host": "evil.example.com:{port}"}, 421),
        ({"Host": "127.0.0.1:1"}, 421),
        ({"Origin": "http://evil.example.com"}, 403),
        ({"Origin": "http://localhost.evil.example.com"}, 403),
        ({"Origin": "null"}, 403),
    ],
)
def test_host_and_origin_are_checked(env: Env, headers: dict[str, str], status: int) -> None:
    filled = {k: v.format(port=env.front.port) for k, v in headers.items()}
    assert post(env.front, filled) == status


def test_unknown_server_is_404(env: Env) -> None:
    assert post(env.front, {}, path="/mcp/nope") == 404
    assert post(env.front, {}, path="/mcp/Not_A_Name") == 404


def test_a_session_belongs_to_its_url(env: Env) -> None:
    session = exchange(env.front, {}).getheader("mcp-session-id")
    assert session
    ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert post(env.front, headers, ping, "/mcp") == 200
    assert post(env.front, headers, ping, "/mcp/echo") == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
        ({"Authorization": f"bearer {TOKEN}"}, 200),
        ({"Authorization": f"Bearer {TOKEN}", "Host": "evil.example.com"}, 421),
    ],
)
def test_bearer_token(env: Env, headers: dict[str, str], status: int) -> None:
    assert post(env.guarded, headers) == status


def test_oversized_body_is_413(env: Env) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    padded = json.dumps({**json.loads(INIT), "pad": "x" * MAX_BODY})
    assert post(env.guarded, auth, padded) == 413
    assert post(env.guarded, auth) == 200


@pytest.mark.parametrize("mode", MODES)
def test_sdk_client_with_token(env: Env, mode: str) -> None:
    async def body() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
        async with (
            http,
            Client(streamable_http_client(env.guarded.url(), http_client=http), mode=mode) as c,
        ):
            result = await c.call_tool("echo__echo", {"text": "authorised"})
            assert result.content[0].text == "authorised"  # type: ignore[union-attr]
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the SDK's type for a 401 varies
            async with Client(env.guarded.url(), mode=mode) as c:
                await c.list_tools()
        told = "".join(traceback.format_exception(refused.value))
        assert "Missing bearer token" in told, told[-2000:]  # the front's 401, nothing else

    run(body)


# -- lifetime --------------------------------------------------------------------------------


def test_stop_start_and_the_core_going_away(tmp_path: Path) -> None:
    """A stopped server leaves the listing (announced) and its calls say why; it comes back
    when started; when the core goes away, so does the front (exit 1)."""
    servers = [server_entry("echo", "mcp_echo")]
    serve = Serve(
        tmp_path, make_extensions(tmp_path, [], servers), tmp_path / "run" / "control.sock"
    )
    try:
        serve.start()
        serve.wait_state("echo", "running")
        front = start_front(serve.socket, tmp_path / "front.log")
        try:

            async def body() -> None:
                async with Client(front.url()) as c, c.listen(tools_list_changed=True) as sub:
                    assert "echo__echo" in names(await c.list_tools())
                    out = await anyio.to_thread.run_sync(serve.spctl, "stop", "echo")
                    assert out.returncode == 0, out.stderr
                    with anyio.fail_after(10):
                        await sub.__anext__()
                    assert names(await c.list_tools()) == []
                    async with Client(front.url("/mcp/echo")) as one:
                        # 2026-07-28: an empty, valid listing (it was "invalid result")
                        assert names(await one.list_tools()) == []
                        assert names(await one.list_prompts(), "prompts") == []
                        with pytest.raises(MCPError) as err:
                            await one.call_tool("echo", {"text": "x"})
                        assert err.value.code == -32011
                        assert err.value.message == "echo is not running (stopped)"
                        out = await anyio.to_thread.run_sync(serve.spctl, "start", "echo")
                        assert out.returncode == 0, out.stderr
                        with anyio.fail_after(10):
                            await sub.__anext__()
                        result = await one.call_tool("echo", {"text": "back"})
                        assert result.content[0].text == "back"  # type: ignore[union-attr]
                    assert "echo__echo" in names(await c.list_tools())

            run(body)
            assert post(front, {}) == 200
            serve.stop()
            assert front.proc.wait(15) == 1
            assert "control connection lost" in (tmp_path / "front.log").read_text()
        finally:
            front.stop()
    finally:
        serve.kill()


def test_no_core_at_start_exits_3(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "supervisor.mcp.front"),
            *("--socket", str(tmp_path / "none.sock"), "--listen", "127.0.0.1:0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert "no supervisor" in out.stderr
