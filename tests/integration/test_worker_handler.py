"""The handler kind (an MCP server as ``create_handler``) in a real ``python -m worker``."""

from __future__ import annotations

import asyncio
import statistics
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import FIXTURES, WorkerHarness
from worker.protocol import EXIT_ERROR, EXIT_LOAD_ERROR, EXIT_OK
from worker.rpc import RpcError

pytestmark = pytest.mark.anyio

ECHO = FIXTURES / "mcp_echo"
TOOLS = ["echo", "add", "slow", "sync_slow", "boom", "progress"]
MODES = ["async", "sync"]
HEAVY = ("mcp", "anyio", "httpx", "pydantic", "starlette", "supervisor", "structlog", "yaml")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def echo_harness(tmp_path: Path, mode: str = "async", **config: Any) -> WorkerHarness:
    config = {"markers": str(tmp_path), "events": str(tmp_path / "events"), **config}
    return WorkerHarness(
        ECHO, name="mcp-echo", kind="handler", config={"sync": mode == "sync", **config}
    )


async def call(h: WorkerHarness, tool: str, meta: dict[str, Any] | None = None, **args: Any) -> Any:
    return await h.request("mcp", "tools/call", {"name": tool, "arguments": args}, meta or {})


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def events(tmp_path: Path) -> list[str]:
    path = tmp_path / "events"
    return path.read_text().splitlines() if path.exists() else []


class TestLifecycle:
    """ready carries the catalog; shutdown runs the module's hook and exits 0."""

    async def test_ready_carries_the_catalog(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path) as h:
            info = await h.ready()
            assert info["kind"] == "handler"
            assert info["pid"] == h.pid
            assert info["metadata"] == {
                "name": "mcp-echo",
                "version": "1.0.0",
                "description": "echoes, adds and misbehaves on request",
                "capabilities": ["tools", "resources", "prompts"],
            }
            catalog = info["catalog"]
            assert [t["name"] for t in catalog["tools"]] == TOOLS  # two pages, in order
            assert catalog["tools"][0]["inputSchema"]["properties"] == {"text": {"type": "string"}}
            assert catalog["resources"] == [
                {"uri": "echo://readme", "name": "readme", "mimeType": "text/plain"}
            ]
            assert catalog["resourceTemplates"] == []  # METHOD_NOT_FOUND → empty, quietly
            assert [p["name"] for p in catalog["prompts"]] == ["greet"]
            assert events(tmp_path) == ["create_handler", "initialize"]
            assert await h.request("shutdown") is None
            assert await h.exit_code() == EXIT_OK
        assert events(tmp_path) == ["create_handler", "initialize", "shutdown"]
        assert not [line for line in h.stderr_lines if "templates" in line]

    async def test_shutdown_cancels_calls_in_flight(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path) as h:
            await h.ready()
            pending = asyncio.create_task(call(h, "slow", seconds=60))
            started = tmp_path / "slow.started"
            await h.wait_for(started.exists, what="slow started", poll=0.005)
            await h.request("shutdown")
            assert await h.exit_code() == EXIT_OK
            assert (tmp_path / "slow.cancelled").exists()
            with pytest.raises(RpcError) as caught:
                await pending
            assert (caught.value.code, caught.value.message) == (
                -32603,
                "the server is shutting down",
            )
        assert events(tmp_path)[-1] == "shutdown"

    async def test_worker_never_imports_an_mcp_sdk(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path) as h:
            await h.ready()
            assert await call(h, "progress", steps=2)
            modules = (await h.request("mcp", "fixture/modules", {}, {}))["modules"]
        assert "msgpack" in modules  # the list is real
        assert [m for m in modules if m.split(".")[0] in HEAVY] == []


class TestCalls:
    """tools/call results and errors, resources/read and prompts/get, both handler styles."""

    @pytest.mark.parametrize("mode", MODES)
    async def test_results(self, tmp_path: Path, mode: str) -> None:
        structured = {"steps": 2}
        cases: list[tuple[str, dict[str, Any], Any]] = [
            ("echo", {"text": "hi ✓"}, text("hi ✓")),
            ("add", {"a": 2, "b": 3.5}, text("5.5")),
            ("progress", {"steps": 2}, {**text('{"steps": 2}'), "structuredContent": structured}),
            ("boom", {}, {**text("ValueError: boom"), "isError": True}),
            ("add", {"a": 1}, {**text("KeyError: 'b'"), "isError": True}),
        ]
        async with echo_harness(tmp_path, mode) as h:
            await h.ready()
            for tool, args, expected in cases:
                assert await call(h, tool, **args) == expected, tool
            read = await h.request("mcp", "resources/read", {"uri": "echo://readme"}, {})
            assert read["contents"][0]["text"].startswith("mcp-echo: a test server")
            prompt = {"name": "greet", "arguments": {"name": "Ada"}}
            got = await h.request("mcp", "prompts/get", prompt, {})
            assert got["messages"] == [
                {"role": "user", "content": {"type": "text", "text": "Hello, Ada!"}}
            ]
        await h.line("ValueError: boom", stream="stderr")  # the traceback is in the log

    @pytest.mark.parametrize("mode", MODES)
    async def test_protocol_errors_keep_their_code(self, tmp_path: Path, mode: str) -> None:
        cases: list[tuple[str, dict[str, Any], int, str, Any]] = [
            ("tools/call", {"name": "nope"}, -32602, "Unknown tool: nope", None),
            ("resources/read", {"uri": "x://y"}, -32002, "Resource not found", {"uri": "x://y"}),
            ("logging/setLevel", {}, -32601, "Method not found: logging/setLevel", None),
            ("prompts/get", {"name": 7}, -32602, "Unknown prompt: 7", None),
        ]
        async with echo_harness(tmp_path, mode) as h:
            await h.ready()
            for method, params, code, message, data in cases:
                with pytest.raises(RpcError) as caught:
                    await h.request("mcp", method, params, {})
                assert (caught.value.code, caught.value.message, caught.value.data) == (
                    code,
                    message,
                    data,
                ), method

    async def test_bad_mcp_request(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path) as h:
            await h.ready()
            for params in (["tools/list", [1]], [7, {}]):
                with pytest.raises(RpcError) as caught:
                    await h.request("mcp", *params)
                assert caught.value.code == -32602
            assert await call(h, "echo", text="still fine") == text("still fine")

    async def test_concurrent_calls_and_latency(self, tmp_path: Path) -> None:
        figures = []
        for mode in MODES:
            async with echo_harness(tmp_path, mode) as h:
                await h.ready()
                got = await asyncio.gather(*(call(h, "echo", text=str(i)) for i in range(64)))
                assert got == [text(str(i)) for i in range(64)]
                took = []
                for i in range(100):
                    t0 = time.perf_counter()
                    await call(h, "add", a=i, b=1)
                    took.append(time.perf_counter() - t0)
                figures.append(f"{mode} {statistics.median(took) * 1e6:.0f} µs")
        print("\nmcp tools/call round trip p50: " + ", ".join(figures))


class TestCancellation:
    """A cancelled call reaches an async handler at once; a sync one cannot be interrupted."""

    @pytest.mark.parametrize("how", ["cancel", "timeout"])
    async def test_cancel_reaches_async_handler(self, tmp_path: Path, how: str) -> None:
        async with echo_harness(tmp_path) as h:
            await h.ready()
            started, cancelled = tmp_path / "slow.started", tmp_path / "slow.cancelled"
            if how == "cancel":
                pending = asyncio.create_task(call(h, "slow", seconds=60))
                await h.wait_for(started.exists, what="slow started", poll=0.002)
                sent = time.monotonic()
                pending.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await pending
            else:
                params = {"name": "slow", "arguments": {"seconds": 60}}
                sent = time.monotonic() + 0.3  # the $cancel goes out when the timeout fires
                with pytest.raises(TimeoutError):
                    await h.request("mcp", "tools/call", params, {}, timeout=0.3)
                assert started.exists()
            await h.wait_for(
                lambda: cancelled.exists() and cancelled.read_text(), what="cancel", poll=0.002
            )
            latency = float(cancelled.read_text()) - sent
            # A figure, not a bound (a loaded 2-core machine can stall any process for 100 ms):
            # the handler saw the $cancel within the wait's deadline, not after its 60 s.
            print(f"\n$cancel ({how}) reached the async handler in {latency * 1000:.1f} ms")
            assert await call(h, "echo", text="after") == text("after")

    async def test_ping_answered_while_sync_handler_works(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path, "sync") as h:
            await h.ready()
            slow = asyncio.create_task(call(h, "sync_slow", {"progressToken": "p"}, seconds=1.0))
            # Its first report (sent before it sleeps) says the handler has begun: a ping sent
            # from then on is answered before the call only if the loop is not blocked by it.
            # (Which comes first, not how fast: no latency bound on a loaded machine.)
            await h.notification("progress")
            worst = 0.0
            answered_during = 0
            while not slow.done():
                t0 = time.perf_counter()
                await h.request("ping", timeout=1)
                worst = max(worst, time.perf_counter() - t0)
                answered_during += not slow.done()
            assert slow.result() == text("slept 1.0")
            print(f"\nworst ping during a 1 s sync call: {worst * 1000:.1f} ms")
            assert answered_during > 0, "no ping was answered while the sync handler worked"
            # Cancelled ($cancel on timeout), the sync call runs on in its thread and its
            # result is dropped; the worker keeps serving.
            params = {"name": "sync_slow", "arguments": {"seconds": 2.0}}
            with pytest.raises(TimeoutError):
                await h.request("mcp", "tools/call", params, {}, timeout=0.3)
            assert await call(h, "echo", text="next") == text("next")
            assert not h.channel.closed


class TestNotifications:
    """Progress reports arrive in order before the answer; catalog changes are pushed."""

    @pytest.mark.parametrize(("mode", "token"), [("async", "tok-1"), ("sync", 42)])
    async def test_progress_in_order(self, tmp_path: Path, mode: str, token: Any) -> None:
        async with echo_harness(tmp_path, mode) as h:
            await h.ready()
            result = await call(h, "progress", {"progressToken": token}, steps=5)
            assert result["structuredContent"] == {"steps": 5}
            reports = [p for m, p in h.notifications if m == "progress"]
            assert reports == [[token, i, 5, f"step {i}"] for i in range(1, 6)]
            await call(h, "progress", steps=3)  # no token: nobody asked, nothing is sent
            await h.request("ping")
            assert len([m for m, _ in h.notifications if m == "progress"]) == 5

    async def test_progress_after_a_cancelled_call_is_dropped(self, tmp_path: Path) -> None:
        async with echo_harness(tmp_path, "sync") as h:
            await h.ready()
            params = {"name": "sync_slow", "arguments": {"seconds": 0.5}}
            pending = asyncio.create_task(
                h.request("mcp", "tools/call", params, {"progressToken": "t"}, timeout=None)
            )
            # Cancelled once its first report is in (a timeout of 0.2 s could fire before a
            # loaded machine ran the handler at all, and then drop that report too).
            await h.notification("progress")
            pending.cancel()  # the same $cancel a timeout sends
            with pytest.raises(asyncio.CancelledError):
                await pending
            done = tmp_path / "sync_slow.done"
            await h.wait_for(done.exists, what="sync_slow done", poll=0.01)
            # The late report was queued for the loop before the marker was written, so it
            # would reach us before the answer to this ping.
            await h.request("ping")
            assert [p for m, p in h.notifications if m == "progress"] == [["t", 0, 0.5, "sleeping"]]

    @pytest.mark.parametrize("mode", MODES)
    async def test_tools_changed_pushes_the_catalog(self, tmp_path: Path, mode: str) -> None:
        async with echo_harness(tmp_path, mode) as h:
            await h.ready()
            # An unchanged catalog is not sent; the refetches run one after the other, so if
            # it were, it would arrive before the changed one.
            await h.request("mcp", "fixture/tools_changed", {}, {})
            await h.request("mcp", "fixture/tools_changed", {"add": "extra"}, {})
            catalog = await h.notification("catalog")
            assert [t["name"] for t in catalog["tools"]] == [*TOOLS, "extra"]
            assert catalog["prompts"][0]["name"] == "greet"
            assert [m for m, _ in h.notifications] == ["catalog"]
            assert await call(h, "extra") == text("dynamic extra")


BAD = {
    "no_factory": "def make_handler(config): ...\n",
    "not_callable": "def create_handler(config): return 42\n",
    "factory_raises": "def create_handler(config): raise OSError('no db')\n",
    "caps_not_list": "metadata = {'capabilities': 'tools'}\ndef create_handler(c): return print\n",
    "name_not_str": "metadata = {'name': 3}\ndef create_handler(c): return print\n",
    "init_raises": (
        "def create_handler(c): return print\ndef initialize(): raise RuntimeError('init failed')\n"
    ),
}


class TestFailures:
    """Load errors exit 3 with load_error, like the daemon kind; initialize() errors exit 1."""

    async def test_bad_handler_fixture(self) -> None:
        async with WorkerHarness(FIXTURES / "mcp_bad_handler", kind="handler") as h:
            error = await h.notification("load_error")
            assert await h.exit_code() == EXIT_LOAD_ERROR
        assert "no create_handler(config) found in" in error["message"]
        assert h.ready_info is None

    @pytest.mark.parametrize(
        ("case", "notification", "code", "message"),
        [
            ("no_factory", "load_error", EXIT_LOAD_ERROR, "no create_handler(config) found"),
            ("not_callable", "load_error", EXIT_LOAD_ERROR, "returned 'int', which is not"),
            ("factory_raises", "load_error", EXIT_LOAD_ERROR, "OSError: no db"),
            ("caps_not_list", "load_error", EXIT_LOAD_ERROR, "'capabilities' must be a list"),
            ("name_not_str", "load_error", EXIT_LOAD_ERROR, "'name' must be a string"),
            ("init_raises", "error", EXIT_ERROR, "RuntimeError: init failed"),
        ],
    )
    async def test_failure(
        self, tmp_path: Path, case: str, notification: str, code: int, message: str
    ) -> None:
        path = tmp_path / f"{case}.py"
        path.write_text(BAD[case])
        async with WorkerHarness(path, kind="handler") as h:
            error = await h.notification(notification)
            assert await h.exit_code() == code
        assert message in error["message"]


CATALOG = {
    # metadata names only tools: resources and prompts are never asked for
    "only_tools": (
        "metadata = {'name': 'x', 'capabilities': ['tools', 'logging']}\n"
        "CALLS = []\n"
        "def create_handler(config):\n"
        "    def handle(method, params):\n"
        "        CALLS.append(method)\n"
        "        if method == 'x/calls': return {'calls': CALLS}\n"
        "        return {'tools': [{'name': 't'}], 'resources': [{'uri': 'u://'}]}\n"
        "    return handle\n",
        {"tools": ["t"], "resources": [], "resourceTemplates": [], "prompts": []},
        ["tools/list"],
    ),
    # no metadata: all four lists, bare lists and None accepted, bad items dropped
    "all_lists": (
        "CALLS = []\n"
        "async def handle(method, params):\n"
        "    CALLS.append(method)\n"
        "    if method == 'x/calls': return {'calls': CALLS}\n"
        "    if method == 'tools/list': return [{'name': 'a'}, {'nom': 'b'}, {'name': 'a'}, 3]\n"
        "    if method == 'prompts/list': raise RuntimeError('no prompts today')\n"
        "    if method == 'resources/list': return {'resources': [{'uri': 'r://1'}]}\n"
        "def create_handler(config): return handle\n",
        {"tools": ["a"], "resources": ["r://1"], "resourceTemplates": [], "prompts": []},
        ["tools/list", "resources/list", "resources/templates/list", "prompts/list"],
    ),
    # a cursor that repeats ends the pagination instead of looping forever
    "looping_cursor": (
        "metadata = {'capabilities': ['prompts']}\n"
        "CALLS = []\n"
        "def create_handler(config):\n"
        "    def handle(method, params):\n"
        "        CALLS.append(method)\n"
        "        if method == 'x/calls': return {'calls': CALLS}\n"
        "        n = len(CALLS)\n"
        "        return {'prompts': [{'name': f'p{n}'}], 'nextCursor': 'c' + str(min(n, 2))}\n"
        "    return handle\n",
        {"tools": [], "resources": [], "resourceTemplates": [], "prompts": ["p1", "p2", "p3"]},
        ["prompts/list"] * 3,
    ),
}


@pytest.mark.parametrize("case", sorted(CATALOG))
async def test_catalog_fetch(tmp_path: Path, case: str) -> None:
    """Which list methods are called, and what a sloppy handler's lists become."""
    source, expected, calls = CATALOG[case]
    path = tmp_path / f"{case}.py"
    path.write_text(textwrap.dedent(source))
    async with WorkerHarness(path, kind="handler") as h:
        catalog = (await h.ready())["catalog"]
        made = (await h.request("mcp", "x/calls", {}, {}))["calls"]
    ids = {"tools": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}
    got = {k: [item[ids.get(k, "name")] for item in v] for k, v in catalog.items()}
    assert got == expected
    assert made[:-1] == calls
    if case == "only_tools":
        assert catalog["tools"][0]["inputSchema"] == {"type": "object"}  # filled in
