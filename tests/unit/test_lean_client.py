"""The stdio kind's lean MCP client (:class:`worker.kinds.stdio.StdioServer`) against a scripted
server run as a real subprocess (``fake_mcp_server.py``): handshake, catalog, forwarding,
progress, list_changed, the server's own requests, misbehaviour and the server's end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import supervisor
from worker.kinds.stdio import StdioServer, StdioSpec
from worker.mcp.ask import set_asker
from worker.mcp.jsonrpc import MAX_LINE
from worker.mcp.lean import CLIENT_INFO, PROTOCOL_VERSION
from worker.mcp.park import Seal
from worker.protocol import CONNECTION_LOST, INTERNAL_ERROR, INVALID_PARAMS
from worker.rpc import RpcError

pytestmark = pytest.mark.anyio

FAKE = Path(__file__).with_name("fake_mcp_server.py")
TIMEOUT = 10.0


class Notes:
    """What the client sent to the core (``notify``), awaitable."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        self.items.append(args)
        self._changed.set()

    def of(self, method: str) -> list[tuple[Any, ...]]:
        return [n[1:] for n in self.items if n[0] == method]

    async def wait(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not cond():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def fake(tmp_path: Path, **cfg: Any) -> AsyncIterator[tuple[StdioServer, Notes]]:
    """A started client on the fake server configured by ``cfg``; closed afterwards."""
    async with unstarted(tmp_path, **cfg) as (server, notes):
        async with asyncio.timeout(TIMEOUT):
            await server.start()
        yield server, notes


@asynccontextmanager
async def unstarted(tmp_path: Path, **cfg: Any) -> AsyncIterator[tuple[StdioServer, Notes]]:
    notes = Notes()
    spec = StdioSpec((sys.executable, str(FAKE), json.dumps(cfg)), cwd=str(tmp_path))
    server = StdioServer(spec, notes)
    try:
        yield server, notes
    finally:
        async with asyncio.timeout(TIMEOUT):
            await server.close()


async def call(
    server: StdioServer, tool: str, meta: dict[str, Any] | None = None, **args: Any
) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await server.mcp("tools/call", {"name": tool, "arguments": args}, meta)


async def hanging(server: StdioServer) -> asyncio.Future[Any]:
    """A call of the tool ``hang`` (never answered), once the server has it."""
    pending = asyncio.ensure_future(server.mcp("tools/call", {"name": "hang"}))
    async with asyncio.timeout(TIMEOUT):
        while "hang" not in (await call(server, "state"))["calls"]:
            pass
    return pending


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}]


# -- handshake and catalog ----------------------------------------------------------------------


async def test_handshake_records_the_servers_version_and_sends_initialized(tmp_path: Path) -> None:
    async with fake(tmp_path, version="2024-11-05") as (server, _):
        assert server.metadata == {
            "command": [sys.executable, str(FAKE), json.dumps({"version": "2024-11-05"})],
            "server": "fake",
            "version": "1.2.3",
            "protocol": "2024-11-05",
        }
        state = await call(server, "state")
        assert state["init"] == {
            "protocolVersion": PROTOCOL_VERSION,
            # what spctl can forward to a call's client (worker.mcp.ask.OFFERED)
            "capabilities": {"elicitation": {"form": {}, "url": {}}, "sampling": {}, "roots": {}},
            "clientInfo": {"name": "spctl", "version": supervisor.__version__},
        }
        assert state["seen"][:3] == ["initialize", "notifications/initialized", "tools/list"]


def test_client_version_is_spctls() -> None:
    assert CLIENT_INFO["version"] == supervisor.__version__


@pytest.mark.parametrize(
    ("capabilities", "lists"),
    [
        ({"tools": {}}, ["tools/list"]),
        ({"resources": {}}, ["resources/list", "resources/templates/list"]),
        ({"prompts": {"listChanged": True}, "logging": {}}, ["prompts/list"]),
        ({}, []),
        ({"tools": None}, []),  # null is not a capability
    ],
)
async def test_only_announced_lists_are_fetched(
    tmp_path: Path, capabilities: dict[str, Any], lists: list[str]
) -> None:
    async with fake(tmp_path, capabilities=capabilities) as (server, _):
        seen = (await call(server, "state"))["seen"]
        assert [m for m in seen if m.endswith("/list")] == lists


async def test_catalog_follows_every_page_and_stops_on_a_repeated_cursor(tmp_path: Path) -> None:
    capabilities: dict[str, Any] = {"tools": {}, "resources": {}, "prompts": {}}
    pages = {"tools/list": [["a", "b"], ["c"], ["d"]], "prompts/list": [["p1"], ["p2"]]}
    cfg: dict[str, Any] = {"capabilities": capabilities, "pages": pages, "loop": ["resources/list"]}
    async with unstarted(tmp_path, **cfg) as (server, _):
        async with asyncio.timeout(TIMEOUT):
            catalog = await server.start()
    assert [t["name"] for t in catalog["tools"]] == ["a", "b", "c", "d"]
    assert catalog["tools"][0] == {"name": "a"}  # nulls dropped, as the SDK's dumps did
    assert [p["name"] for p in catalog["prompts"]] == ["p1", "p2"]
    assert len(catalog["resources"]) == 2  # "same" came back a second time: stop
    assert catalog["resourceTemplates"] == []


# -- forwarding ---------------------------------------------------------------------------------


async def test_results_come_back_as_sent(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, _):
        result = await call(server, "echo", text="hi")
        assert result == {"content": text("hi"), "extra": {"kept": [1, None]}}
        assert await server.mcp("ping") == {}
        assert await server.mcp("tools/list", {}) == {
            "tools": [{"name": "echo", "description": None}]
        }


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("tools/call", {"name": "fail"}, -32042, "it failed"),  # the server's, data kept
        ("no/such", {}, -32601, "Method not found"),  # the server's to refuse
        ("tools/call", {"name": "bad_error"}, INTERNAL_ERROR, "malformed error from the stdio"),
        ("tools/call", {"name": "plain"}, INTERNAL_ERROR, "bad tools/call result from the stdio"),
        ("tools/call", {"arguments": {}}, INVALID_PARAMS, "tools/call: name: Field required"),
        ("prompts/get", None, INVALID_PARAMS, "prompts/get: name: Field required"),
        ("resources/read", {"uri": 5}, INVALID_PARAMS, "resources/read: uri: must be a string"),
        ("initialize", {}, INVALID_PARAMS, "mcp: initialize is the worker's business"),
        ("notifications/initialized", {}, INVALID_PARAMS, "is the worker's business"),
    ],
)
async def test_errors(
    tmp_path: Path, method: str, params: dict[str, Any] | None, code: int, message: str
) -> None:
    async with fake(tmp_path) as (server, _):
        with pytest.raises(RpcError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await server.mcp(method, params, {})
        assert caught.value.code == code
        assert message in caught.value.message
        if code == -32042:
            assert caught.value.data == {"why": "asked to"}
        assert (await call(server, "echo", text="after"))["content"] == text("after")


async def test_progress_reaches_the_caller_under_its_token(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, notes):
        result = await call(server, "progress", {"progressToken": "caller-1"})
        # on the wire the token is the request id; reports for other tokens, bad reports and
        # reports after the answer are dropped
        assert result["content"][0]["text"].startswith("token ")
        assert notes.of("progress") == [("caller-1", 1, 2, "step 1"), ("caller-1", 2, 2, "step 2")]
        await call(server, "progress")  # no token: nothing reported
        await call(server, "progress", {"progressToken": True})  # not a token
        assert len(notes.of("progress")) == 2


async def test_list_changed_refetches_and_publishes_once_armed(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, notes):
        await call(server, "changed")
        server.arm()  # the change came before the supervisor had the first catalog
        await notes.wait(lambda: len(notes.of("catalog")) == 1)
        assert [t["name"] for t in notes.of("catalog")[0][0]["tools"]] == ["echo", "extra1"]
        await call(server, "batch")  # list_changed inside a batch, beside the answer
        await call(server, "changed")
        await notes.wait(lambda: len(notes.of("catalog")) == 2)
        assert [t["name"] for t in notes.of("catalog")[1][0]["tools"]] == [
            "echo",
            "extra1",
            "extra2",
        ]


async def test_resource_updates_go_to_the_supervisor(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, notes):
        await call(server, "touch", uri="file:///x")
        await notes.wait(lambda: notes.of("resource_updated") == [("file:///x",)])
        assert notes.of("resource_updated") == [("file:///x",)]  # the bad one was dropped


async def test_the_servers_own_requests_are_answered(tmp_path: Path) -> None:
    """A call without a client to ask (no ``ask`` meta): roots/list is refused, saying why."""
    async with fake(tmp_path) as (server, _):
        answers = (await call(server, "ask"))["answers"]
        assert answers["s1"] == {"jsonrpc": "2.0", "id": "s1", "result": {}}
        assert answers["7"]["error"] == {
            "code": -32600,
            "message": "spctl cannot forward roots/list: the client of this tools/call call "
            "cannot be asked (it has no back channel: a 2026-07-28 client, `spctl call`, or a "
            "client that is not MCP)",
        }
        assert answers["8"]["error"] == {"code": -32601, "message": "Method not found: no/such"}


async def test_the_servers_request_goes_to_the_client_of_the_call(tmp_path: Path) -> None:
    asked: list[tuple[Any, ...]] = []

    async def asker(token: int, method: str, params: Any) -> Any:
        asked.append((token, method, params))
        return {"roots": [{"uri": "file:///r"}]}

    set_asker(asker)
    try:
        async with fake(tmp_path) as (server, _):
            meta = {"ask": {"token": 41, "capabilities": {"roots": {}}}}
            answers = (await call(server, "ask", meta))["answers"]
            assert answers["7"] == {
                "jsonrpc": "2.0",
                "id": 7,
                "result": {"roots": [{"uri": "file:///r"}]},
            }
            assert asked == [(41, "roots/list", {})]
            # a client that declared no roots: refused, naming the capability
            meta = {"ask": {"token": 42, "capabilities": {"sampling": {}}}}
            answers = (await call(server, "ask", meta))["answers"]
            assert "did not declare the roots capability" in answers["7"]["error"]["message"]
            assert len(asked) == 1
    finally:
        set_asker(None)


async def test_cancelling_a_call_tells_the_server(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, _):
        pending = await hanging(server)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        state = await call(server, "state")
        async with asyncio.timeout(TIMEOUT):
            while not state["cancelled"]:
                state = await call(server, "state")
        assert state["cancelled"] == [state["calls"]["hang"]]
        assert server.peer.pending == 0


async def test_garbage_and_strays_are_skipped(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with fake(tmp_path) as (server, _):
        assert (await call(server, "garbage"))["content"] == text("still fine")
        assert (await call(server, "twice"))["content"] == text("first")
        assert (await call(server, "log"))["content"] == text("logged")
        assert (await call(server, "echo", text="ok"))["content"] == text("ok")
    err = capfd.readouterr().err
    assert "not a JSON-RPC message from the stdio server: b'this is not json'" in err
    assert "not a JSON-RPC message from the stdio server: 2" in err  # [1, 2]: a batch of junk
    assert "the stdio server reports an error: {'code': -32700" in err
    assert "server log [warning] fake: careful now" in err


async def test_an_overlong_line_is_skipped(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with fake(tmp_path) as (server, _):
        result = await call(server, "huge", size=MAX_LINE)
        assert result["content"] == text("after the huge line")
    assert (
        f"a line of more than {MAX_LINE} bytes from the stdio server: skipped"
        in capfd.readouterr().err
    )


# -- the server's end ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "how"),
    [
        ("exit", "exited with status 3"),
        ("killed", "was killed by SIGTERM"),
        ("close_stdout", "closed its stdout"),
    ],
)
async def test_pending_calls_fail_when_the_server_ends(tmp_path: Path, tool: str, how: str) -> None:
    async with fake(tmp_path) as (server, _):
        waiting = await hanging(server)
        with pytest.raises(RpcError) as caught:
            await call(server, tool)
        assert (caught.value.code, caught.value.message) == (
            CONNECTION_LOST,
            f"the stdio server {how}",
        )
        with pytest.raises(RpcError, match=how):
            await waiting
        with pytest.raises(RpcError, match=how):  # and every later call, at once
            await call(server, "echo")
        if tool != "close_stdout":
            assert server.exited.result() == how


async def test_an_answer_written_before_exiting_is_delivered(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, _):
        assert (await call(server, "answer_then_exit"))["content"] == text("bye")
        async with asyncio.timeout(TIMEOUT):
            assert await server.exited == "exited with status 0"


@pytest.mark.parametrize(
    ("init", "raises", "message"),
    [
        ("exit", RuntimeError, "the stdio server exited with status 5 during the handshake"),
        ("error", RpcError, "Unsupported protocol version"),
    ],
)
async def test_a_failed_handshake_fails_start(
    tmp_path: Path, init: str, raises: type[Exception], message: str
) -> None:
    async with unstarted(tmp_path, init=init) as (server, _):
        with pytest.raises(raises, match=message):
            async with asyncio.timeout(TIMEOUT):
                await server.start()


async def test_close_asks_the_server_to_exit_then_kills_it(tmp_path: Path) -> None:
    async with fake(tmp_path) as (server, _):
        pending = await hanging(server)
        await server.close()
        assert server.exited.result() == "exited with status 0"  # it saw its stdin end
        with pytest.raises(RpcError, match="the stdio server exited with status 0"):
            await pending
        with pytest.raises(RpcError, match="shutting down"):
            await server.mcp("ping")
    async with fake(tmp_path, linger=True) as (server, _):
        await server.close()
        async with asyncio.timeout(TIMEOUT):
            assert await server.exited == "was killed by SIGKILL"


async def test_close_after_the_hosts_wait_was_cancelled(tmp_path: Path) -> None:
    """The host awaits ``exited`` in its lifecycle task and cancels that task on shutdown,
    which cancels the future itself; closing must not care."""
    async with fake(tmp_path) as (server, _):

        async def host_waits() -> str:
            return await server.exited

        waiter = asyncio.ensure_future(host_waits())
        await call(server, "echo")  # the waiter is parked on the future by now
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert server.exited.cancelled()
        pending = await hanging(server)
        await server.close()
        assert server.how_ended == "exited with status 0"
        with pytest.raises(RpcError, match="the stdio server exited with status 0"):
            await pending


def test_the_stdio_kind_imports_no_sdk() -> None:
    code = (
        "import sys, worker.host, worker.kinds.stdio\n"
        "bad = [m for m in sys.modules if m == 'mcp' or m.startswith("
        "('mcp.', 'mcp_types', 'pydantic', 'worker.mcp.client', 'anyio'))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"roots": {}},
}


async def test_a_modern_clients_question_is_parked_and_answered_by_its_retry(
    tmp_path: Path,
) -> None:
    async with fake(tmp_path) as (server, _):
        first = await call(server, "ask", MODERN)
        assert first["resultType"] == "input_required"
        [(key, request)] = first["inputRequests"].items()
        assert request == {"method": "roots/list", "params": {}}
        roots = {"roots": [{"uri": "file:///r"}]}
        retry = {
            "name": "ask",
            "inputResponses": {key: roots},
            "requestState": first["requestState"],
        }
        async with asyncio.timeout(TIMEOUT):
            done = await server.mcp("tools/call", retry, MODERN)
        assert done["answers"]["7"] == {"jsonrpc": "2.0", "id": 7, "result": roots}
        assert done["answers"]["8"]["error"]["code"] == -32601  # no/such: not a question


async def test_a_parked_question_without_a_retry_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the deadline the server's call is cancelled and its question answered with an
    error; the state no longer opens."""
    monkeypatch.setattr("worker.mcp.lean.PARK_TTL", 0.2)
    async with fake(tmp_path) as (server, _):
        first = await call(server, "ask", MODERN)
        ask_id = (await call(server, "state"))["calls"]["ask"]
        async with asyncio.timeout(TIMEOUT):
            while ask_id not in (await call(server, "state"))["cancelled"]:
                await asyncio.sleep(0.05)  # polling the server's own record, with a deadline
        retry = {"name": "ask", "inputResponses": {}, "requestState": first["requestState"]}
        with pytest.raises(RpcError) as err:
            await server.mcp("tools/call", retry, MODERN)
        assert err.value.message == "Invalid or expired requestState"
        assert not server._exchanges and not server._calls


def test_a_seal_opens_only_its_own_unexpired_states() -> None:
    seal = Seal()
    state = seal.close({"x": 1, "e": 2_000_000_000.0})
    assert seal.open(state, now=1_000.0)["x"] == 1
    for bad in [
        state.replace("spctl1.", "spctl2."),
        state[:-2] + ("AA" if not state.endswith("AA") else "BB"),
        "garbage",
        None,
        Seal().close({"x": 1, "e": 2_000_000_000.0}),  # another worker's (another key)
    ]:
        with pytest.raises(RpcError, match="Invalid or expired requestState"):
            seal.open(bad, now=1_000.0)
    with pytest.raises(RpcError, match="Invalid or expired requestState"):
        seal.open(state, now=2_000_000_001.0)
