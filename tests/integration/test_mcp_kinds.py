"""What every MCP-server kind that speaks to a server through a client (``sdk``: an SDK object
in-process; ``stdio``: a server process) must do alike, run against both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import WorkerHarness, call, text
from tests.integration.test_sdk_servers import sdk_harness
from tests.integration.test_stdio_servers import stdio_harness
from worker.rpc import RpcError

KINDS: dict[str, Callable[[Path], WorkerHarness]] = {"sdk": sdk_harness, "stdio": stdio_harness}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(KINDS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> WorkerHarness:
    return KINDS[request.param](tmp_path)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "params", "code", "data"),
    [
        # the server's own error, code and data kept
        ("resources/read", {"uri": "fixture://nope"}, -32602, {"uri": "fixture://nope"}),
        ("tools/call", {"nme": "x"}, -32602, None),  # refused by the worker: bad params
        ("no/such", {}, -32601, "no/such"),  # an unknown method is the server's to refuse
    ],
)
async def test_errors_keep_their_code(
    harness: WorkerHarness, method: str, params: dict[str, Any], code: int, data: Any
) -> None:
    async with harness as h:
        await h.ready(timeout=30)
        with pytest.raises(RpcError) as caught:
            await h.request("mcp", method, params, {})
        assert (caught.value.code, caught.value.data) == (code, data)
        unknown = await call(h, "nope")  # MCP: a tool's failure is a result
        assert unknown == {"content": [text("Unknown tool: nope")], "isError": True}


@pytest.mark.anyio
async def test_cancel_reaches_the_server(harness: WorkerHarness, tmp_path: Path) -> None:
    async with harness as h:
        await h.ready(timeout=30)
        pending = asyncio.ensure_future(call(h, "slow", seconds=30))
        await h.wait_for(lambda: (tmp_path / "slow.started").exists(), poll=0.01)
        pending.cancel()
        await h.wait_for(lambda: (tmp_path / "slow.cancelled").exists(), poll=0.01)
        assert (await call(h, "echo", text="still here"))["content"] == [text("still here")]
