"""A hosted server's requests to the client of a call — elicitation/create,
sampling/createMessage, roots/list — through spctl, 2025-11-25 client ↔ 2025-11-25 server
(DESIGN §12.1, first cell): a real ``spctl serve`` with its front, the asks fixture as an SDK
server object (``sdk`` kind) and as a stdio ``command:`` server, and the official SDK client's
``elicitation_callback``, ``sampling_callback`` and ``list_roots_callback`` on ``/mcp``,
``/mcp/<server>`` and ``spctl mcp``; then each bad input."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tests.helpers import SPCTL, Serve, make_extensions, server_entry, wait_for

SERVERS = ("sdkask", "stdioask")


def _entries(root: Path) -> list[dict[str, Any]]:
    markers = {n: root / f"markers-{n}" for n in (*SERVERS, "lister", "sdklister")}
    for path in markers.values():
        path.mkdir()
    stdio = {"command": [sys.executable, "server.py"]}

    def env(name: str, **more: str) -> dict[str, str]:
        return {"MARKERS": str(markers[name]), **more}

    return [
        server_entry("sdkask", "mcp_asks", env=env("sdkask")),
        server_entry("stdioask", "mcp_asks", env=env("stdioask"), **stdio),
        server_entry("lister", "mcp_asks", env=env("lister", ELICIT_ON_LIST="1"), **stdio),
        server_entry("sdklister", "mcp_asks", env=env("sdklister", ELICIT_ON_LIST="1")),
    ]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("asks")
    s = Serve(root, make_extensions(root, [], _entries(root)), root / "run" / "control.sock")
    s.front = True
    s.extra_args = ["--listen", "127.0.0.1:0"]
    s.start()
    try:
        for name in (*SERVERS, "lister", "sdklister"):
            s.wait_state(name, "running", timeout=60)

        def front_url() -> str | None:
            st = s.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        s.url = wait_for(front_url, 30, "the MCP front")  # type: ignore[attr-defined]
        yield s
    finally:
        s.kill()


def _markers(serve: Serve, server: str) -> Path:
    return serve.root / f"markers-{server}"


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def _elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
    assert isinstance(params, types.ElicitRequestFormParams)
    assert params.message == "What is your name?"
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _sample(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
    prompt = params.messages[0].content
    assert isinstance(prompt, types.TextContent)
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(text=f"model says: {prompt.text}"),
        model="fixture-model",
    )


async def _roots(ctx: ClientRequestContext) -> Any:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/a", name="a")])


CALLBACKS: dict[str, Any] = {
    "elicitation_callback": _elicit,
    "sampling_callback": _sample,
    "list_roots_callback": _roots,
}


async def _all_three(c: Client, prefix: str) -> None:
    assert _text(await c.call_tool(prefix + "ask_name", {})) == "hello Ada"
    assert _text(await c.call_tool(prefix + "sample", {"prompt": "hi"})) == "model says: hi"
    assert _text(await c.call_tool(prefix + "roots", {})) == "file:///work/a"


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_elicitation_sampling_and_roots_reach_the_client(
    serve: Serve, server: str, aggregate: bool
) -> None:
    url: str = serve.url  # type: ignore[attr-defined]
    if not aggregate:
        url = url.replace("/mcp", f"/mcp/{server}")
    prefix = f"{server}__" if aggregate else ""

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            await _all_three(c, prefix)

    anyio.run(body)


def test_through_spctl_mcp(serve: Serve) -> None:
    async def body() -> None:
        params = StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env)
        async with Client(params, mode="legacy", **CALLBACKS) as c:
            for server in SERVERS:
                await _all_three(c, f"{server}__")
        params = StdioServerParameters(command=SPCTL, args=["mcp", "stdioask"], env=serve.env)
        async with Client(params, mode="legacy", **CALLBACKS) as c:
            await _all_three(c, "")

    anyio.run(body)


def test_the_request_rides_the_calls_own_stream(serve: Serve) -> None:
    """On the wire (a 2025-11-25 session by hand): the server's elicitation/create arrives on
    the SSE response of the POST that carried the call, never on the standalone GET stream;
    the client's answer is a POST of its own, and the call's result follows on that stream."""
    url: str = serve.url  # type: ignore[attr-defined]
    accept = {"Accept": "application/json, text/event-stream"}

    def rpc(rid: int | None, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if rid is not None:
            message["id"] = rid
        return message

    async def events(response: Any) -> Any:
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip():
                yield json.loads(line[5:])

    async def body() -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            init = rpc(
                1,
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"elicitation": {"form": {}}},
                    "clientInfo": {"name": "by-hand", "version": "0"},
                },
            )
            r = await http.post(url, json=init, headers=accept)
            assert r.status_code == 200, r.text
            session = {**accept, "Mcp-Session-Id": r.headers["mcp-session-id"]}
            session["Mcp-Protocol-Version"] = "2025-11-25"
            r = await http.post(
                url, json=rpc(None, "notifications/initialized", {}), headers=session
            )
            assert r.status_code == 202
            get_stream: list[Any] = []

            async def standalone() -> None:
                get = {k: v for k, v in session.items() if k != "Accept"}
                get["Accept"] = "text/event-stream"
                async with http.stream("GET", url, headers=get) as response:
                    async for event in events(response):
                        get_stream.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(standalone)
                call = rpc(2, "tools/call", {"name": "stdioask__ask_name", "arguments": {}})
                async with http.stream("POST", url, json=call, headers=session) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    seen = events(response)
                    asked = await anext(seen)
                    assert asked["method"] == "elicitation/create"
                    assert asked["params"]["message"] == "What is your name?"
                    answer = {
                        "jsonrpc": "2.0",
                        "id": asked["id"],
                        "result": {"action": "accept", "content": {"name": "Wire"}},
                    }
                    r = await http.post(url, json=answer, headers=session)
                    assert r.status_code == 202
                    result = await anext(seen)
                    assert result["id"] == 2
                    assert result["result"]["content"][0]["text"] == "hello Wire"
                tg.cancel_scope.cancel()
            assert not [e for e in get_stream if e.get("method") == "elicitation/create"]

    anyio.run(body)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_a_client_without_the_capability_gets_the_request_refused(
    serve: Serve, server: str
) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="legacy", sampling_callback=_sample) as c:
            text = _text(await c.call_tool(f"{server}__ask_name", {}))
            assert text == (
                "refused: [-32600] the client of this tools/call call did not declare the "
                "elicitation capability: spctl cannot forward elicitation/create to it"
            )
            assert "roots capability" in _text(await c.call_tool(f"{server}__roots", {}))
            # what it did declare still works
            sampled = _text(await c.call_tool(f"{server}__sample", {"prompt": "x"}))
            assert sampled == "model says: x"

    anyio.run(body)


def test_a_modern_client_calling_ctx_elicit_on_the_sdk_path_gets_the_sdks_refusal(
    serve: Serve,
) -> None:
    """On its own 2026-07-28 path the SDK server refuses a mid-call ``ctx.elicit`` itself (a
    tool there answers ``input_required`` through the SDK's resolvers instead)."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            assert _text(await c.call_tool("sdkask__ask_name", {})) == (
                "refused: [-32600] Cannot send 'elicitation/create': this transport "
                "context has no back-channel for server-initiated requests."
            )

    anyio.run(body)


@pytest.mark.parametrize("server", SERVERS)
def test_a_malformed_request_of_the_server_is_refused_naming_the_field(
    serve: Serve, server: str
) -> None:
    """The front checks a request it forwards against MCP's schema (a stdio server's line);
    the SDK kind's in-process client session checks it even before (the SDK's own words)."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            text = _text(await c.call_tool(f"{server}__ask_malformed", {}))
            if server == "stdioask":
                assert text.startswith(
                    "refused: [-32602] malformed elicitation/create request: params."
                )
                assert "message: Field required" in text
            else:
                assert text == "refused: [-32602] Invalid request parameters"

    anyio.run(body)


@pytest.mark.parametrize("server", ["lister", "sdklister"])
def test_a_server_that_elicits_during_tools_list_is_refused(serve: Serve, server: str) -> None:
    outcome = _markers(serve, server) / "list.outcome"
    wait_for(outcome.exists, 20, "the server's list-time elicitation")
    assert outcome.read_text() == (
        "refused: [-32600] spctl cannot forward elicitation/create: no client call is in "
        "flight to ask (a server may ask its client only while serving that client's "
        "request; spctl fetches lists itself)"
    )
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:  # its tools are listed all the same; a client's list is ours
        async with Client(url.replace("/mcp", f"/mcp/{server}"), mode="legacy", **CALLBACKS) as c:
            assert "ask_name" in {t.name for t in (await c.list_tools()).tools}

    anyio.run(body)


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_with_several_calls_in_flight(serve: Serve, server: str) -> None:
    """A stdio line does not say which call it belongs to: with two in flight, refused (and
    logged). The SDK kind knows the call exactly and forwards it."""
    url: str = serve.url  # type: ignore[attr-defined]
    started = _markers(serve, server) / "slow.started"
    started.unlink(missing_ok=True)

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c, anyio.create_task_group() as tg:
            tg.start_soon(c.call_tool, f"{server}__slow", {"seconds": 60})
            await anyio.to_thread.run_sync(lambda: wait_for(started.exists, 20, "slow started"))
            text = _text(await c.call_tool(f"{server}__ask_name", {}))
            tg.cancel_scope.cancel()
        if server == "sdkask":
            assert text == "hello Ada"
        else:
            assert text == (
                "refused: [-32600] spctl cannot forward elicitation/create: 2 requests to this "
                "stdio server are in flight and a stdio message does not say which one it "
                "belongs to; retry when the server serves one call at a time"
            )

    anyio.run(body)
    if server == "stdioask":
        wait_for(lambda: "2 requests to this stdio server" in serve.log_path.read_text(), 10)


@pytest.mark.parametrize("server", SERVERS)
def test_an_answer_after_the_call_was_cancelled_goes_nowhere(serve: Serve, server: str) -> None:
    """The server (which waits for its answer even so) is told at once that the call ended;
    the user's late answer reaches nobody, and the session goes on."""
    url: str = serve.url  # type: ignore[attr-defined]
    answered = _markers(serve, server) / "ask.answered"
    answered.unlink(missing_ok=True)

    async def body() -> None:
        asked, release = anyio.Event(), anyio.Event()

        async def late(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
            asked.set()
            await release.wait()
            return types.ElicitResult(action="accept", content={"name": "Late"})

        async with Client(url, mode="legacy", elicitation_callback=late) as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.call_tool, f"{server}__ask_wait", {})
                await asked.wait()
                tg.cancel_scope.cancel()  # the client cancels the call
            await anyio.to_thread.run_sync(lambda: wait_for(answered.exists, 20, "the outcome"))
            assert answered.read_text() == (
                "refused: [-32600] the tools/call call ended before its client answered "
                "elicitation/create: the answer would go nowhere"
            )
            release.set()  # the user answers, too late
            assert _text(await c.call_tool(f"{server}__echo", {"text": "after"})) == "after"
        assert answered.read_text().startswith("refused:")

    anyio.run(body)


# -- 2026-07-28 client ↔ 2026-07-28 server ------------------------------------------------------

RESOLVED = "hello Ada; model says: hi; file:///work/a"


@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_modern_input_required_is_relayed_and_the_retry_reaches_the_server(
    serve: Serve, aggregate: bool
) -> None:
    """The SDK server answers a 2026-07-28 call with ``input_required``; spctl relays it as is
    and the client's retry (a new id, ``inputResponses``, the same ``requestState``) goes to
    the same server by the tool's name; the SDK client's input loop then gets the result."""
    url: str = serve.url  # type: ignore[attr-defined]
    if not aggregate:
        url = url.replace("/mcp", "/mcp/sdkask")
    tool = "sdkask__greet_resolved" if aggregate else "greet_resolved"

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            assert c.protocol_version == "2026-07-28"
            assert _text(await c.call_tool(tool, {"topic": "hi"})) == RESOLVED
            # by hand: the first answer, as the server gave it
            first = await c.session.call_tool(tool, {"topic": "hi"}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert first.input_requests is not None
            (key, request), *_ = first.input_requests.items()
            assert isinstance(request, types.ElicitRequest)
            assert request.params.message == "What is your name?"
            state = first.request_state
            assert state
            answer = types.ElicitResult(action="accept", content={"name": "Grace"})
            second = await c.session.call_tool(
                tool,
                {"topic": "hi"},
                input_responses={key: answer},
                request_state=state,
                allow_input_required=True,
            )
            assert isinstance(second, types.InputRequiredResult)  # the rest, not the name
            assert second.request_state and second.request_state != state
            kinds = sorted(type(r).__name__ for r in (second.input_requests or {}).values())
            assert kinds == ["CreateMessageRequest", "ListRootsRequest"]

    anyio.run(body)


def test_the_modern_path_keeps_progress(serve: Serve) -> None:
    url: str = serve.url  # type: ignore[attr-defined]
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def body() -> None:
        async with Client(url, mode="auto") as c:
            result = await c.call_tool("sdkask__count", {"steps": 2}, progress_callback=on_progress)
            assert _text(result) == "counted"

    anyio.run(body)
    assert seen == [(1, 2, "step 1"), (2, 2, "step 2")]


def test_modern_client_through_spctl_mcp(serve: Serve) -> None:
    async def body() -> None:
        params = StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env)
        async with Client(params, mode="auto", **CALLBACKS) as c:
            assert c.protocol_version == "2026-07-28"
            result = await c.call_tool("sdkask__greet_resolved", {"topic": "hi"})
            assert _text(result) == RESOLVED

    anyio.run(body)


def test_a_legacy_client_gets_the_same_tool_by_requests_mid_call(serve: Serve) -> None:
    """The same resolver tool, called by a 2025-11-25 session: the server asks mid-call."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            result = await c.call_tool("sdkask__greet_resolved", {"topic": "hi"})
            assert _text(result) == RESOLVED

    anyio.run(body)


def test_modern_client_without_the_capability_gets_the_servers_own_error(serve: Serve) -> None:
    """spctl passes the client's own capabilities on: the server refuses (-32021) to ask for
    what the client did not declare."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", sampling_callback=_sample) as c:
            with pytest.raises(MCPError) as err:
                await c.call_tool("sdkask__greet_resolved", {"topic": "hi"})
            assert err.value.code == -32021
            assert "elicitation" in err.value.message

    anyio.run(body)


async def _first_round(c: Client, tool: str) -> tuple[str, str]:
    first = await c.session.call_tool(tool, {"topic": "hi"}, allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult)
    assert first.input_requests is not None
    assert first.request_state is not None
    return next(iter(first.input_requests)), first.request_state


def test_a_forged_request_state_gets_the_servers_error(serve: Serve) -> None:
    """spctl relays ``requestState`` as is; the server that minted it checks it (the SDK seals
    it): a forged one is refused by the server, and the client hears why."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            key, state = await _first_round(c, "sdkask__greet_resolved")
            forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
            answer = types.ElicitResult(action="accept", content={"name": "Mallory"})
            with pytest.raises(MCPError) as err:
                await c.session.call_tool(
                    "sdkask__greet_resolved",
                    {"topic": "hi"},
                    input_responses={key: answer},
                    request_state=forged,
                    allow_input_required=True,
                )
            assert err.value.message == "Invalid or expired requestState"

    anyio.run(body)


def test_a_retry_to_a_server_that_restarted_meanwhile_is_refused_not_hung(serve: Serve) -> None:
    """The retry goes to the server's new worker, which cannot open the old requestState (its
    key died with the old process): a clear error at once."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            key, state = await _first_round(c, "sdkask__greet_resolved")
            before = serve.ext("sdkask")["pid"]
            restarted = await anyio.to_thread.run_sync(lambda: serve.spctl("restart", "sdkask"))
            assert restarted.returncode == 0, restarted.stderr
            assert serve.ext("sdkask")["pid"] != before
            answer = types.ElicitResult(action="accept", content={"name": "Ada"})
            with anyio.fail_after(20), pytest.raises(MCPError) as err:
                await c.session.call_tool(
                    "sdkask__greet_resolved",
                    {"topic": "hi"},
                    input_responses={key: answer},
                    request_state=state,
                    allow_input_required=True,
                )
            assert err.value.message == "Invalid or expired requestState"
            assert _text(await c.call_tool("sdkask__greet_resolved", {"topic": "hi"})) == RESOLVED

    anyio.run(body)


# -- 2025-11-25 client → a tool only a 2026-07-28 server serves (input_required by hand) ----


@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_a_legacy_client_is_asked_each_round_of_an_input_required_tool(
    serve: Serve, aggregate: bool
) -> None:
    """The worker serves the tool on the server's 2026-07-28 path and answers each
    ``input_required`` round by asking the 2025-11-25 client on its call's stream."""
    url: str = serve.url  # type: ignore[attr-defined]
    if not aggregate:
        url = url.replace("/mcp", "/mcp/sdkask")
    tool = "sdkask__hand_name" if aggregate else "hand_name"
    asked: list[str] = []

    async def elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def body() -> None:
        async with Client(url, mode="legacy", elicitation_callback=elicit) as c:
            assert _text(await c.call_tool(tool, {})) == "hello Ada (accept)"
        async with Client(url, mode="auto", elicitation_callback=elicit) as c:  # relayed
            assert _text(await c.call_tool(tool, {})) == "hello Ada (accept)"

    anyio.run(body)
    assert asked == ["What is your name?", "Really Ada?"] * 2


@pytest.mark.parametrize("face", ["mcp", "mcp-server", "spctl-mcp"])
def test_a_legacy_client_answers_elicitation_sampling_and_roots_of_an_input_required_round(
    serve: Serve, face: str
) -> None:
    url: str = serve.url  # type: ignore[attr-defined]
    target: Any = {
        "mcp": url,
        "mcp-server": url.replace("/mcp", "/mcp/sdkask"),
        "spctl-mcp": StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env),
    }[face]
    tool = "hand_all" if face == "mcp-server" else "sdkask__hand_all"

    async def body() -> None:
        async with Client(target, mode="legacy", **CALLBACKS) as c:
            assert _text(await c.call_tool(tool, {"topic": "hi"})) == RESOLVED

    anyio.run(body)


def test_input_required_rounds_for_a_legacy_client_are_bounded(serve: Serve) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    rounds: list[str] = []

    async def again(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        rounds.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def body() -> None:
        async with Client(url, mode="legacy", elicitation_callback=again) as c:
            with pytest.raises(MCPError) as err:
                await c.call_tool("sdkask__hand_forever", {})
            assert err.value.message == (
                "the SDK server still asked for input after 10 rounds: given up"
            )

    anyio.run(body)
    assert rounds == ["Once more?"] * 10


def test_a_legacy_client_without_the_capability_is_not_asked_a_round(serve: Serve) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="legacy", sampling_callback=_sample) as c:
            with pytest.raises(MCPError) as err:
                await c.call_tool("sdkask__hand_name", {})
            assert err.value.code == -32600
            assert err.value.message == (
                "the client of this tools/call call did not declare the elicitation "
                "capability: spctl cannot forward elicitation/create to it"
            )

    anyio.run(body)


# -- 2026-07-28 client ↔ 2025-11-25 server: parked, asked as input_required -------------------


@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_a_stdio_servers_request_reaches_a_modern_client_as_input_required(
    serve: Serve, aggregate: bool
) -> None:
    """The stdio server asks mid-call; its 2026-07-28 client gets ``input_required`` (the SDK
    client's input loop answers it and retries) and the server its answer."""
    url: str = serve.url  # type: ignore[attr-defined]
    if not aggregate:
        url = url.replace("/mcp", "/mcp/stdioask")

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            assert c.protocol_version == "2026-07-28"
            await _all_three(c, "stdioask__" if aggregate else "")
            assert (
                _text(
                    await c.call_tool(("stdioask__" if aggregate else "") + "echo", {"text": "e"})
                )
                == "e"
            )

    anyio.run(body)


def test_a_stdio_servers_request_reaches_a_modern_client_through_spctl_mcp(serve: Serve) -> None:
    async def body() -> None:
        params = StdioServerParameters(command=SPCTL, args=["mcp", "stdioask"], env=serve.env)
        async with Client(params, mode="auto", **CALLBACKS) as c:
            assert c.protocol_version == "2026-07-28"
            await _all_three(c, "")

    anyio.run(body)


def test_parked_questions_by_hand(serve: Serve) -> None:
    """The first answer names the server's request under a key; the sealed state opens only
    for the same call; a forged one is refused; the retry delivers the answer."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            first = await c.session.call_tool("stdioask__ask_name", {}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert first.input_requests is not None
            [(key, request)] = first.input_requests.items()
            assert key.startswith("elicitation-")
            assert isinstance(request, types.ElicitRequest)
            assert request.params.message == "What is your name?"
            state = first.request_state
            assert state is not None and state.startswith("spctl1.")
            answer = {key: types.ElicitResult(action="accept", content={"name": "Hand"})}
            for name, bad in [
                (
                    "stdioask__ask_name",
                    state[:-3] + ("xyz" if not state.endswith("xyz") else "abc"),
                ),
                ("stdioask__ask_wait", state),  # another tool's call: not this state's
            ]:
                with pytest.raises(MCPError) as err:
                    await c.session.call_tool(name, {}, input_responses=answer, request_state=bad)
                assert err.value.message == "Invalid or expired requestState"
            done = await c.session.call_tool(
                "stdioask__ask_name", {}, input_responses=answer, request_state=state
            )
            assert _text(done) == "hello Hand"
            with pytest.raises(MCPError) as err:  # used up
                await c.session.call_tool(
                    "stdioask__ask_name", {}, input_responses=answer, request_state=state
                )
            assert err.value.message == "Invalid or expired requestState"

    anyio.run(body)


def test_a_modern_client_without_the_capability_is_not_asked(serve: Serve) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", sampling_callback=_sample) as c:
            assert _text(await c.call_tool("stdioask__ask_name", {})) == (
                "refused: [-32600] the client of this tools/call call did not declare the "
                "elicitation capability: spctl cannot forward elicitation/create to it"
            )
            assert _text(await c.call_tool("stdioask__sample", {"prompt": "y"})) == "model says: y"

    anyio.run(body)


def test_a_parked_retry_after_the_worker_restarted_is_refused(serve: Serve) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            first = await c.session.call_tool("stdioask__ask_name", {}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert first.input_requests is not None
            key = next(iter(first.input_requests))
            restarted = await anyio.to_thread.run_sync(lambda: serve.spctl("restart", "stdioask"))
            assert restarted.returncode == 0, restarted.stderr
            answer = {key: types.ElicitResult(action="accept", content={"name": "Late"})}
            with anyio.fail_after(20), pytest.raises(MCPError) as err:
                await c.session.call_tool(
                    "stdioask__ask_name",
                    {},
                    input_responses=answer,
                    request_state=first.request_state,
                )
            assert err.value.message == "Invalid or expired requestState"
            assert _text(await c.call_tool("stdioask__ask_name", {})) == "hello Ada"

    anyio.run(body)


# -- a published server ----------------------------------------------------------------------


def test_server_everything_elicits_samples_and_lists_roots_through_spctl(tmp_path: Path) -> None:
    """The TypeScript SDK's reference server lists its elicitation, sampling and roots tools
    only to a client that declared those capabilities: the worker does, so they are listed,
    and each one's request reaches the SDK client and its answer the server: on the call's
    stream for a 2025-11-25 client, parked and asked as ``input_required`` for a 2026-07-28
    one."""
    from tests.integration.test_published_servers import EVERYTHING_NPM, npm_server

    command = npm_server(EVERYTHING_NPM)
    entry = {"name": "everything", "type": "local", "command": [*command, "stdio"], "sandbox": {}}
    s = Serve(tmp_path, make_extensions(tmp_path, [], [entry]), tmp_path / "run" / "control.sock")
    s.front, s.extra_args = True, ["--listen", "127.0.0.1:0"]
    s.start()
    try:
        s.wait_state("everything", "running", timeout=60)

        def front_url() -> str | None:
            st = s.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        url = wait_for(front_url, 30, "the MCP front").replace("/mcp", "/mcp/everything")
        asked: list[str] = []

        async def decline(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
            asked.append(params.message)
            return types.ElicitResult(action="decline")

        async def body() -> None:
            callbacks = {**CALLBACKS, "elicitation_callback": decline}
            for mode in ("legacy", "auto"):  # auto: 2026-07-28, the requests parked
                asked.clear()
                await _everything(url, mode, callbacks, asked)

        anyio.run(body)
    finally:
        s.kill()


async def _everything(url: str, mode: str, callbacks: dict[str, Any], asked: list[str]) -> None:
    async with Client(url, mode=mode, **callbacks) as c:

        async def listed() -> set[str]:
            return {t.name for t in (await c.list_tools()).tools}

        wanted = {
            "trigger-elicitation-request",
            "trigger-sampling-request",
            "get-roots-list",
        }
        with anyio.fail_after(20):  # registered after initialize, then list_changed
            while not wanted <= await listed():
                await anyio.sleep(0.05)
        result = await c.call_tool("trigger-elicitation-request", {})
        assert asked == ["Please provide inputs for the following fields:"]
        assert '"action": "decline"' in "".join(_text_all(result))
        result = await c.call_tool("trigger-sampling-request", {"prompt": "hi"})
        text = "".join(_text_all(result))
        assert "model says: Resource trigger-sampling-request context: hi" in text
        result = await c.call_tool("get-roots-list", {})
        assert "URI: file:///work/a" in "".join(_text_all(result))


def _text_all(result: Any) -> list[str]:
    return [str(getattr(item, "text", "")) for item in result.content]


# -- URL-mode elicitation: notifications/elicitation/complete --------------------------------


async def _url_elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
    assert isinstance(params, types.ElicitRequestURLParams)
    assert params.url == "https://example.com/login"
    return types.ElicitResult(action="accept")


def _completions() -> tuple[list[str], Any, anyio.Event]:
    got: list[str] = []
    arrived = anyio.Event()

    async def handler(message: Any) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            got.append(message.params.elicitation_id)
            arrived.set()

    return got, handler, arrived


@pytest.mark.parametrize("server", SERVERS)
def test_url_elicitation_completes_on_the_calls_stream(serve: Serve, server: str) -> None:
    """The completion a server notifies while the call is in flight reaches the client that
    was asked, on that call's stream."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        got, handler, arrived = _completions()
        async with Client(
            url, mode="legacy", elicitation_callback=_url_elicit, message_handler=handler
        ) as c:
            args = {"elicitation_id": f"during-{server}", "complete": True}
            assert _text(await c.call_tool(f"{server}__ask_url", args)) == "accept"
            with anyio.fail_after(10):
                await arrived.wait()
            assert got == [f"during-{server}"]

    anyio.run(body)


@pytest.mark.parametrize("server", SERVERS)
def test_url_elicitation_completed_after_the_call_reaches_the_session(
    serve: Serve, server: str
) -> None:
    """A completion notified after the asking call ended goes on the session's standalone
    stream of the client that was asked, and to no other client."""
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        got, handler, arrived = _completions()
        other, other_handler, _ = _completions()
        async with (
            Client(
                url, mode="legacy", elicitation_callback=_url_elicit, message_handler=handler
            ) as c,
            Client(url, mode="legacy", message_handler=other_handler) as bystander,
        ):
            args = {"elicitation_id": f"after-{server}", "complete": False}
            assert _text(await c.call_tool(f"{server}__ask_url", args)) == "accept"
            done = await bystander.call_tool(
                f"{server}__complete_url", {"elicitation_id": f"after-{server}"}
            )
            assert _text(done) == "notified"
            with anyio.fail_after(10):
                await arrived.wait()
            assert got == [f"after-{server}"]
            assert other == []

    anyio.run(body)


@pytest.mark.parametrize("server", SERVERS)
def test_url_elicitation_to_a_form_only_client_is_refused(serve: Serve, server: str) -> None:
    """A client that declared elicitation without ``url`` (form implied) is never sent a
    URL-mode request: the server gets a clear error."""
    url: str = serve.url  # type: ignore[attr-defined]

    def rpc(rid: int | None, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        return message if rid is None else {**message, "id": rid}

    async def body() -> None:
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient(timeout=30) as http:
            init = rpc(
                1,
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"elicitation": {}},
                    "clientInfo": {"name": "form-only", "version": "1"},
                },
            )
            r = await http.post(url, json=init, headers=accept)
            session = {**accept, "Mcp-Session-Id": r.headers["mcp-session-id"]}
            session["Mcp-Protocol-Version"] = "2025-11-25"
            await http.post(url, json=rpc(None, "notifications/initialized", {}), headers=session)
            call = rpc(
                2,
                "tools/call",
                {
                    "name": f"{server}__ask_url",
                    "arguments": {"elicitation_id": "x", "complete": True},
                },
            )
            r = await http.post(url, json=call, headers=session)
            text = r.text
            assert "did not declare URL-mode elicitation" in text, text
            assert '"method":"elicitation/create"' not in text.replace(" ", "")

    anyio.run(body)


def test_url_elicitation_completes_through_spctl_mcp(serve: Serve) -> None:
    """On ``spctl mcp`` (one stdio stream) the completion reaches the client during the call
    and after it."""

    async def body() -> None:
        send, receive = anyio.create_memory_object_stream[str](16)

        async def handler(message: Any) -> None:
            if isinstance(message, types.ElicitCompleteNotification):
                await send.send(message.params.elicitation_id)

        params = StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env)
        async with (
            send,
            receive,
            Client(
                params, mode="legacy", elicitation_callback=_url_elicit, message_handler=handler
            ) as c,
        ):
            for server in SERVERS:
                args = {"elicitation_id": f"now-{server}", "complete": True}
                assert _text(await c.call_tool(f"{server}__ask_url", args)) == "accept"
                with anyio.fail_after(10):
                    assert await receive.receive() == f"now-{server}"
                args = {"elicitation_id": f"later-{server}", "complete": False}
                assert _text(await c.call_tool(f"{server}__ask_url", args)) == "accept"
                later = {"elicitation_id": f"later-{server}"}
                assert _text(await c.call_tool(f"{server}__complete_url", later)) == "notified"
                with anyio.fail_after(10):
                    assert await receive.receive() == f"later-{server}"

    anyio.run(body)


# -- the client's notifications/roots/list_changed -------------------------------------------


async def _send_roots_changed(c: Client) -> None:
    with warnings.catch_warnings():  # roots are deprecated from 2026-07-28, still legacy's
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await c.send_roots_list_changed()


def _roots_outcome(serve: Serve, server: str, what: str) -> str:
    marker = _markers(serve, server) / "roots.changed"
    text = wait_for(lambda: marker.exists() and marker.read_text(), 15, what)
    marker.unlink()
    return str(text)


async def _changed_roots(c: Client, serve: Serve, server: str) -> str:
    """Send roots/list_changed until the server's roots/list gets an answer from the client:
    the SDK client opens its standalone GET stream in the background after the handshake,
    and until it is open the server's request is refused (the test of that is below)."""
    deadline = anyio.current_time() + 15
    while True:
        await _send_roots_changed(c)
        outcome = await anyio.to_thread.run_sync(
            _roots_outcome, serve, server, f"{server}'s roots/list after roots/list_changed"
        )
        if "no standalone stream" not in outcome or anyio.current_time() > deadline:
            return outcome
        await anyio.sleep(0.05)  # retry pacing for a condition with a deadline


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_roots_list_changed_reaches_the_server_and_its_roots_list_the_client(
    serve: Serve, server: str, aggregate: bool
) -> None:
    """The client's notification reaches the server (on /mcp: the servers this session
    called), and the server's roots/list outside any call is answered by that client."""
    url: str = serve.url  # type: ignore[attr-defined]
    other = next(s for s in SERVERS if s != server)
    if not aggregate:
        url = url.replace("/mcp", f"/mcp/{server}")
    prefix = f"{server}__" if aggregate else ""

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            assert _text(await c.call_tool(prefix + "echo", {"text": "hi"})) == "hi"
            assert await _changed_roots(c, serve, server) == "file:///work/a"
        # on /mcp the session never called the other server: it was not told
        assert not (_markers(serve, other) / "roots.changed").exists()

    anyio.run(body)


def test_roots_list_changed_through_spctl_mcp(serve: Serve) -> None:
    """The aggregate over stdio: the server this session called hears it, the other not."""

    async def body() -> None:
        params = StdioServerParameters(command=SPCTL, args=["mcp"], env=serve.env)
        async with Client(params, mode="legacy", **CALLBACKS) as c:
            assert _text(await c.call_tool("stdioask__echo", {"text": "hi"})) == "hi"
            await _send_roots_changed(c)
            outcome = await anyio.to_thread.run_sync(
                _roots_outcome, serve, "stdioask", "roots/list after roots/list_changed"
            )
            assert outcome == "file:///work/a"
        assert not (_markers(serve, "sdkask") / "roots.changed").exists()

    anyio.run(body)


def test_roots_list_changed_of_a_client_without_roots_goes_nowhere(serve: Serve) -> None:
    url: str = serve.url.replace("/mcp", "/mcp/sdkask")  # type: ignore[attr-defined]

    def logged() -> bool:
        return any("declared no roots capability" in str(e.get("line")) for e in serve.logs())

    async def body() -> None:
        async with Client(url, mode="legacy") as c:
            assert _text(await c.call_tool("echo", {"text": "hi"})) == "hi"
            await _send_roots_changed(c)
            await anyio.to_thread.run_sync(
                wait_for, logged, 15, "the front's word that it did not forward"
            )
        assert not (_markers(serve, "sdkask") / "roots.changed").exists()

    anyio.run(body)


@pytest.mark.parametrize("server", SERVERS)
def test_a_roots_list_after_the_session_closed_is_refused(serve: Serve, server: str) -> None:
    url: str = serve.url.replace("/mcp", f"/mcp/{server}")  # type: ignore[attr-defined]
    hold = _markers(serve, server) / "roots.hold"
    held = _markers(serve, server) / "roots.held"
    hold.write_text("")
    try:

        async def body() -> None:
            async with Client(url, mode="legacy", **CALLBACKS) as c:
                await _send_roots_changed(c)
                await anyio.to_thread.run_sync(wait_for, held.exists, 15, "the server to hold")

        anyio.run(body)  # the client's session is closed (DELETE) on the way out
    finally:
        hold.unlink()
        held.unlink(missing_ok=True)
    outcome = _roots_outcome(serve, server, "the held roots/list's outcome")
    assert outcome.startswith("refused: [-32600]"), outcome
    assert "session that sent notifications/roots/list_changed has ended" in outcome


def test_a_roots_list_without_a_get_stream_is_refused(serve: Serve) -> None:
    """By hand: a session that declared roots but opened no standalone GET stream; the
    server's roots/list after its notification would be dropped by the SDK: it is refused."""
    url: str = serve.url.replace("/mcp", "/mcp/stdioask")  # type: ignore[attr-defined]
    accept = {"Accept": "application/json, text/event-stream"}

    async def body() -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"roots": {"listChanged": True}},
                    "clientInfo": {"name": "by-hand", "version": "0"},
                },
            }
            r = await http.post(url, json=init, headers=accept)
            assert r.status_code == 200, r.text
            session = {**accept, "Mcp-Session-Id": r.headers["mcp-session-id"]}
            session["Mcp-Protocol-Version"] = "2025-11-25"
            for method in ("notifications/initialized", "notifications/roots/list_changed"):
                note = {"jsonrpc": "2.0", "method": method}
                r = await http.post(url, json=note, headers=session)
                assert r.status_code == 202, r.text

    anyio.run(body)
    outcome = _roots_outcome(serve, "stdioask", "the refused roots/list")
    assert outcome.startswith("refused: [-32600]"), outcome
    assert "no standalone stream (GET) open" in outcome
