"""What metrics cost the front, and what a ``/metrics`` scrape costs.

1. ``tools/call`` of ``echo`` (the ``mcp_echo`` fixture) through two fronts on one core, in
   one run: ``python -m supervisor.mcp.front --no-metrics`` and the default (every call
   measured in the histogram), interleaved call by call and burst by burst as bench_mcp does
   (2026-07-28 era), so the load other processes put on a shared box falls on both alike.
   p50/p99 of sequential calls, throughput of 8 concurrent clients (median over bursts).
   Goal: ≤ 3 % cost.
2. ``GET /metrics`` with 1 and 100 extensions (the tiny handler of bench_mcp): the scrape's
   wall time as an HTTP client sees it, beside the core's ``status`` alone over the control
   socket (what every scrape asks). Goal: ≤ 20 ms with 100.
3. ``tools/call`` of ``echo`` through two cores, one ``spctl serve --no-audit`` and one with
   the audit log (the default: one JSON line per call, written by the core's thread), each
   with its own front (``--no-metrics``), interleaved as in 1. Goal: ≤ 3 % cost. And the
   writer alone: what ``AuditLog.record`` costs the event loop per call, and how many records
   a second its thread writes (defaults; and with ``--audit-bodies``).

Every process started here is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import anyio

from supervisor.control.client import ControlClient
from tests.bench._table import print_table
from tests.bench.bench_mcp import BURSTS, CALLERS, NEVER, SEQUENTIAL, TINY, Target, compare, ms, p99
from tests.helpers import Serve, make_extensions, server_entry, wait_for

__all__ = ["main"]

SCRAPES = 40
MANY = 100


@contextlib.contextmanager
def front(sock: Path, log: Path, *extra: str) -> Iterator[str]:
    """A standalone front on ``sock`` on a free port; yields its base URL (no path)."""
    argv = [sys.executable, "-m", "supervisor.mcp.front", "--socket", str(sock)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [*argv, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"front did not start: {log.read_text()[-2000:]}")
        yield line.split()[-1].removesuffix("/mcp")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def core(
    root: Path, servers: list[dict[str, object]], tiny: bool = False, extra: tuple[str, ...] = ()
) -> Iterator[Serve]:
    """``spctl serve --no-front [extra…]`` with ``servers``, once all of them run."""
    ext = make_extensions(root, [], servers)
    if tiny:
        (ext / "servers" / "tiny").mkdir(exist_ok=True)
        (ext / "servers" / "tiny" / "__init__.py").write_text(TINY)
    s = Serve(root, ext, root / "run" / "control.sock", extra_args=list(extra))
    try:
        s.start()

        def all_running() -> bool:
            st = s.try_status()
            return bool(st) and all(e["state"] == "running" for e in st["extensions"])

        wait_for(all_running, 180, f"{len(servers)} extensions (log: {s.log_path})")
        yield s
    finally:
        s.stop()


def part_calls(tmp: Path) -> None:
    with (
        core(tmp, [server_entry("echo", "mcp_echo")]) as s,
        front(s.socket, tmp / "bare.log", "--no-metrics") as bare_url,
        front(s.socket, tmp / "metered.log") as metered_url,
    ):
        bare = Target("no metrics", f"{bare_url}/mcp", "echo__echo")
        metered = Target("metrics", f"{metered_url}/mcp", "echo__echo")
        anyio.run(compare, [bare, metered], "auto")
        status, body = get(metered_url, "/metrics")
        assert status == 200 and b'gen_ai_tool_name="echo"' in body, body[:500]
    print_cost(
        f"tools/call echo through the front without and with metrics (one core, two fronts, "
        f"{SEQUENTIAL} sequential calls each, interleaved; throughput: median of {BURSTS} "
        f"alternating bursts of {CALLERS} clients)",
        ("--no-metrics", "metrics on"),
        bare,
        metered,
    )


def print_cost(title: str, columns: tuple[str, str], bare: Target, other: Target) -> None:
    """p50, p99 and throughput of ``other`` beside ``bare``, and what ``other`` costs."""
    a50, b50 = median(bare.latencies), median(other.latencies)
    a99, b99 = p99(bare.latencies), p99(other.latencies)
    ar, br = median(bare.rates), median(other.rates)
    print_table(
        title,
        ["measure", *columns, "cost", "goal"],
        [
            ["p50", ms(a50), ms(b50), f"{(b50 / a50 - 1) * 100:+.1f} %", "≤ +3 %"],
            ["p99", ms(a99), ms(b99), f"{(b99 / a99 - 1) * 100:+.1f} %", ""],
            [
                "throughput",
                f"{ar:.0f} calls/s",
                f"{br:.0f} calls/s",
                f"{(1 - br / ar) * 100:+.1f} %",
                "≤ 3 %",
            ],
        ],
    )


def part_audit(tmp: Path) -> None:
    (tmp / "off").mkdir()
    (tmp / "on").mkdir()
    echo = [server_entry("echo", "mcp_echo")]
    with (
        core(tmp / "off", echo, extra=("--no-audit",)) as off,
        core(tmp / "on", [server_entry("echo", "mcp_echo")]) as on,
        front(off.socket, tmp / "off.log", "--no-metrics") as off_url,
        front(on.socket, tmp / "on.log", "--no-metrics") as on_url,
    ):
        bare = Target("no audit", f"{off_url}/mcp", "echo__echo")
        audited = Target("audit", f"{on_url}/mcp", "echo__echo")
        anyio.run(compare, [bare, audited], "auto")
        log = tmp / "on" / "state" / "audit.jsonl"
        lines = len(log.read_text().splitlines()) if log.exists() else 0
        assert lines > SEQUENTIAL, f"only {lines} audit lines"
        assert not (tmp / "off" / "state" / "audit.jsonl").exists()
    print_cost(
        f"tools/call echo without and with the audit log (two cores, a front each, "
        f"{SEQUENTIAL} sequential calls each, interleaved; throughput: median of {BURSTS} "
        f"alternating bursts of {CALLERS} clients; {lines} audit lines written)",
        ("--no-audit", "audit on"),
        bare,
        audited,
    )


WRITER_RECORDS = 50_000


def part_writer(tmp: Path) -> None:
    from supervisor.core.audit import AuditLog, AuditOptions

    rows = []
    for bodies in (False, True):
        log = AuditLog(AuditOptions(path=tmp / f"writer-{bodies}.jsonl", bodies=bodies))
        log.start()
        params = {"name": "echo", "arguments": {"text": "hello", "api_key": "k" * 40}}
        meta = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        t0 = time.perf_counter()
        for _ in range(WRITER_RECORDS):
            log.record("front", "echo", "tools/call", params, meta, time.time(), 0.01, None)
        queued = time.perf_counter() - t0
        wait_for(lambda log=log: log.written >= WRITER_RECORDS, 120, "the writer")  # type: ignore[misc]
        drained = time.perf_counter() - t0
        log.close()
        rows.append(
            [
                "with --audit-bodies" if bodies else "default",
                f"{queued / WRITER_RECORDS * 1e6:.2f} µs",
                f"{WRITER_RECORDS / drained:,.0f} records/s",
            ]
        )
    print_table(
        f"the audit writer alone ({WRITER_RECORDS:,} records queued as fast as possible)",
        ["records", "record() on the loop, per call", "written by the thread"],
        rows,
    )


def get(base: str, path: str) -> tuple[int, bytes]:
    host, _, port = base.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def part_scrape(tmp: Path) -> None:
    rows = []
    for n in (1, MANY):
        root = tmp / f"scrape-{n}"
        root.mkdir()
        servers = [
            server_entry(f"t-{i:03d}", "tiny", config={"tools": 10}, restart=NEVER)
            for i in range(n)
        ]
        with core(root, servers, tiny=True) as s, front(s.socket, root / "front.log") as url:
            scrapes, statuses = [], []
            size = 0
            with ControlClient(s.socket, timeout=30) as control:
                for i in range(3 + SCRAPES):
                    t0 = time.perf_counter()
                    status, body = get(url, "/metrics")
                    took = time.perf_counter() - t0
                    assert status == 200, body[:500]
                    t0 = time.perf_counter()
                    control.call("status", None)
                    alone = time.perf_counter() - t0
                    if i >= 3:
                        scrapes.append(took)
                        statuses.append(alone)
                    size = len(body)
        rows.append(
            [
                f"{n} extension{'s' if n > 1 else ''}",
                ms(median(scrapes)),
                ms(max(scrapes)),
                ms(median(statuses)),
                f"{size / 1024:.0f} KiB",
                "≤ 20 ms" if n == MANY else "",
            ]
        )
    print_table(
        f"GET /metrics ({SCRAPES} scrapes, one at a time; each asks the core for status)",
        ["extensions", "scrape p50", "scrape max", "core status alone p50", "body", "goal"],
        rows,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "calls").mkdir()
        part_calls(root / "calls")
        part_scrape(root)
        (root / "audit").mkdir()
        part_audit(root / "audit")
        part_writer(root / "audit")


if __name__ == "__main__":
    main()
