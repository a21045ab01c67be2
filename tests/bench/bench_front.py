"""The front's event loop and HTTP parser, and its CPU per call (issue #16 item 4): asyncio +
h11 (pure Python, the front until stop 23) vs uvloop and httptools (uvicorn[standard]'s pieces),
each alone and both (today's default).

One ``spctl serve --no-front`` hosts the ``mcp_echo`` fixture; four fronts are started by hand
against its control socket, alike in every flag but ``--loop`` and ``--http``.
The official SDK client calls ``echo__echo`` through each, alternating call by call and burst by
burst (so the load of other processes on a shared 2-core box falls on both alike), in both
protocol eras. Measured: sequential p50/p99, throughput with 8 concurrent clients (median of
bursts), and the front's own CPU per call (user + system of the front process over the run,
divided by the calls it served; the core and worker are shared, so they cancel out).

"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median

import anyio
import psutil

from tests.bench._table import print_table
from tests.bench.bench_mcp import (
    BURSTS,
    CALLERS,
    MODES,
    PER_CALLER,
    SEQUENTIAL,
    WARMUP,
    Target,
    compare,
    ms,
    p99,
)
from tests.helpers import Serve, make_extensions, server_entry, wait_for

__all__ = ["main"]

# (label, --loop, --http); the first is the baseline, the last the default
CONFIGS = [
    ("asyncio + h11", "asyncio", "h11"),
    ("uvloop + h11", "uvloop", "h11"),
    ("asyncio + httptools", "asyncio", "httptools"),
    ("uvloop + httptools", "uvloop", "httptools"),
]
# calls each front serves in one compare(): warm-up (3 per client), sequential, bursts
CALLS = 3 * (1 + CALLERS) + WARMUP + SEQUENTIAL + BURSTS * CALLERS * PER_CALLER


@contextlib.contextmanager
def front(sock: Path, loop: str, http: str, log: Path) -> Iterator[tuple[str, psutil.Process]]:
    """A front on ``sock`` with ``--loop loop --http http`` on a free port: its /mcp URL and
    process."""
    argv = [sys.executable, "-m", "supervisor.mcp.front", "--socket", str(sock)]
    argv += ["--listen", "127.0.0.1:0", "--no-status-page", "--loop", loop, "--http", http]
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"front ({loop}, {http}) did not start: {log.read_text()[-2000:]}")
        yield line.split()[-1], psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(tmp: Path) -> None:
    ext = make_extensions(tmp, [], [server_entry("echo", "mcp_echo")])
    s = Serve(tmp, ext, tmp / "run" / "control.sock").start()
    rows = []
    try:
        wait_for(
            lambda: (st := s.try_status()) and st["extensions"][0]["state"] == "running",
            60,
            "echo running",
        )
        with contextlib.ExitStack() as stack:
            fronts = {
                label: stack.enter_context(front(s.socket, loop, http, tmp / f"front-{i}.log"))
                for i, (label, loop, http) in enumerate(CONFIGS)
            }
            for mode in MODES:
                targets = {
                    label: Target(label, url, "echo__echo") for label, (url, _) in fronts.items()
                }
                before = {label: cpu(p) for label, (_, p) in fronts.items()}
                anyio.run(compare, list(targets.values()), mode)
                per_call = {
                    label: (cpu(p) - before[label]) / CALLS for label, (_, p) in fronts.items()
                }
                ts = list(targets.values())
                era = f"{mode} ({ts[0].version})"
                measures: list[tuple[str, dict[str, float], Callable[[float], str]]] = [
                    ("p50", {t.name: median(t.latencies) for t in ts}, ms),
                    ("p99", {t.name: p99(t.latencies) for t in ts}, ms),
                    (
                        f"throughput, {CALLERS} clients",
                        {t.name: median(t.rates) for t in ts},
                        lambda r: f"{r:.0f} calls/s",
                    ),
                    ("front CPU per call", per_call, ms),
                ]
                for what, values, shown in measures:
                    base, now = values[CONFIGS[0][0]], values[CONFIGS[-1][0]]
                    rows.append(
                        [era, what, *(shown(values[c[0]]) for c in CONFIGS), f"{now / base:.2f}×"]
                    )
    finally:
        s.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print_table(
        f"the front's loop and parser (same core and worker; tools/call echo, {SEQUENTIAL} "
        f"sequential calls each, interleaved; throughput: median of {BURSTS} alternating bursts "
        f"of {CALLERS}×{PER_CALLER}); load average {load}",
        ["era", "measure", *(c[0] for c in CONFIGS), "default / baseline"],
        rows,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        measure(Path(tmp))


if __name__ == "__main__":
    main()
