"""A remote MCP server (``type: remote``) through spctl, with the lean client and with the SDK's.

One SDK server (``tests/fixtures/remote_server``: sessions and event streams, bearer auth)
in a subprocess, and one ``spctl serve`` hosting it twice: ``lean`` (the remote kind as it
is: worker/mcp/http_peer.py) and ``sdk`` (the same entry with ``env: {REMOTE_MCP_CLIENT:
sdk}``: the worker uses the SDK's Streamable HTTP client, the remote kind before the lean
client). ``tools/call echo`` three ways, with the SDK client in its default mode:

(a) direct: the client calls the server's /mcp, in its default era and in the legacy one
    (the era the workers speak to the server);
(b) lean: through the front's ``/mcp/lean`` (client → front → core → worker → server);
(c) sdk: through ``/mcp/sdk``.

Per worker: RSS, USS and PSS (psutil ``memory_full_info``) once it is running and again after
the calls, the CPU it took to get ``running``, and its CPU per call. Sequential latency
p50/p99 with the targets interleaved call by call, so the load of other processes on a shared
box falls on all alike.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import httpx2
import psutil
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.bench._goals import record
from tests.bench._table import print_table
from tests.bench.bench_mcp import ms, p99, serving
from tests.helpers import FIXTURES, HttpFixture, make_extensions, start_http_fixture

__all__ = ["main"]

SERVER = FIXTURES / "remote_server" / "server.py"
TOKEN = "bench-token-4d1f"
WARMUP = 20
SEQUENTIAL = 200  # timed calls per target
WORKERS = ("lean", "sdk")


@dataclass
class Target:
    name: str
    url: str
    direct: bool = False  # the server itself: the client brings the token
    mode: str = "auto"  # the SDK client's era: auto (2026-07-28 here) or legacy (2025-11-25)
    one: Client | None = None
    latencies: list[float] = field(default_factory=list)

    async def call(self, text: str) -> None:
        assert self.one is not None
        result = await self.one.call_tool("echo", {"text": text})
        assert not result.is_error and result.content[0].text == text  # type: ignore[union-attr]


def memory(pid: int) -> tuple[float, float, float]:
    """RSS, USS, PSS of ``pid`` in MiB."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 2**20, info.uss / 2**20, info.pss / 2**20


def sdk_loaded(pid: int) -> bool:
    """Whether the process has pydantic's core (the SDK's models) mapped."""
    return any("pydantic_core" in m.path for m in psutil.Process(pid).memory_maps())


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def entry(name: str, url: str, **extra: Any) -> dict[str, Any]:
    auth = {"type": "bearer", "token": TOKEN}
    return {"name": name, "type": "remote", "url": url, "auth": auth, **extra}


async def measure(targets: list[Target], pids: dict[str, int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for t in targets:
            server: Any = t.url
            if t.direct:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                http = await stack.enter_async_context(httpx2.AsyncClient(headers=auth))
                server = streamable_http_client(t.url, http_client=http)
            t.one = await stack.enter_async_context(Client(server, mode=t.mode))
            for _ in range(3):
                await t.call("warm")
        found["versions"] = {t.name: t.one.protocol_version for t in targets if t.one}
        for i in range(WARMUP + SEQUENTIAL):
            for t in targets[i % len(targets) :] + targets[: i % len(targets)]:
                t0 = time.perf_counter()
                await t.call(f"call {i}")
                if i >= WARMUP:
                    t.latencies.append(time.perf_counter() - t0)
        # CPU per call of each worker, its target alone
        for t in targets:
            if t.name not in pids:
                continue
            before = cpu(pids[t.name])
            for i in range(SEQUENTIAL):
                await t.call(f"cpu {i}")
            found[f"cpu {t.name}"] = (cpu(pids[t.name]) - before) / SEQUENTIAL
    return found


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spctl-bench-remote-") as tmp:
        root = Path(tmp)
        remote = start_http_fixture(HttpFixture, SERVER, root, ["--token", TOKEN])
        try:
            url = f"{remote.base}/mcp"
            servers = [
                entry("lean", url),
                entry("sdk", url, env={"REMOTE_MCP_CLIENT": "sdk"}),
            ]
            ext = make_extensions(root, [], servers)

            def running(status: dict[str, Any]) -> bool:
                return all(e["state"] == "running" for e in status["extensions"])

            with serving(root, ext, running, "the remote workers") as (s, front):
                status = s.try_status()
                assert status is not None
                pids = {e["name"]: int(e["pid"]) for e in status["extensions"]}
                start_cpu = {n: cpu(pids[n]) for n in WORKERS}
                idle = {n: memory(pids[n]) for n in WORKERS}
                targets = [
                    Target("direct", url, direct=True),
                    Target("direct, legacy", url, direct=True, mode="legacy"),
                    *(Target(n, f"{front}/{n}") for n in WORKERS),
                ]
                found = anyio.run(measure, targets, pids)
                busy = {n: memory(pids[n]) for n in WORKERS}
                loaded = {n: sdk_loaded(pids[n]) for n in WORKERS}
        finally:
            remote.stop()
    rows = []
    for n in WORKERS:
        rows.append(
            [
                n,
                "yes" if loaded[n] else "no",
                "/".join(f"{x:.1f}" for x in idle[n]),
                "/".join(f"{x:.1f}" for x in busy[n]),
                f"{start_cpu[n]:.2f} s",
                ms(found[f"cpu {n}"]),
            ]
        )
    print_table(
        "remote server worker: memory (MiB, RSS/USS/PSS) and CPU",
        [
            "worker",
            "SDK loaded",
            "running",
            f"after {2 * SEQUENTIAL + WARMUP + 3} calls",
            "CPU to running",
            "CPU per call",
        ],
        rows,
    )
    base = median(targets[1].latencies)  # the era the workers speak to the server
    rows = [
        [
            t.name,
            found["versions"][t.name],
            ms(median(t.latencies)),
            ms(p99(t.latencies)),
            f"{median(t.latencies) / base:.2f}×",
        ]
        for t in targets
    ]
    print_table(
        f"tools/call echo, sequential ({SEQUENTIAL} calls per target, interleaved)",
        ["target", "era", "p50", "p99", "p50 vs direct, legacy"],
        rows,
    )
    lean, sdk = median(targets[2].latencies), median(targets[3].latencies)
    record(
        "remote",
        "remote server worker RSS (lean client, after the calls)",
        "≤ 30 MiB",
        f"{busy['lean'][0]:.1f} MiB RSS, {busy['lean'][1]:.1f} USS "
        f"(SDK worker {busy['sdk'][0]:.1f})",
        busy["lean"][0] <= 30,
    )
    print(
        f"lean vs sdk worker: RSS {busy['lean'][0]:.1f} vs {busy['sdk'][0]:.1f} MiB "
        f"({busy['lean'][0] / busy['sdk'][0]:.2f}×), p50 {lean / sdk:.2f}×, CPU per call "
        f"{found['cpu lean'] / found['cpu sdk']:.2f}×",
        flush=True,
    )


if __name__ == "__main__":
    main()
