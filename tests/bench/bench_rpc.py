"""msgpack-rpc between a parent and a child process over a socketpair: Channel vs a bare baseline.

Variants (both ends run the same one):

* ``baseline`` — the least code that is still msgpack-rpc on asyncio: an ``asyncio.Protocol``,
  an ``Unpacker``, a dict of futures, one ``transport.write`` per call and one per read batch of
  replies; no validation, no tasks, no caps.
* ``channel`` — :class:`worker.channel.Channel` with a plain-function handler.
* ``channel+task`` — the same with an ``async def`` handler (one task per request).

Measured: sequential round trips (p50/p99), pipelined throughput with 64 calls in flight, and
CPU per call summed over both processes (``process_time``; the child reports its own). The three
variants run side by side in rounds and each figure is the median over rounds, because a shared
2-core machine is noisy. ``BENCH_RPC_CPUS=0,1`` pins parent and child to those CPUs (``0,0``:
both on one), which steadies the numbers; unpinned is what production sees.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from tests.bench._table import print_table
from worker.channel import Channel

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 7  # each metric is the median over rounds
WARMUP = 1_000
SEQUENTIAL = 1_500  # per round
PIPELINED = 12_800  # per round
IN_FLIGHT = 64
VARIANTS = ["baseline", "channel", "channel+task"]


def pin(which: int) -> None:
    """Pin this process to a CPU from ``BENCH_RPC_CPUS`` (parent: first, child: second)."""
    cpus = os.environ.get("BENCH_RPC_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(cpus.split(",")[which])})


def cpu() -> float:
    return time.process_time()  # user + system, ns resolution (os.times ticks at 10 ms)


# -- the baseline: a bare msgpack-rpc protocol ------------------------------------------------


class BareRpc(asyncio.Protocol):
    def __init__(self, handlers: dict[str, Any]) -> None:
        self.handlers = handlers
        self.unpacker = msgpack.Unpacker(raw=False)
        self.packer = msgpack.Packer(use_bin_type=True)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        replies = []
        for msg in self.unpacker:
            if msg[0] == 0:
                _, msgid, method, params = msg
                replies.append(self.packer.pack([1, msgid, None, self.handlers[method](*params)]))
            else:
                self.pending.pop(msg[1]).set_result(msg[3])
        if replies:
            assert self.transport is not None
            self.transport.write(b"".join(replies))

    async def request(self, method: str, *params: Any) -> Any:
        msgid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[msgid] = fut
        assert self.transport is not None
        self.transport.write(self.packer.pack([0, msgid, method, params]))
        return await fut


async def open_variant(variant: str, sock: socket.socket, handlers: dict[str, Any]) -> Any:
    """Connect ``sock`` as ``variant``; return an object with ``request(method, *params)``."""
    if variant == "baseline":
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        _, proto = await loop.create_connection(lambda: BareRpc(handlers), sock=sock)
        return proto
    channel = Channel(handlers, name=variant)
    await channel.connect(sock)
    return channel


# -- the child --------------------------------------------------------------------------------


async def child(variant: str, fd: int) -> None:
    pin(1)

    async def echo_async(x: Any) -> Any:
        return x

    echo = echo_async if variant == "channel+task" else (lambda x: x)
    end = await open_variant(variant, socket.socket(fileno=fd), {"echo": echo, "cpu": cpu})
    if isinstance(end, Channel):
        await end.wait_closed()
    else:
        await end.closed


# -- the parent -------------------------------------------------------------------------------


async def start(variant: str) -> tuple[Any, subprocess.Popen[bytes]]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_rpc", "--child", variant, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        cwd=ROOT,
    )
    theirs.close()
    peer = await open_variant(variant, ours, {})
    for i in range(WARMUP):
        await peer.request("echo", i)
    return peer, proc


async def stop(peer: Any, proc: subprocess.Popen[bytes]) -> None:
    if isinstance(peer, Channel):
        peer.close()
    else:
        peer.transport.close()
        await peer.closed
    await asyncio.to_thread(proc.wait, 10)


async def one_round(peer: Any) -> dict[str, float]:
    samples = []
    child_cpu, our_cpu = await peer.request("cpu"), cpu()
    for i in range(SEQUENTIAL):
        t0 = time.perf_counter_ns()
        await peer.request("echo", i)
        samples.append(time.perf_counter_ns() - t0)
    seq_cpu = (cpu() - our_cpu) + (await peer.request("cpu") - child_cpu)

    async def caller(n: int) -> None:
        for i in range(n):
            await peer.request("echo", i)

    calls = IN_FLIGHT * (PIPELINED // IN_FLIGHT)
    child_cpu, our_cpu, t0 = await peer.request("cpu"), cpu(), time.perf_counter()
    await asyncio.gather(*(caller(PIPELINED // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    wall = time.perf_counter() - t0
    pipe_cpu = (cpu() - our_cpu) + (await peer.request("cpu") - child_cpu)
    samples.sort()
    return {
        "p50": statistics.median(samples) / 1000,
        "p99": samples[int(len(samples) * 0.99)] / 1000,
        "seq_cpu": seq_cpu / SEQUENTIAL * 1e6,
        "rate": calls / wall,
        "pipe_cpu": pipe_cpu / calls * 1e6,
    }


async def measure() -> dict[str, dict[str, float]]:
    """All variants run side by side, round-robin, so load from elsewhere hits them alike."""
    pin(0)
    ends = {variant: await start(variant) for variant in VARIANTS}
    rounds: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    try:
        for _ in range(ROUNDS):
            for variant, (peer, _) in ends.items():
                rounds[variant].append(await one_round(peer))
    finally:
        for peer, proc in ends.values():
            await stop(peer, proc)
    return {
        variant: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for variant, runs in rounds.items()
    }


def main() -> None:
    results = asyncio.run(measure())
    base = results["baseline"]
    headers = [
        "variant",
        "seq p50 µs",
        "seq p99 µs",
        "CPU/call seq µs",
        f"pipelined ({IN_FLIGHT} in flight) calls/s",
        "CPU/call pipelined µs",
    ]
    rows = [
        [
            name,
            f"{r['p50']:.0f}",
            f"{r['p99']:.0f}",
            f"{r['seq_cpu']:.0f}",
            f"{r['rate']:,.0f}",
            f"{r['pipe_cpu']:.1f}",
        ]
        for name, r in results.items()
    ]
    for name in VARIANTS[1:]:
        r = results[name]
        rows.append(
            [
                f"{name} / baseline",
                f"{r['p50'] / base['p50']:.2f}×",
                f"{r['p99'] / base['p99']:.2f}×",
                f"{r['seq_cpu'] / base['seq_cpu']:.2f}×",
                f"{base['rate'] / r['rate']:.2f}× (time per call)",
                f"{r['pipe_cpu'] / base['pipe_cpu']:.2f}×",
            ]
        )
    print_table(
        f"msgpack-rpc parent ⇄ child over a socketpair (median of {ROUNDS} rounds;"
        " CPU = both processes)",
        headers,
        rows,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], int(sys.argv[3])))
    else:
        main()
