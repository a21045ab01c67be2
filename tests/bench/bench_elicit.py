"""One elicitation round trip through spctl vs the same SDK server direct.

The asks fixture (``tests/fixtures/mcp_asks``) is served four ways: by the SDK itself over
Streamable HTTP (uvicorn in a subprocess: client ⇄ server, one hop each way), and through
spctl's aggregate ``/mcp`` as an SDK server object (``sdk`` kind), as a stdio ``command:``
server and as a ``type: remote`` entry whose URL is the direct server's own (client → front
→ core → worker → server, and the elicitation back along the same path; for the remote kind
it rides the call's POST stream to the worker and its answer is a POST back). The official
SDK client in 2025-11-25 sessions (``mode="legacy"``: the era with a back channel) calls
``ask_name`` (one ``elicitation/create``, answered at once by the client's callback) and
``echo`` (no elicitation) on each; the elicitation's own cost is the first minus the second,
and spctl's addition is that difference through spctl minus the same direct. The targets
alternate call by call, so load from other processes falls on all alike. Then the same with
2026-07-28 clients on ``greet_resolved`` (``input_required``, answered by the SDK client's
input loop), direct and through spctl: the sdk kind relays the server's one round (three
questions, one retry); the stdio and remote kinds park each of the server's three mid-call
requests in turn (three rounds, three retries).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.session import ClientRequestContext

from tests.bench._table import print_table
from tests.bench.bench_mcp import serving
from tests.helpers import FIXTURES, make_extensions, server_entry

__all__ = ["main"]

WARMUP = 20
CALLS = 200  # timed calls per target and tool

DIRECT = """
import socket, sys, uvicorn
sys.path.insert(0, sys.argv[1])
from mcp_asks import mcp
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
sock.listen(64)
config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning", access_log=False)
print("listening on", sock.getsockname()[1], flush=True)
uvicorn.Server(config).run(sockets=[sock])
"""


@contextlib.contextmanager
def direct(log: Path) -> Iterator[str]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", DIRECT, str(FIXTURES)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the SDK server did not start: {log.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{line.split()[-1]}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _answer(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _sample(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(text="ok"), model="bench"
    )


async def _roots(ctx: ClientRequestContext) -> Any:
    return types.ListRootsResult(roots=[types.Root(uri="file:///bench")])


CALLBACKS: dict[str, Any] = {
    "elicitation_callback": _answer,
    "sampling_callback": _sample,
    "list_roots_callback": _roots,
}
TOOLS = (("ask_name", {}), ("echo", {"text": "x"}))
RESOLVED = (("greet_resolved", {"topic": "hi"}), ("echo", {"text": "x"}))


async def measure(
    urls: dict[str, tuple[str, str]], mode: str = "legacy", tools: Any = TOOLS
) -> dict[tuple[str, str], list[float]]:
    """name → (url, tool prefix); the latency of each (name, tool) call, alternating."""
    times: dict[tuple[str, str], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(Client(url, mode=mode, **CALLBACKS))
            for name, (url, _) in urls.items()
        }
        for i in range(WARMUP + CALLS):
            for tool, args in tools:
                for name, client in clients.items():
                    started = time.perf_counter()
                    result = await client.call_tool(urls[name][1] + tool, args)
                    took = time.perf_counter() - started
                    assert not result.is_error, result
                    if i >= WARMUP:
                        times.setdefault((name, tool), []).append(took)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spctl-bench-elicit-") as tmp:
        root = Path(tmp)
        stdio = {"command": [sys.executable, "server.py"]}

        def up(status: dict[str, Any]) -> bool:
            return all(e["state"] == "running" for e in status["extensions"])

        with contextlib.ExitStack() as stack:
            sdk_url = stack.enter_context(direct(root / "direct.log"))
            servers = [
                server_entry("sdkask", "mcp_asks"),
                server_entry("stdioask", "mcp_asks", **stdio),
                {"name": "remoteask", "type": "remote", "url": sdk_url},  # the direct one
            ]
            ext = make_extensions(root, [], servers)
            _, url = stack.enter_context(serving(root, ext, up, "servers"))
            targets = {
                "SDK server direct": (sdk_url, ""),
                "spctl /mcp, sdk kind": (url, "sdkask__"),
                "spctl /mcp, stdio kind": (url, "stdioask__"),
                "spctl /mcp, remote kind": (url, "remoteask__"),
            }
            times = anyio.run(measure, targets)
            modern_targets = targets
            modern = anyio.run(measure, modern_targets, "auto", RESOLVED)
    load = os.getloadavg()[0]
    p50 = {key: median(values) for key, values in times.items()}
    base = p50[("SDK server direct", "ask_name")] - p50[("SDK server direct", "echo")]
    rows = []
    for name in targets:
        asked, plain = p50[(name, "ask_name")], p50[(name, "echo")]
        rows.append(
            [
                name,
                f"{plain * 1000:.2f} ms",
                f"{asked * 1000:.2f} ms",
                f"{(asked - plain) * 1000:.2f} ms",
                "—" if name.startswith("SDK") else f"{(asked - plain - base) * 1000:+.2f} ms",
            ]
        )
    print_table(
        f"One elicitation round trip, p50 of {CALLS} calls each (legacy sessions; "
        f"load average {load:.2f})",
        ["target", "echo", "ask_name (1 elicitation)", "the elicitation", "spctl adds"],
        rows,
    )
    p50 = {key: median(values) for key, values in modern.items()}
    base = p50[("SDK server direct", "greet_resolved")] - p50[("SDK server direct", "echo")]
    rows = []
    for name in modern_targets:
        asked, plain = p50[(name, "greet_resolved")], p50[(name, "echo")]
        rows.append(
            [
                name,
                f"{plain * 1000:.2f} ms",
                f"{asked * 1000:.2f} ms",
                f"{(asked - plain) * 1000:.2f} ms",
                "—" if name.startswith("SDK") else f"{(asked - plain - base) * 1000:+.2f} ms",
            ]
        )
    print_table(
        f"2026-07-28: input_required rounds (elicitation, sampling, roots), p50 of {CALLS} "
        f"calls each (load average {os.getloadavg()[0]:.2f})",
        ["target", "echo", "greet_resolved", "its rounds", "spctl adds"],
        rows,
    )
