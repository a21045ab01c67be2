"""The MCP front, measured with the official SDK client against the SDK's own server.

1. ``tools/call`` of an ``echo`` tool through spctl's aggregate ``/mcp`` (the ``mcp_echo``
   fixture as a server extension: client → front → core → worker) vs the same tool on the SDK's
   own ``MCPServer`` over Streamable HTTP (uvicorn in a subprocess, one hop), same client and
   machine, in both protocol eras (``mode="auto"``: 2026-07-28; ``"legacy"``: 2025-11-25
   sessions). Sequential latency p50/p99 and throughput with 8 concurrent clients. The two
   targets alternate call by call (and burst by burst), so the load other processes put on a
   shared 2-core box falls on both alike; throughput is the median over bursts.
2. Scale: ``tools/list`` (every page) on ``/mcp`` and ``tools/call`` p50 through ``/mcp`` with
   1 vs 100 extensions of a tiny generated handler package listing 10 tools each, beside the
   SDK's server with 10 vs 1000 tools (it lists them in one page; spctl pages 100 at a time).

Every process started here is stopped on the way out (the supervisor takes its workers and front
with it; leftovers are killed by pid).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import anyio
from mcp import Client

from tests.bench._goals import record
from tests.bench._table import print_table
from tests.helpers import Serve, descendants, make_extensions, pid_gone, server_entry, wait_for

__all__ = ["main"]

MODES = ["auto", "legacy"]
WARMUP = 30
SEQUENTIAL = 300  # timed calls per target and era
CALLERS = 8
PER_CALLER = 15  # calls per client in a burst
BURSTS = 9  # per target and era
MANY = 100
TOOLS_PER = 10
SCALE_CALLS = 150
NEVER = {"policy": "never"}
LISTS = 15

SDK_SERVER = """
import socket, sys, uvicorn
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("sdk-echo", log_level="WARNING")

@mcp.tool(structured_output=False)  # like mcp_echo's echo: text content only
def echo(text: str) -> str:
    \"\"\"returns its text\"\"\"
    return text

for i in range(int(sys.argv[1]) - 1):  # padding for the listing baseline
    mcp.add_tool(echo, name=f"tool{i}", structured_output=False)
# IPPROTO_TCP as spctl's front does: asyncio sets TCP_NODELAY only on sockets whose proto says
# TCP (accepted ones inherit it); with proto 0, Nagle + delayed ACK add ~40 ms to 2026 calls.
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
sock.listen(512)
config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning", access_log=False)
print("listening on", sock.getsockname()[1], flush=True)
uvicorn.Server(config).run(sockets=[sock])
"""

TINY = """
from worker.api import METHOD_NOT_FOUND, McpError

metadata = {"name": "tiny", "version": "1.0.0", "description": "n tools", "capabilities": ["tools"]}
_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
TOOLS = []

def handle(method, params):
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        return (params.get("arguments") or {}).get("text", "")
    raise McpError(METHOD_NOT_FOUND, f"Method not found: {method}")

def create_handler(config):
    TOOLS[:] = [
        {"name": f"tool{i}", "description": "echoes", "inputSchema": _SCHEMA}
        for i in range(int(config["tools"]))
    ]
    return handle
"""


# -- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def sdk_server(log: Path, tools: int = 1) -> Iterator[str]:
    """The SDK's own server with ``echo`` and ``tools - 1`` copies in a subprocess; yields its
    /mcp URL."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", SDK_SERVER, str(tools)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"SDK server did not start: {log.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{line.split()[-1]}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(
    root: Path, ext: Path, up: Callable[[dict[str, Any]], bool], what: str
) -> Iterator[tuple[Serve, str]]:
    """``spctl serve`` on ``ext`` with the MCP front on a free port; yields it and the /mcp URL
    once ``up(status)`` holds and the front runs. Afterwards: stopped, nothing left behind."""
    s = Serve(root, ext, root / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    try:
        s.start()

        def ready() -> str | None:
            st = s.try_status()
            if not st or not up(st):
                return None
            front = st["supervisor"]["mcp_front"]
            return str(front["url"]) if front and front["state"] == "running" else None

        yield s, str(wait_for(ready, 90, f"{what} and the front (log: {s.log_path})"))
    finally:
        children = descendants(s.proc.pid) if s.proc is not None else []
        code = s.stop()  # SIGTERM; anything still alive after 30 s is killed
        left = [pid for pid in children if not pid_gone(pid)]
        errors = [e for e in s.logs() if e.get("level") in ("error", "critical")]
        if code != 0 or left or errors:
            print(f"spctl serve exited {code}, left {left}, errors {errors[:3]}", flush=True)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def spctl(root: Path, servers: list[dict[str, Any]], tiny: bool = False) -> Iterator[str]:
    """``spctl serve`` with the MCP front on a free port; yields the aggregate /mcp URL once
    every extension is running."""
    ext = make_extensions(root, [], servers)
    if tiny:
        (ext / "servers" / "tiny").mkdir(exist_ok=True)
        (ext / "servers" / "tiny" / "__init__.py").write_text(TINY)

    def all_running(status: dict[str, Any]) -> bool:
        return all(e["state"] == "running" for e in status["extensions"])

    with serving(root, ext, all_running, f"{len(servers)} extensions") as (_, url):
        yield url


# -- measurements ----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))]


@dataclass
class Target:
    """One server under test in one era: its clients, and what was measured on them."""

    name: str
    url: str
    tool: str
    one: Client | None = None
    many: list[Client] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    version: str = ""
    listed: int = 0  # tools the listing must reach before the scale measurement
    lists: list[float] = field(default_factory=list)
    pages: int = 0

    async def call(self, c: Client, text: str) -> None:
        result = await c.call_tool(self.tool, {"text": text})
        assert not result.is_error and result.content[0].text == text  # type: ignore[union-attr]

    async def burst(self) -> None:
        async def caller(c: Client) -> None:
            for _ in range(PER_CALLER):
                await self.call(c, "x")

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in self.many:
                tg.start_soon(caller, c)
        self.rates.append(CALLERS * PER_CALLER / (time.perf_counter() - t0))


async def compare(targets: list[Target], mode: str) -> None:
    """Interleave the targets call by call (sequential) and burst by burst (concurrent), so
    the load other processes put on the machine falls on both alike."""
    async with contextlib.AsyncExitStack() as stack:
        for t in targets:
            t.one = await stack.enter_async_context(Client(t.url, mode=mode))
            t.version = t.one.protocol_version
            for _ in range(CALLERS):
                t.many.append(await stack.enter_async_context(Client(t.url, mode=mode)))
            for c in [t.one, *t.many]:
                for _ in range(3):
                    await t.call(c, "warm")
        for i in range(WARMUP + SEQUENTIAL):
            for t in targets if i % 2 else targets[::-1]:
                assert t.one is not None
                t0 = time.perf_counter()
                await t.call(t.one, f"hi {i}")
                if i >= WARMUP:
                    t.latencies.append(time.perf_counter() - t0)
        for r in range(BURSTS):
            for t in targets if r % 2 else targets[::-1]:
                await t.burst()


async def list_all(c: Client, count_pages: bool = False) -> int:
    """Every page of tools/list, past the client's cache: the tool (or page) count."""
    cursor: str | None = None
    tools = pages = 0
    while True:
        page = await c.list_tools(cursor=cursor, cache_mode="bypass")
        tools, pages = tools + len(page.tools), pages + 1
        cursor = page.next_cursor
        if not cursor:
            return pages if count_pages else tools


async def scale(targets: list[Target]) -> None:
    """Whole tools/list (every page) and tools/call latencies, the targets interleaved."""
    async with contextlib.AsyncExitStack() as stack:
        for t in targets:
            t.one = c = await stack.enter_async_context(Client(t.url))
            deadline = time.monotonic() + 30
            while (seen := await list_all(c)) != t.listed:  # the front learns it async
                if time.monotonic() > deadline:
                    raise AssertionError(f"{t.url} lists {seen} tools, expected {t.listed}")
        for i in range(LISTS):
            for t in targets if i % 2 else targets[::-1]:
                assert t.one is not None
                t0 = time.perf_counter()
                t.pages = await list_all(t.one, count_pages=True)
                t.lists.append(time.perf_counter() - t0)
        for i in range(WARMUP + SCALE_CALLS):
            for t in targets if i % 2 else targets[::-1]:
                assert t.one is not None
                t0 = time.perf_counter()
                await t.call(t.one, "r")
                if i >= WARMUP:
                    t.latencies.append(time.perf_counter() - t0)


# -- the two parts ---------------------------------------------------------------------------


def part_calls(tmp: Path) -> None:
    rows = []
    with (
        sdk_server(tmp / "sdk.log") as sdk_url,
        spctl(tmp, [server_entry("echo", "mcp_echo")]) as spctl_url,
    ):
        for mode in MODES:
            spctl_t = Target("spctl", spctl_url, "echo__echo")
            sdk_t = Target("sdk", sdk_url, "echo")
            anyio.run(compare, [spctl_t, sdk_t], mode)
            era = f"{mode} ({spctl_t.version} / {sdk_t.version})"
            (a50, b50), (a99, b99) = (
                (f(spctl_t.latencies), f(sdk_t.latencies)) for f in (median, p99)
            )
            a_rate, b_rate = median(spctl_t.rates), median(sdk_t.rates)
            if mode == "auto":
                record(
                    "mcp",
                    "/mcp tools/call throughput vs the SDK's own server, auto era",
                    "≥ 1.0×",
                    f"{a_rate:.0f} vs {b_rate:.0f} calls/s: {a_rate / b_rate:.2f}×",
                    a_rate >= b_rate,
                )
            rows += [
                [era, "p50", ms(a50), ms(b50), f"{a50 / b50:.2f}×", "≤ 1.2×"],
                [era, "p99", ms(a99), ms(b99), f"{a99 / b99:.2f}×", ""],
                [
                    era,
                    f"throughput, {CALLERS} clients",
                    f"{a_rate:.0f} calls/s",
                    f"{b_rate:.0f} calls/s",
                    f"{a_rate / b_rate:.2f}×",
                    "≥ 0.85×",
                ],
            ]
    print_table(
        f"tools/call echo: spctl /mcp (mcp_echo extension) vs the SDK's MCPServer; "
        f"{SEQUENTIAL} sequential calls each, interleaved; throughput: median of {BURSTS} "
        f"alternating bursts of {CALLERS}×{PER_CALLER}",
        ["era (spctl / sdk protocol)", "measure", "spctl /mcp", "SDK server", "ratio", "goal"],
        rows,
    )


def part_scale(tmp: Path) -> None:
    targets: dict[tuple[str, int], Target] = {}
    up: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        for n in (1, MANY):
            root = tmp / f"scale-{n}"
            root.mkdir()
            servers = [
                server_entry(f"t-{i:03d}", "tiny", config={"tools": TOOLS_PER}, restart=NEVER)
                for i in range(n)
            ]
            t0 = time.monotonic()
            url = stack.enter_context(spctl(root, servers, tiny=True))
            up[n] = time.monotonic() - t0
            last = f"t-{n - 1:03d}__tool{TOOLS_PER - 1}"
            targets[("spctl", n)] = Target("spctl", url, last, listed=n * TOOLS_PER)
            url = stack.enter_context(sdk_server(root / "sdk.log", n * TOOLS_PER))
            targets[("sdk", n)] = Target("sdk", url, "echo", listed=n * TOOLS_PER)
        anyio.run(scale, list(targets.values()))

    def row(what: str, f: Any) -> list[str]:
        a1, an = f(targets[("spctl", 1)]), f(targets[("spctl", MANY)])
        b1, bn = f(targets[("sdk", 1)]), f(targets[("sdk", MANY)])
        return [what, ms(a1), ms(an), f"{an / a1:.2f}×", ms(b1), ms(bn), f"{bn / b1:.2f}×"]

    pages = f"{targets[('spctl', 1)].pages} vs {targets[('spctl', MANY)].pages}"
    print_table(
        f"/mcp with 1 vs {MANY} extensions × {TOOLS_PER} tools (tiny handler; auto era), "
        f"vs the SDK's MCPServer with {TOOLS_PER} vs {MANY * TOOLS_PER} tools; interleaved",
        [
            "measure",
            *(f"spctl 1×{TOOLS_PER}", f"spctl {MANY}×{TOOLS_PER}", "ratio"),
            *(f"SDK {TOOLS_PER}", f"SDK {MANY * TOOLS_PER}", "ratio"),
        ],
        [
            row(f"tools/list p50, all pages (spctl {pages}; SDK 1)", lambda t: median(t.lists)),
            row("tools/list p50 per page", lambda t: median(t.lists) / t.pages),
            row("tools/call p50 (goal: flat)", lambda t: median(t.latencies)),
            row("tools/call p99", lambda t: p99(t.latencies)),
            ["spctl serve → all running, front up", f"{up[1]:.1f} s", f"{up[MANY]:.1f} s"]
            + [""] * 4,
        ],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "calls").mkdir()
        part_calls(Path(tmp) / "calls")
        part_scale(Path(tmp))


if __name__ == "__main__":
    main()
