"""A hosted server's requests to the client of a call — elicitation/create,
sampling/createMessage, roots/list — through spctl, 2025-11-25 client ↔ 2025-11-25 server
(DESIGN §12.1, first cell): a real ``spctl serve`` with its front, the asks fixture as an SDK
server object (``sdk`` kind) and as a stdio ``command:`` server, and the official SDK client's
``elicitation_callback``, ``sampling_callback`` and ``list_roots_callback`` on ``/mcp``,
``/mcp/<server>`` and ``spctl mcp``; then each bad input."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters

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


@pytest.mark.parametrize("server", SERVERS)
def test_a_modern_client_has_no_back_channel_so_the_request_is_refused(
    serve: Serve, server: str
) -> None:
    url: str = serve.url  # type: ignore[attr-defined]

    async def body() -> None:
        async with Client(url, mode="auto", **CALLBACKS) as c:
            text = _text(await c.call_tool(f"{server}__ask_name", {}))
            assert text.startswith("refused: [-32600] spctl cannot forward elicitation/create:")
            assert "cannot be asked (it has no back channel" in text

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
