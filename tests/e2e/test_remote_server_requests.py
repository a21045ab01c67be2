"""A remote server's requests to the client of a call — elicitation/create,
sampling/createMessage, roots/list — through spctl (DESIGN §12.1, the legacy-remote cell): a
real ``spctl serve`` with its front, the asks fixture served over Streamable HTTP on
127.0.0.1 (``tests/fixtures/remote_asks``: the SDK's server, sessions with event streams) as a
``type: remote`` entry, and the official SDK client's callbacks on ``/mcp``, ``/mcp/<server>``
and ``spctl mcp``, legacy (asked on the call's stream) and auto (2026-07-28: parked, asked as
``input_required``). Each fixture tool returns what the client answered, so a passing call
proves the answer reached the remote server. Unlike a stdio server's, a remote server's
request says which call it belongs to (the POST whose event stream carried it): two calls in
flight on one worker each get their own client's answer. Then each bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters

from tests.e2e.test_server_requests import CALLBACKS, _all_three, _changed_roots, _sample, _text
from tests.helpers import (
    FIXTURES,
    SPCTL,
    HttpFixture,
    Serve,
    make_extensions,
    start_http_fixture,
    wait_for,
)
from worker.mcp.ask import OFFERED

SCRIPT = FIXTURES / "remote_asks" / "server.py"
REMOTE = "remoteask"
LISTER = "remotelister"


class Asks(HttpFixture):
    """The running asks fixture over Streamable HTTP."""

    markers: Path

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


def _start(root: Path, name: str, *more: str) -> Asks:
    markers = root / f"markers-{name}"
    markers.mkdir()
    fixture = start_http_fixture(Asks, SCRIPT, root, ["--markers", str(markers), *more])
    fixture.markers = markers
    return fixture


class World:
    def __init__(self, serve: Serve, url: str, asks: Asks, lister: Asks) -> None:
        self.serve, self.url, self.asks, self.lister = serve, url, asks, lister

    def face(self, aggregate: bool) -> tuple[str, str]:
        """The URL and the tool prefix of the aggregate (``/mcp``) or the server's own face."""
        if aggregate:
            return self.url, f"{REMOTE}__"
        return self.url.replace("/mcp", f"/mcp/{REMOTE}"), ""

    def spctl_mcp(self, *args: str) -> StdioServerParameters:
        return StdioServerParameters(command=SPCTL, args=["mcp", *args], env=self.serve.env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("remote-asks")
    asks = _start(root, REMOTE)
    lister = _start(root, LISTER, "--elicit-on-list")
    entries = [
        {"name": REMOTE, "type": "remote", "url": asks.url},
        {"name": LISTER, "type": "remote", "url": lister.url},
    ]
    s = Serve(root, make_extensions(root, [], entries), root / "run" / "control.sock")
    s.front = True
    s.extra_args = ["--listen", "127.0.0.1:0"]
    try:
        s.start()
        for name in (REMOTE, LISTER):
            s.wait_state(name, "running", timeout=60)

        def front_url() -> str | None:
            st = s.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        yield World(s, wait_for(front_url, 30, "the MCP front"), asks, lister)
    finally:
        s.kill()
        asks.stop()
        lister.stop()


def test_the_worker_declares_what_it_can_forward(world: World) -> None:
    """Servers that list tools only for capable clients see elicitation, sampling, roots."""
    assert world.asks.stats()["capabilities"] == [dict(OFFERED)]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("aggregate", [True, False], ids=["mcp", "mcp-server"])
def test_elicitation_sampling_and_roots_reach_the_client_and_back(
    world: World, aggregate: bool, mode: str
) -> None:
    """legacy: asked on the call's own stream; auto (2026-07-28): parked, and the SDK client's
    input loop answers ``input_required`` and retries. Either way the remote server gets the
    client's answer (its tools return it)."""
    url, prefix = world.face(aggregate)

    async def body() -> None:
        async with Client(url, mode=mode, **CALLBACKS) as c:
            assert c.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            await _all_three(c, prefix)
            assert _text(await c.call_tool(prefix + "echo", {"text": "after"})) == "after"

    anyio.run(body)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_through_spctl_mcp(world: World, mode: str) -> None:
    async def body() -> None:
        async with Client(world.spctl_mcp(), mode=mode, **CALLBACKS) as c:
            await _all_three(c, f"{REMOTE}__")
        async with Client(world.spctl_mcp(REMOTE), mode=mode, **CALLBACKS) as c:
            await _all_three(c, "")

    anyio.run(body)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_two_calls_in_flight_each_get_their_own_clients_answer(world: World, mode: str) -> None:
    """Two clients call ``ask_name`` on one remote worker at once; neither answers until both
    were asked, so both requests are in flight together (a stdio server's would be refused):
    each server request reaches the client of its own call, and each answer its own call."""
    url, prefix = world.face(True)
    asked = {"Ada": anyio.Event(), "Grace": anyio.Event()}
    results: dict[str, str] = {}

    def answering(name: str) -> Any:
        async def elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
            asked[name].set()
            for event in asked.values():
                await event.wait()
            return types.ElicitResult(action="accept", content={"name": name})

        return elicit

    async def one(name: str) -> None:
        async with Client(url, mode=mode, elicitation_callback=answering(name)) as c:
            results[name] = _text(await c.call_tool(prefix + "ask_name", {}))

    async def body() -> None:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in asked:
                    tg.start_soon(one, name)

    anyio.run(body)
    assert results == {"Ada": "hello Ada", "Grace": "hello Grace"}


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_client_without_the_capability_gets_the_request_refused(world: World, mode: str) -> None:
    url, prefix = world.face(False)

    async def body() -> None:
        async with Client(url, mode=mode, sampling_callback=_sample) as c:
            assert _text(await c.call_tool(prefix + "ask_name", {})) == (
                "refused: [-32600] the client of this tools/call call did not declare the "
                "elicitation capability: spctl cannot forward elicitation/create to it"
            )
            assert "roots capability" in _text(await c.call_tool(prefix + "roots", {}))
            sampled = _text(await c.call_tool(prefix + "sample", {"prompt": "x"}))
            assert sampled == "model says: x"

    anyio.run(body)


def test_a_malformed_request_of_the_server_is_refused_naming_the_field(world: World) -> None:
    url, prefix = world.face(True)

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            text = _text(await c.call_tool(prefix + "ask_malformed", {}))
            malformed = "refused: [-32602] malformed elicitation/create request: params."
            assert text.startswith(malformed)
            assert "message: Field required" in text

    anyio.run(body)


def test_a_server_that_elicits_during_tools_list_is_refused(world: World) -> None:
    outcome = world.lister.markers / "list.outcome"
    wait_for(outcome.exists, 20, "the server's list-time elicitation")
    assert outcome.read_text() == (
        "refused: [-32600] spctl cannot forward elicitation/create: no client call is in "
        "flight to ask (a server may ask its client only while serving that client's "
        "request; spctl fetches lists itself)"
    )

    async def body() -> None:  # its tools are listed all the same
        async with Client(world.url.replace("/mcp", f"/mcp/{LISTER}"), **CALLBACKS) as c:
            assert "ask_name" in {t.name for t in (await c.list_tools()).tools}

    anyio.run(body)


def test_a_request_on_the_get_stream_is_refused_and_logged(world: World) -> None:
    """A request the server sends on its standalone GET stream belongs to no call: even with
    a call in flight whose client could answer, it is refused, and the log says why."""
    url, prefix = world.face(True)
    wait_for(lambda: world.asks.stats()["get_streams"] >= 1, 20, "the worker's GET stream")

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            assert _text(await c.call_tool(prefix + "ask_unrelated", {})) == (
                "refused: [-32600] spctl cannot forward elicitation/create: it came on the "
                "server's standalone GET stream, which belongs to no client call; a server "
                "must ask on the response stream of the request it serves (SEP-2260)"
            )
            assert _text(await c.call_tool(prefix + "ask_name", {})) == "hello Ada"

    anyio.run(body)
    wait_for(lambda: "standalone GET stream" in world.serve.log_path.read_text(), 10, "the log")


def test_an_answer_after_the_call_was_cancelled_goes_nowhere(world: World) -> None:
    """The remote server (which waits for its answer even so) is told at once that the call
    ended; the user's late answer reaches nobody, and the session goes on."""
    url, prefix = world.face(True)
    answered = world.asks.markers / "ask.answered"
    answered.unlink(missing_ok=True)

    async def body() -> None:
        asked, release = anyio.Event(), anyio.Event()

        async def late(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
            asked.set()
            await release.wait()
            return types.ElicitResult(action="accept", content={"name": "Late"})

        async with Client(url, mode="legacy", elicitation_callback=late) as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.call_tool, prefix + "ask_wait", {})
                await asked.wait()
                tg.cancel_scope.cancel()  # the client cancels the call
            await anyio.to_thread.run_sync(lambda: wait_for(answered.exists, 20, "the outcome"))
            assert answered.read_text() == (
                "refused: [-32600] the tools/call call ended before its client answered "
                "elicitation/create: the answer would go nowhere"
            )
            release.set()  # the user answers, too late
            assert _text(await c.call_tool(prefix + "echo", {"text": "after"})) == "after"

    anyio.run(body)


def test_roots_list_changed_reaches_the_remote_server_and_its_roots_list_the_client(
    world: World,
) -> None:
    """The client's notification is POSTed to the remote server; the roots/list it then sends
    on its standalone GET stream (no call to ride) goes to that client."""
    url, _ = world.face(False)
    wait_for(lambda: world.asks.stats()["get_streams"] >= 1, 20, "the worker's GET stream")

    async def body() -> None:
        async with Client(url, mode="legacy", **CALLBACKS) as c:
            assert await _changed_roots(c, world.serve, REMOTE) == "file:///work/a"

    anyio.run(body)
