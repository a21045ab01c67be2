"""Per-client tokens: what they cost a ``tools/call`` through the front.

Two supervisors serve the ``mcp_echo`` fixture, each with its front: ``off`` has no tokens,
``on`` a clients file whose client may reach ``echo__*`` only (so its lists are narrowed, its
calls checked against its globs, logged with its name and sent with ``meta["client"]``). The
official SDK client (bearer token on ``on``) calls ``echo__echo`` on each through ``/mcp``, the
two alternating call by call (the load of other processes falls on both alike), in both eras:
sequential p50/p99. Goal: within noise.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from statistics import median

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from supervisor.clients_file import save
from supervisor.rules.clients import Client as TokenClient
from supervisor.rules.clients import Clients, hash_token
from tests.bench._table import print_table
from tests.bench.bench_mcp import MODES, SEQUENTIAL, WARMUP, ms, p99, serving
from tests.helpers import make_extensions, server_entry

__all__ = ["main"]

TOKEN = "spctl_bench-token"


async def measure(urls: dict[str, str], mode: str) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for name, url in urls.items():
            headers = {"Authorization": f"Bearer {TOKEN}"} if name == "on" else {}
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
            transport = streamable_http_client(url, http_client=http)
            clients[name] = await stack.enter_async_context(Client(transport, mode=mode))
        order = list(clients)
        for i in range(WARMUP + SEQUENTIAL):
            for name in order if i % 2 else order[::-1]:
                t0 = time.perf_counter()
                result = await clients[name].call_tool("echo__echo", {"text": f"hi {i}"})
                elapsed = time.perf_counter() - t0
                assert result.content[0].text == f"hi {i}"  # type: ignore[union-attr]
                if i >= WARMUP:
                    latencies[name].append(elapsed)
    return latencies


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="spctl-bench-tokens-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        urls: dict[str, str] = {}
        for name in ("off", "on"):
            root = Path(tmp) / name
            ext = make_extensions(root, [], [server_entry("echo", "mcp_echo")])
            if name == "on":
                client = TokenClient("bench", hash_token(TOKEN), ("echo__*",))
                save(root / "state" / "clients.toml", Clients((client,)))
            _, urls[name] = stack.enter_context(
                serving(
                    root,
                    ext,
                    lambda st: all(e["state"] == "running" for e in st["extensions"]),
                    name,
                )
            )
        rows = []
        for mode in MODES:
            got = anyio.run(measure, urls, mode)
            off, on = median(got["off"]), median(got["on"])
            rows.append([mode, "p50", ms(off), ms(on), f"{on / off:.2f}×"])
            rows.append([mode, "p99", ms(p99(got["off"])), ms(p99(got["on"])), ""])
    print_table(
        "tools/call through /mcp: client tokens off vs on (two supervisors, alternating)",
        ["era", "", "tokens off", "tokens on", "on/off"],
        rows,
    )


if __name__ == "__main__":
    main()
