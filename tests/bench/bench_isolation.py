"""Isolation under misbehaviour, each against a baseline measured in the same run:

* a sibling extension's call latency (supervisor ⇄ worker round trip through the control
  socket) while another extension's memory bomb is killed, vs the same sibling when all is calm;
* output flood: how many lines/s a worker can print (all read, up to the budget logged) while
  ``spctl status``-style control calls stay fast, vs the same calls with no flood.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from supervisor.control.client import ControlClient
from tests.bench._table import print_table
from tests.helpers import Serve, make_extensions, module_entry, wait_for


def _latencies(sock: Path, method: str, *params: object, seconds: float) -> list[float]:
    out: list[float] = []
    with ControlClient(sock, timeout=10) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            c.call(method, *params)
            out.append(time.monotonic() - t0)
            time.sleep(0.01)  # a steady call rate, not a flood of our own
    return out


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def _membomb(root: Path) -> list[list[str]]:
    progress = root / "mib"
    mods = [
        module_entry("sibling", "ok_daemon"),
        module_entry(
            "bomb",
            "hog",
            enabled=False,
            config={"mode": "membomb", "rate": 50, "progress": str(progress)},
            limits={"memory": "256MiB"},
            restart={"policy": "never"},
        ),
    ]
    ext = make_extensions(root, mods)
    s = Serve(root, ext, root / "run" / "control.sock").start()
    try:
        s.wait_state("sibling", "running")
        calm = _latencies(s.socket, "worker_ping", "sibling", seconds=3)
        during: list[float] = []
        t = threading.Thread(
            target=lambda: during.extend(_latencies(s.socket, "worker_ping", "sibling", seconds=8))
        )
        t.start()
        s.spctl("enable", "bomb")
        t.join()
        e = s.ext("bomb")
        killed = e["state"] in ("stopped", "crashed", "failed")
    finally:
        s.stop()
    return [
        [
            "sibling call p50 / p99, calm (baseline)",
            f"{_p(calm, 0.5):.2f} / {_p(calm, 0.99):.2f} ms",
            "",
        ],
        [
            "sibling call p50 / p99, neighbour's 50 MiB/s memory bomb killed",
            f"{_p(during, 0.5):.2f} / {_p(during, 0.99):.2f} ms",
            f"p99 {_p(during, 0.99) / _p(calm, 0.99):.2f}× calm (goal < 2×); bomb killed: {killed}",
        ],
    ]


def _flood(root: Path) -> list[list[str]]:
    counter = root / "count"
    mods = [
        module_entry("calm", "ok_daemon"),
        module_entry("flood", "flood", enabled=False, config={"counter": str(counter)}),
    ]
    ext = make_extensions(root, mods)
    s = Serve(root, ext, root / "run" / "control.sock").start()
    try:
        s.wait_state("calm", "running")
        quiet = _latencies(s.socket, "status", None, seconds=3)
        s.spctl("enable", "flood")
        wait_for(lambda: counter.exists(), 10, "flood running")
        c0, t0 = int(counter.read_text()), time.monotonic()
        loud = _latencies(s.socket, "status", None, seconds=5)
        rate = (int(counter.read_text()) - c0) / (time.monotonic() - t0)
        logged = sum(
            1 for e in s.logs() if e.get("event") == "output" and e.get("extension") == "flood"
        )
    finally:
        s.stop()
    return [
        [
            "`status` p50 / p99, no flood (baseline)",
            f"{_p(quiet, 0.5):.2f} / {_p(quiet, 0.99):.2f} ms",
            "",
        ],
        [
            "`status` p50 / p99, one worker flooding stdout",
            f"{_p(loud, 0.5):.2f} / {_p(loud, 0.99):.2f} ms",
            f"flood sustained {rate:,.0f} lines/s ({rate * 100 / 2**20:.1f} MiB/s); "
            f"{logged:,} lines logged in all (budget 2000/s)",
        ],
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        rows = _membomb(Path(a)) + _flood(Path(b))
    print_table(
        "Isolation: a misbehaving extension vs its neighbours", ["measure", "value", "notes"], rows
    )


if __name__ == "__main__":
    main()
