"""A published stdio MCP server (``mcp-server-time``) called directly, through spctl, and
through ``mcp-proxy``, with the official SDK client.

``tools/call get_current_time {"timezone": "UTC"}`` three ways:

(a) direct: the SDK client launches the server and talks to it over stdio (the baseline);
(b) spctl: the server as a ``command:`` extension of a real ``spctl serve``, called on the MCP
    front's ``/mcp/time`` over Streamable HTTP (client → front → core → worker → stdio server);
(c) ``spctl mcp time`` launched by the SDK client as its stdio server (the same transport as
    the baseline: client → ``spctl mcp`` → core → worker → stdio server);
(d) mcp-proxy 0.13.0 (a popular stdio→HTTP bridge) in front of the same server, called on its
    Streamable HTTP endpoint (``/mcp``; it also serves SSE on ``/sse``).

Then, target by target, the CPU each process on the path spends per call (psutil, over
``DECOMPOSE`` sequential calls): where the time goes, and what no bridge built on the SDK's
client and server can avoid.

Both published packages live in venvs of their own under ``.venv/test-cache`` (the recipe of
``tests/integration/test_stdio_servers.py``); when one cannot be installed or started, its row
says why instead of the run failing. Sequential latency p50/p99, the targets interleaved call by
call so the load of other processes on a shared box falls on all alike; then throughput with
``CALLERS`` concurrent callers, the median of alternating bursts. Every target has exactly one
server process behind it: the direct callers share one stdio session (one process is what one
client gets), the HTTP callers are separate clients with sessions of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import psutil
from mcp import Client, StdioServerParameters

from tests.bench._goals import record
from tests.bench._table import print_table
from tests.bench.bench_mcp import ms, p99, spctl
from tests.helpers import SPCTL, InstallFailed, pip_venv, wait_for

__all__ = ["main"]

TIME_PKG = "mcp-server-time"
PROXY_PKG = "mcp-proxy==0.13.0"
PROXY_VENV = "mcp-proxy"
TOOL = "get_current_time"
ARGS = {"timezone": "UTC"}
WARMUP = 20
SEQUENTIAL = 150  # timed calls per target
CALLERS = 8
PER_CALLER = 10  # calls per caller in a burst
BURSTS = 5  # per target
DECOMPOSE = 150  # sequential calls per target while the processes' CPU is measured
ROLES = ("client", "bridge", "core", "worker", "server")
RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


# -- installs and processes ------------------------------------------------------------------


def published(package: str, venv_name: str) -> Path | str:
    """The bin/ of a cached venv with ``package`` installed, or why it could not be made."""
    try:
        return pip_venv(venv_name, [package]) / "bin"
    except InstallFailed as e:
        return str(e)


@contextlib.contextmanager
def mcp_proxy(proxy: Path, server: list[str], log: Path) -> Iterator[str]:
    """``mcp-proxy`` hosting ``server`` on a free port of 127.0.0.1; yields its Streamable HTTP
    URL. It runs in a session of its own, so its stdio server goes down with it."""
    with open(log, "wb") as out:
        argv = [str(proxy), "--host", "127.0.0.1", "--port", "0", "--log-level", "INFO"]
        proc = subprocess.Popen(
            [*argv, "--", *server],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def port() -> str | None:
            if proc.poll() is not None:
                raise RuntimeError(f"mcp-proxy exited {proc.returncode}: {log.read_text()[-300:]}")
            found = RUNNING.search(log.read_text(errors="replace"))
            return found.group(1) if found else None

        yield f"http://127.0.0.1:{wait_for(port, 30, f'mcp-proxy to listen (log: {log})')}/mcp"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # the server, should it outlive the proxy
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- measurements ----------------------------------------------------------------------------


@dataclass
class Target:
    """One way to reach the server, and what was measured through it."""

    name: str
    server: str | StdioServerParameters
    one: Client | None = None
    many: list[Client] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    version: str = ""
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)  # see _processes
    cpu: dict[str, float] = field(default_factory=dict)  # role → CPU seconds per call
    alone: list[float] = field(default_factory=list)  # latencies while decomposing

    async def call(self, c: Client) -> None:
        result = await c.call_tool(TOOL, ARGS)
        assert not result.is_error and '"timezone": "UTC"' in result.content[0].text  # type: ignore[union-attr]

    async def burst(self) -> None:
        async def caller(c: Client) -> None:
            for _ in range(PER_CALLER):
                await self.call(c)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in self.many:
                tg.start_soon(caller, c)
        self.rates.append(CALLERS * PER_CALLER / (time.perf_counter() - t0))


def _processes(roles: dict[str, tuple[str, str]]) -> dict[str, psutil.Process]:
    """Our descendants by role: role → (a part of the start of its command line — the
    interpreter and the script or module, not the arguments —, the role of its parent or
    ``"us"``), so the same server run by several targets is told apart."""
    found: dict[str, psutil.Process] = {"us": psutil.Process()}
    for _ in roles:  # parents before children, whatever the order of ``roles``
        for role, (marker, parent) in roles.items():
            if role in found or parent not in found:
                continue
            for proc in found[parent].children(recursive=parent != "us"):
                try:
                    if marker in " ".join(proc.cmdline()[:4]) + " ":
                        found[role] = proc
                        break
                except psutil.Error:
                    continue
    del found["us"]
    return found


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {"client": time.process_time()}
    for role, proc in procs.items():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[role] = t.user + t.system
    return out


async def decompose(targets: list[Target]) -> None:
    """Per target (not interleaved): CPU per call of each process on its path."""
    for t in targets:
        assert t.one is not None
        procs = _processes(t.roles)
        before = _cpu(procs)
        for _ in range(DECOMPOSE):
            t0 = time.perf_counter()
            await t.call(t.one)
            t.alone.append(time.perf_counter() - t0)
        after = _cpu(procs)
        t.cpu = {r: (after[r] - before[r]) / DECOMPOSE for r in before if r in after}


async def compare(targets: list[Target]) -> None:
    """Interleave the targets call by call (sequential) and burst by burst (concurrent)."""
    async with contextlib.AsyncExitStack() as stack:
        for t in targets:
            t.one = await stack.enter_async_context(Client(t.server))
            t.version = t.one.protocol_version
            if isinstance(t.server, str):
                for _ in range(CALLERS):
                    t.many.append(await stack.enter_async_context(Client(t.server)))
            else:  # a second client would be a second server process
                t.many = [t.one] * CALLERS
            for c in {id(c): c for c in [t.one, *t.many]}.values():
                for _ in range(3):
                    await t.call(c)
        for i in range(WARMUP + SEQUENTIAL):
            for t in targets[i % len(targets) :] + targets[: i % len(targets)]:
                assert t.one is not None
                t0 = time.perf_counter()
                await t.call(t.one)
                if i >= WARMUP:
                    t.latencies.append(time.perf_counter() - t0)
        for r in range(BURSTS):
            for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
                await t.burst()
        await decompose(targets)


def main() -> None:
    time_bin = published(TIME_PKG, TIME_PKG)
    if isinstance(time_bin, str):
        print(f"bench_stdio skipped: {time_bin}", flush=True)
        return
    server = [str(time_bin / "mcp-server-time"), "--local-timezone=UTC"]
    proxy_bin = published(PROXY_PKG, PROXY_VENV)
    entry: dict[str, Any] = {"name": "time", "type": "local", "command": server}
    direct = Target("direct stdio", StdioServerParameters(command=server[0], args=server[1:]))
    direct.roles = {"server": ("mcp-server-time", "us")}
    targets = [direct]
    proxy_note = ""
    hosted = {
        "core": ("spctl serve", "us"),
        "worker": ("-m worker ", "core"),  # not the zygote's "-m worker.zygote"
        "server": ("mcp-server-time", "worker"),
    }
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(spctl(Path(tmp), [entry]))
        via = Target("spctl /mcp/time", f"{url}/time")
        via.roles = {"bridge": ("supervisor.mcp.front", "core"), **hosted}
        env = {**os.environ, "SPCTL_SOCKET": str(Path(tmp) / "run" / "control.sock")}
        stdio = Target(
            "spctl mcp time", StdioServerParameters(command=SPCTL, args=["mcp", "time"], env=env)
        )
        stdio.roles = {"bridge": ("spctl mcp", "us"), **hosted}
        targets += [via, stdio]
        if isinstance(proxy_bin, str):
            proxy_note = proxy_bin
        else:
            try:
                proxy_url = stack.enter_context(
                    mcp_proxy(proxy_bin / "mcp-proxy", server, Path(tmp) / "proxy.log")
                )
                proxied = Target("mcp-proxy 0.13.0 /mcp", proxy_url)
                proxied.roles = {
                    "bridge": ("bin/mcp-proxy", "us"),
                    "server": ("mcp-server-time", "bridge"),
                }
                targets.append(proxied)
            except (OSError, RuntimeError, AssertionError) as e:
                proxy_note = f"mcp-proxy did not start: {e}"
        anyio.run(compare, targets)

    base50, base99, base_rate = (
        median(direct.latencies),
        p99(direct.latencies),
        median(direct.rates),
    )
    via50 = median(via.latencies)
    record(
        "stdio",
        "published stdio server via /mcp/<name> vs direct stdio, p50",
        "≤ 1.8×",
        f"{ms(via50)} vs {ms(base50)}: {via50 / base50:.2f}× "
        f"(spctl mcp {median(stdio.latencies) / base50:.2f}×)",
        via50 <= 1.8 * base50,
    )
    rows = []
    for t in targets:
        a50, a99, rate = median(t.latencies), p99(t.latencies), median(t.rates)
        goal = "≤ 1.5×" if t in (via, stdio) else ""
        rows.append(
            [
                f"{t.name} ({t.version})",
                ms(a50),
                ms(a99),
                f"{a50 / base50:.2f}×",
                f"{a99 / base99:.2f}×",
                f"{rate:.0f} calls/s",
                f"{rate / base_rate:.2f}×",
                goal,
            ]
        )
    if proxy_note:
        note = " ".join(proxy_note.split())[:160]  # one table line
        rows.append(["mcp-proxy 0.13.0", "—", "—", "—", "—", "—", "—", note])
    print_table(
        f"tools/call {TOOL} of mcp-server-time: direct stdio vs through spctl vs through "
        f"mcp-proxy (SDK client, auto era); {SEQUENTIAL} sequential calls each, interleaved; "
        f"throughput: median of {BURSTS} alternating bursts of {CALLERS}×{PER_CALLER} "
        f"(direct: {CALLERS} callers on one stdio session; HTTP: {CALLERS} clients)",
        [
            *("path (protocol)", "p50", "p99", "p50 / direct", "p99 / direct"),
            *("throughput", "thr. / direct", "goal"),
        ],
        rows,
    )
    decomposed = []
    for t in targets:
        total = sum(t.cpu.values())
        cells = [ms(t.cpu[r]) if r in t.cpu else "—" for r in ROLES]
        decomposed.append([t.name, ms(median(t.alone)), *cells, ms(total)])
    print_table(
        f"where a call's time goes: CPU per call of each process on the path "
        f"({DECOMPOSE} sequential calls per target, one target at a time; client = the "
        f"benchmark's SDK client; bridge = the MCP front, `spctl mcp` or mcp-proxy)",
        ["path", "p50", *(f"{r} CPU" for r in ROLES), "CPU total"],
        decomposed,
    )


if __name__ == "__main__":
    main()
