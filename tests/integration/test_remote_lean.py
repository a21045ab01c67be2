"""The remote kind's lean Streamable HTTP client (worker/mcp/http_peer.py) against real peers
on 127.0.0.1: the SDK's own server in both of its modes (sessions with event streams;
stateless with JSON answers), and a hand-written server (tests/fixtures/remote_faults) that
answers in an older protocol version, with HTTP errors, and cuts event streams mid-way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIXTURES, HttpFixture, serve_fixture, start_http_fixture, wait_for
from tests.integration.harness import WorkerHarness
from tests.integration.test_remote_servers import KEY, TOOLS, Remote, spec, start_remote, text
from worker.protocol import CONNECTION_LOST, EXIT_ERROR, EXIT_OK, INTERNAL_ERROR
from worker.rpc import RpcError

FAULTS = FIXTURES / "remote_faults" / "server.py"


class Faults(HttpFixture):
    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def call(name: str) -> dict[str, Any]:
    return {"name": name, "arguments": {}}


async def failure(h: WorkerHarness, tool: str) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await h.request("mcp", "tools/call", call(tool), {})
    return caught.value


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sessions", "stateless"])
async def test_both_modes_of_the_sdk_server(tmp_path: Path, mode: str) -> None:
    remote: Remote = start_http_fixture(
        Remote,
        FIXTURES / "remote_server" / "server.py",
        tmp_path,
        ["--key", KEY, *(["--stateless"] if mode == "stateless" else [])],
    )
    try:
        auth = {"type": "apikey", "key": KEY}
        async with WorkerHarness(FIXTURES, name="fx", spec=spec(remote, auth)) as h:
            info = await h.ready(timeout=30)
            assert info["metadata"]["protocol"] == "2025-11-25"
            assert [t["name"] for t in info["catalog"]["tools"]] == TOOLS
            add = {"name": "add", "arguments": {"a": 2, "b": 40}}
            assert (await h.request("mcp", "tools/call", add, {}))["content"] == [text("42")]
            read = await h.request("mcp", "resources/read", {"uri": "remote://readme"}, {})
            assert read["contents"][0]["text"] == "hello from the remote fixture"
            boom = await h.request("mcp", "tools/call", call("boom"), {})
            assert boom["isError"] is True  # a tool's failure is a result
            assert await h.request("ping")
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
        stats = remote.stats()
        assert stats["versions"] == ["2025-11-25"]  # MCP-Protocol-Version after the handshake
        assert len(stats["sessions"]) == (1 if mode == "sessions" else 0)
    finally:
        remote.stop()


@pytest.mark.anyio
async def test_an_older_server_errors_and_cut_streams(tmp_path: Path) -> None:
    server = start_http_fixture(Faults, FAULTS, tmp_path, ["--version", "2025-03-26"])
    try:
        fx = {"name": "fx", "kind": "remote", "path": "/", "url": server.url}
        async with WorkerHarness(FIXTURES, name="fx", spec=fx) as h:
            info = await h.ready(timeout=30)
            assert info["metadata"]["protocol"] == "2025-03-26"  # the server's version, kept
            assert info["metadata"]["auth"] == "none"
            assert (await h.request("mcp", "tools/call", call("json"), {}))["content"] == [
                text("json")
            ]
            # an event stream: progress under the caller's token, a log line, the result
            got = await h.request("mcp", "tools/call", call("sse"), {"progressToken": "p"})
            assert got["content"] == [text("sse")]
            assert [p[:3] for m, p in h.notifications if m == "progress"] == [["p", 1, 2]]
            await h.wait_for(lambda: any("half way" in x for x in h.stderr_lines), 5, "log")

            plain = await failure(h, "s500")
            assert (plain.code, plain.message) == (
                INTERNAL_ERROR,
                "the server answered 500 Internal Server Error",
            )
            rpc = await failure(h, "s500rpc")  # the JSON-RPC error in the body wins
            assert (rpc.code, rpc.message) == (-32603, "exploded")
            missing = await failure(h, "s404")
            assert (missing.code, missing.message) == (-32600, "Session terminated")

            cut = await failure(h, "drop")  # the stream is cut before the answer
            assert cut.code == CONNECTION_LOST
            assert cut.message.startswith(f"the connection to {server.url} closed")
            # ...which fails that call only: the session goes on
            assert (await h.request("mcp", "tools/call", call("json"), {}))["content"]
            # a cut stream whose events had ids is resumed with Last-Event-ID
            resumed = await h.request("mcp", "tools/call", call("resume"), {})
            assert resumed["content"] == [text("resumed")]
            assert await h.request("ping")
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
        stats = server.stats()
        assert stats["sessions"] == ["sess-1"]
        assert stats["versions"] == ["2025-03-26"]
        assert stats["last_event_ids"] == ["ev-1"]
        assert stats["deletes"] == ["sess-1"]  # the session is ended on shutdown
        assert "notifications/initialized" in stats["methods"]
    finally:
        server.stop()


@pytest.mark.anyio
async def test_no_session_and_a_failed_handshake(tmp_path: Path) -> None:
    server = start_http_fixture(Faults, FAULTS, tmp_path, ["--no-session"])
    refusing = start_http_fixture(Faults, FAULTS, tmp_path, ["--init-status", "500"])
    try:
        fx = {"name": "fx", "kind": "remote", "path": "/", "url": server.url}
        async with WorkerHarness(FIXTURES, name="fx", spec=fx) as h:
            assert (await h.ready(timeout=30))["metadata"]["protocol"] == "2025-11-25"
            assert (await h.request("mcp", "tools/call", call("sse"), {}))["content"]
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
        stats = server.stats()
        assert (stats["sessions"], stats["deletes"]) == ([], [])  # no session: none sent

        fx = {**fx, "url": refusing.url}
        async with WorkerHarness(FIXTURES, name="fx", spec=fx) as h:
            error = await h.notification("error", timeout=30)
            assert await h.exit_code() == EXIT_ERROR
        assert error["message"] == (
            f"remote MCP server fx: 500 Internal Server Error from {refusing.url}"
        )
    finally:
        server.stop()
        refusing.stop()


@pytest.mark.anyio
async def test_a_call_in_flight_fails_when_the_server_dies(tmp_path: Path) -> None:
    remote = start_remote(tmp_path)
    try:
        auth = {"type": "apikey", "key": KEY}
        async with WorkerHarness(FIXTURES, name="fx", spec=spec(remote, auth)) as h:
            await h.ready(timeout=30)
            slow = {"name": "slow", "arguments": {"seconds": 30}}
            meta = {"progressToken": 1}
            pending = asyncio.ensure_future(h.request("mcp", "tools/call", slow, meta, timeout=30))
            started = lambda: any(m == "progress" for m, _ in h.notifications)  # noqa: E731
            await h.wait_for(started, 10, "the call's first progress")
            remote.stop()  # kill -9 mid-call: the call's event stream is cut
            with pytest.raises(RpcError) as caught:
                await pending
            assert caught.value.code == CONNECTION_LOST
            assert remote.url in caught.value.message
    finally:
        remote.stop()


def test_a_timeout_cancels_the_call_on_the_server(tmp_path: Path) -> None:
    server = start_http_fixture(Faults, FAULTS, tmp_path, [])
    try:
        entry = {"name": "fx", "type": "remote", "url": server.url, "timeout": "1s"}
        with serve_fixture(tmp_path, [], [entry]) as s:
            s.start()
            s.wait_state("fx", "running", timeout=30)
            out = s.spctl("call", "fx", "hang")
            assert out.returncode == 1
            assert "fx: no answer within timeout 1s" in out.stderr
            cancelled = lambda: "notifications/cancelled" in server.stats()["methods"]  # noqa: E731
            wait_for(cancelled, 10, "notifications/cancelled to reach the server")
            out = s.spctl("call", "fx", "json")  # the session goes on
            assert (out.returncode, out.stdout.strip()) == (0, "json"), out.stderr
    finally:
        server.stop()
