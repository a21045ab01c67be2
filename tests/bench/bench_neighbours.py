"""Neighbours that crash-loop or hang vs a sibling's MCP calls through the front.

One ``spctl serve`` with the MCP front hosts a well-behaved ``sibling`` (the ``mcp_echo``
fixture) and three neighbours, disabled at first. The official SDK client calls
``sibling__echo`` on the aggregate ``/mcp`` sequentially, one call then a fixed pause (a
steady rate, not a flood of our own), through segments of these kinds:

* calm: the neighbours disabled — the baseline;
* crash loop: ``crashy`` (``mcp_misbehaves``, mode crash) exits 1 ~50 ms after it initializes,
  under ``restart: always`` with backoff 0 and no intensity limit, so the supervisor restarts
  it as fast as it can start a worker; its tools appear and vanish on ``/mcp`` with each run;
* hung calls: ``hangs`` (``mcp_echo`` with ``timeout: 0.5s``) is kept busy by 4 clients of
  ``/mcp/hangs`` calling ``slow`` for an hour, each getting the timeout error and calling again;
* blocked loop: ``stuck`` (``mcp_misbehaves``, mode block) blocks its event loop right after it
  is ready; the segment lasts until the health checks (the defaults: a ping every 5 s, 2 misses
  in a row) have killed it.

A calm segment comes before and after each misbehaving one (calm, crash, calm, hang, calm,
block, calm, crash, calm, hang, calm) and each kind's calls are pooled, so drift in the load
other jobs put on the machine falls on the baseline and the misbehaviour alike. Each segment
checks that its neighbour really misbehaved (restarts counted, timeout errors naming the
timeout, the health check's kill), and the sibling's p99 must stay under 2× the calm p99 and
its p50 under 1.5× the calm p50; otherwise the benchmark exits with a message naming the phase.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp import Client, MCPError

from tests.bench._table import print_table
from tests.bench.bench_mcp import serving
from tests.helpers import Serve, make_extensions, server_entry, wait_for

__all__ = ["main"]

T = TypeVar("T")

SEGMENT = 150  # sibling calls per segment (at least: the blocked one lasts until the kill)
WARMUP = 30
PAUSE = 0.02  # between two sibling calls
CALLERS = 4  # clients calling the hanging tool at once
HANG_TIMEOUT = "0.5s"
TIMEOUT_ERROR = f"-32001 hangs: no answer within timeout {HANG_TIMEOUT}"
P99_BOUND, P50_BOUND = 2.0, 1.5
TEXT = "neighbourly"


def _servers(root: Path) -> list[dict[str, Any]]:
    return [
        server_entry("sibling", "mcp_echo"),
        server_entry(
            "crashy",
            "mcp_misbehaves",
            enabled=False,
            config={"mode": "crash", "after": 0.05},
            # As often as the supervisor will: no backoff, no intensity limit to give up at.
            restart={"policy": "always", "backoff": 0, "maxBackoff": 0, "maxRestarts": 10**9},
        ),
        server_entry("hangs", "mcp_echo", enabled=False, timeout=HANG_TIMEOUT),
        server_entry(
            "stuck",
            "mcp_misbehaves",
            enabled=False,
            config={"mode": "block", "after": 0.1, "marker": str(root / "stuck.marker")},
            restart={"policy": "always"},
            stopTimeout="1s",  # it cannot answer shutdown: don't wait 10 s for the SIGKILL
        ),
    ]


def _spctl(root: Path) -> contextlib.AbstractContextManager[tuple[Serve, str]]:
    """``spctl serve`` with the front on a free port; yields it and the /mcp URL once the
    sibling is running and the front is up."""

    def sibling_running(status: dict[str, Any]) -> bool:
        return any(e["name"] == "sibling" and e["state"] == "running" for e in status["extensions"])

    return serving(root, make_extensions(root, [], _servers(root)), sibling_running, "the sibling")


@dataclass
class Phase:
    """One kind of phase; its segments' calls are pooled."""

    name: str
    latencies: list[float] = field(default_factory=list)
    segments: list[float] = field(default_factory=list)  # each segment's p50, ms
    counts: Counter[str] = field(default_factory=Counter)  # what the neighbour did
    seconds: float = 0.0
    notes: str = ""

    def add(self, latencies: list[float]) -> None:
        self.latencies += latencies
        self.segments.append(median(latencies) * 1000)

    @property
    def p50(self) -> float:
        return median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


class Bench:
    """The phases, interleaved with calm segments on one supervisor and one sibling client."""

    def __init__(self, s: Serve, url: str, root: Path) -> None:
        self.s, self.url, self.root = s, url, root
        self.failures: list[str] = []
        self.calm = Phase("calm (baseline)")
        self.crash = Phase("crash loop (restart: always, backoff 0)")
        self.hang = Phase(f"hung calls ({CALLERS} clients, timeout {HANG_TIMEOUT})")
        self.block = Phase("blocked event loop (health checks: defaults)")

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(*args))

    async def toggle(self, verb: str, name: str, state: str | None = None) -> None:
        await self.blocking(self.s.spctl, verb, name)  # a crashing start may say it failed
        if state is not None:
            await self.blocking(self.s.wait_state, name, state, 30)

    def ext(self, name: str) -> dict[str, Any]:
        return self.s.ext(name)

    def transitions(self, name: str, to: str) -> int:
        logs = self.s.logs()
        return sum(
            1
            for e in logs
            if e.get("event") == "state" and e.get("extension") == name and e.get("to") == to
        )

    async def sibling(
        self, c: Client, calls: int, more: Callable[[], bool] = lambda: False
    ) -> list[float]:
        """``calls`` sequential echo calls (then more while ``more()``), a pause after each."""
        out: list[float] = []
        while len(out) < calls or more():
            t0 = time.perf_counter()
            result = await c.call_tool("sibling__echo", {"text": TEXT})
            out.append(time.perf_counter() - t0)
            if result.is_error or result.content[0].text != TEXT:  # type: ignore[union-attr]
                raise SystemExit(f"sibling__echo answered {result}")
            await anyio.sleep(PAUSE)  # the call rate, not synchronisation
        return out

    # -- the misbehaving segments ------------------------------------------------------------

    async def crash_loop(self, c: Client) -> None:
        await self.toggle("enable", "crashy")
        await self.blocking(
            wait_for, lambda: self.ext("crashy")["restarts"] >= 3, 30, "crashy to crash-loop"
        )
        r0, up0 = self.ext("crashy")["restarts"], self.transitions("crashy", "running")
        t0 = time.monotonic()
        self.crash.add(await self.sibling(c, SEGMENT))
        self.crash.seconds += time.monotonic() - t0
        self.crash.counts["restarts"] += self.ext("crashy")["restarts"] - r0
        self.crash.counts["running"] += self.transitions("crashy", "running") - up0
        await self.toggle("disable", "crashy", "disabled")

    async def hung_calls(self, c: Client) -> None:
        await self.toggle("enable", "hangs", "running")
        errors: list[str] = []
        answers: list[str] = []
        steady = anyio.Event()

        async def caller() -> None:
            async with Client(f"{self.url}/hangs") as hc:
                while True:
                    try:
                        result = await hc.call_tool("slow", {"seconds": 3600})
                        answers.append(str(result))
                    except MCPError as e:
                        errors.append(f"{e.code} {e.message}")
                        if len(errors) >= CALLERS:
                            steady.set()

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)
            with anyio.fail_after(30):
                await steady.wait()  # the callers are in their stride
            n0 = len(errors)
            self.hang.add(await self.sibling(c, SEGMENT))
            seen = errors[n0:]
            tg.cancel_scope.cancel()
        await self.toggle("disable", "hangs", "disabled")
        self.hang.counts["timeouts"] += len(seen)
        self.hang.counts["named"] += seen.count(TIMEOUT_ERROR)
        self.hang.counts["answers"] += len(answers)
        for other in {e for e in seen if e != TIMEOUT_ERROR}:
            self.failures.append(f"{self.hang.name}: unexpected error {other!r}")

    async def blocked_loop(self, c: Client) -> None:
        marker = self.root / "stuck.marker"
        await self.toggle("enable", "stuck", "running")
        await self.blocking(
            wait_for, lambda: marker.exists() and "block" in marker.read_text(), 10, "stuck blocked"
        )
        blocked_at = float(marker.read_text().split()[1])
        done = anyio.Event()

        def health_kill() -> str | None:
            last = self.ext("stuck")["last_exit"] or ""
            return last if "health check timeout" in last else None

        async def watch() -> None:
            why = await self.blocking(wait_for, health_kill, 40, "the health check to kill stuck")
            self.block.seconds = time.monotonic() - blocked_at
            self.block.notes = why
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            self.block.add(await self.sibling(c, SEGMENT, lambda: not done.is_set()))
        self.block.counts["killed"] += 1
        await self.toggle("disable", "stuck", "disabled")

    async def run(self) -> list[Phase]:
        crash, hang, block = self.crash_loop, self.hung_calls, self.blocked_loop
        async with Client(self.url) as c:
            await self.sibling(c, WARMUP)
            # Calm segments between the others: drift in the machine's load falls on both.
            for step in (crash, hang, block, crash, hang):
                self.calm.add(await self.sibling(c, SEGMENT))
                await step(c)
            self.calm.add(await self.sibling(c, SEGMENT))
        self.verify()
        return [self.calm, self.crash, self.hang, self.block]

    def verify(self) -> None:
        """A phase whose neighbour did nothing measured nothing: say what each one did."""
        crash, hang, block = self.crash.counts, self.hang.counts, self.block.counts
        self.crash.notes = (
            f"{crash['restarts']} restarts in {self.crash.seconds:.1f} s "
            f"({crash['restarts'] / self.crash.seconds:.1f}/s); "
            f"{crash['running']} of the runs reached running"
        )
        self.hang.notes = (
            f"{hang['timeouts']} calls timed out meanwhile, {hang['named']} with `{TIMEOUT_ERROR}`"
        )
        self.block.notes = (
            f"blocked, then killed {self.block.seconds:.1f} s later: `{self.block.notes}`"
        )
        self.calm.notes = (
            "neighbours disabled; segment p50s "
            f"{min(self.calm.segments):.2f}–{max(self.calm.segments):.2f} ms"
        )
        checks = [
            (self.crash, crash["restarts"] > 0, "no restarts"),
            (self.hang, hang["timeouts"] > 0, "no timeouts"),
            (self.hang, hang["named"] == hang["timeouts"], "timeouts not named as such"),
            (self.hang, hang["answers"] == 0, "the hanging tool answered"),
            (self.block, block["killed"] > 0, "not killed by the health check"),
        ]
        for phase, ok, what in checks:
            if not ok:
                self.failures.append(f"{phase.name}: the neighbour did not misbehave: {what}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, _spctl(Path(tmp)) as (s, url):
        status = s.try_status()
        enforcement = status["supervisor"]["limits_enforcement"] if status else "?"
        bench = Bench(s, url, Path(tmp))
        phases = anyio.run(bench.run)
    calm = bench.calm
    rows = [
        [
            p.name,
            str(len(p.latencies)),
            f"{p.p50:.2f} ms",
            f"{p.p99:.2f} ms",
            f"{p.p50 / calm.p50:.2f}×",
            f"{p.p99 / calm.p99:.2f}×",
            p.notes,
        ]
        for p in phases
    ]
    print_table(
        f"A neighbour crash-looping or hanging vs a sibling's tools/call echo through /mcp "
        f"(SDK client, sequential, {PAUSE * 1000:.0f} ms pause between calls; limits: "
        f"{enforcement}; bound: p50 < {P50_BOUND}×, p99 < {P99_BOUND}× calm)",
        ["phase", "calls", "p50", "p99", "p50/calm", "p99/calm", "neighbour (verified)"],
        rows,
    )
    failures = list(bench.failures)
    for p in phases[1:]:
        if p.p99 >= P99_BOUND * calm.p99:
            failures.append(f"{p.name}: sibling p99 {p.p99 / calm.p99:.2f}× calm")
        if p.p50 >= P50_BOUND * calm.p50:
            failures.append(f"{p.name}: sibling p50 {p.p50 / calm.p50:.2f}× calm")
    if failures:
        raise SystemExit("bench_neighbours: " + "; ".join(failures))


if __name__ == "__main__":
    main()
