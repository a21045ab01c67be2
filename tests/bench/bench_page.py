"""What the status page costs an idle supervisor: its CPU with the page open in headless
Chromium (polling ``/api/status`` every second) beside its CPU with no page open, in one run.

One ``spctl serve`` of the embedded default (the repo's ``extensions/``) with its front; after
it settles, 30 s with no browser, then 30 s with the page open, then 30 s without again (the
baseline is the mean of both, so a drift of the box's load falls on both alike). Measured:
CPU of the supervisor core and of the front (psutil), as % of one core. Goal: core ≤ 0.5 %
with the page open. Skipped, saying why, without /usr/bin/chromium.
"""

from __future__ import annotations

import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psutil

from tests.bench._table import print_table
from tests.browser import CHROMIUM, default_serve, launch
from tests.helpers import wait_for

__all__ = ["main"]

SECONDS = 30.0


def _cpu(procs: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in procs]


def _measure(procs: list[psutil.Process], seconds: float) -> list[float]:
    """% of one core each process used over ``seconds`` (a measurement window, not a wait)."""
    t0, c0 = time.monotonic(), _cpu(procs)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), _cpu(procs)
    return [100 * (b - a) / (t1 - t0) for a, b in zip(c0, c1, strict=True)]


def main() -> None:
    if not CHROMIUM.exists():
        print(f"bench_page: skipped: {CHROMIUM} is not installed (apt-get install chromium)\n")
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        s = default_serve(Path(tmp))
        try:
            s.start()
            s.wait_state("notes", "running", 60)

            def front() -> dict[str, Any] | None:
                st = s.try_status()
                f = st["supervisor"]["mcp_front"] if st else None
                return dict(f) if f and f["state"] == "running" and f["url"] else None

            info: dict[str, Any] = wait_for(front, 60, "the MCP front")
            assert s.proc is not None
            core = psutil.Process(s.proc.pid)
            procs = [core, psutil.Process(int(str(info["pid"])))]
            parts = urllib.parse.urlsplit(str(info["url"]))
            url = f"{parts.scheme}://{parts.netloc}/"
            before = _measure(procs, SECONDS)
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector('tr[data-name="notes"]')
                opened = _measure(procs, SECONDS)
                polls = page.evaluate("() => performance.getEntriesByType('resource').length")
                browser.close()
            after = _measure(procs, SECONDS)
        finally:
            s.stop()
    base = [(a + b) / 2 for a, b in zip(before, after, strict=True)]
    names = ["supervisor core", "MCP front"]
    rows = [
        [name, f"{b:.2f} %", f"{o:.2f} %", f"{o - b:+.2f}"]
        for name, b, o in zip(names, base, opened, strict=True)
    ]
    print_table(
        f"Idle CPU (% of one core, {SECONDS:.0f} s each) with the status page open in headless "
        f"Chromium ({polls} requests) vs none (mean of before and after)",
        ["process", "no page", "page open", "Δ (points)"],
        rows,
    )
    print(f"goal: supervisor core ≤ 0.5 % with the page open: {opened[0]:.2f} %")
