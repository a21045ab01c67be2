"""The control socket under attack: ``status`` latency, the supervisor's RSS, time to cut off.

* ``status`` round trips (a ControlClient in this process, so no CLI start-up) p50/p99 idle,
  and while 30 / 100 clients each send 15 MiB minus 10 bytes of a request and stall (half of
  them subscribed as MCP faces first, which may send whole 16 MiB frames);
* the supervisor's RSS before, at the peak of those attacks, and once the clients are cut off;
* how long random bytes and a 4 GiB length header keep a connection open.

Issue #17 measured before the bounds: 30 such clients +486 MiB never given back, 100: 2.57 GB.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import msgpack

from supervisor.control.client import ControlClient
from tests.bench._table import print_table
from tests.helpers import Serve, make_extensions, module_entry, wait_for

MiB = 1 << 20


def _rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _status_times(path: Path, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        with ControlClient(path, timeout=30) as c:
            c.call("status", None)
        out.append(time.perf_counter() - t0)


def _pct(times: list[float], q: float) -> str:
    if not times:
        return "-"
    ordered = sorted(times)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3:.1f}"


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _attack(s: Serve, n: int) -> tuple[list[float], float, float, float, float | None]:
    """n stalled near-cap frames: status times meanwhile, RSS start/peak/after, time to cut."""
    assert s.proc is not None
    pid = s.proc.pid
    start = _rss(pid)
    blob = {"name": "echo", "arguments": {"blob": b"\0" * (15 * MiB)}}
    frame = msgpack.packb([0, 7, "mcp", ["quiet", "tools/call", blob, {}]])[:-10]
    times: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=_status_times, args=(s.socket, stop, times))
    prober.start()
    conns = []
    peak = start
    t0 = time.monotonic()
    try:
        for i in range(n):
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(s.socket))
            conns.append(c)
            if i % 2 == 0:
                c.sendall(msgpack.packb([0, 0, "mcp_watch", []]))
                c.recv(1 << 16)
            with contextlib.suppress(OSError):  # cut off while sending
                c.sendall(frame)
            peak = max(peak, _rss(pid))
        try:
            wait_for(lambda: all(_closed(c) for c in conns), 30, "every stalled frame cut off")
            cut: float | None = time.monotonic() - t0
        except AssertionError:
            cut = None  # never (a supervisor without the bounds): the clients close themselves
    finally:
        stop.set()
        prober.join()
        for c in conns:
            c.close()
    try:
        after = wait_for(lambda: (r := _rss(pid)) < start + 16 and r, 10, "RSS back")
    except AssertionError:
        after = _rss(pid)  # not given back
    return times, start, peak, after, cut


def _time_to_close(s: Serve, data: bytes, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(s.socket))
            c.settimeout(10)
            t0 = time.perf_counter()
            c.sendall(data)
            try:
                while c.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        mods = [module_entry("quiet", "ok_daemon")]
        s = Serve(root, make_extensions(root, mods), root / "run" / "control.sock")
        s.start()
        try:
            s.wait_state("quiet", "running")
            idle: list[float] = []
            stop = threading.Event()
            stop_after = threading.Timer(3.0, stop.set)
            stop_after.start()
            _status_times(s.socket, stop, idle)
            rows = [["idle", str(len(idle)), _pct(idle, 0.5), _pct(idle, 0.99), "-", "-", "-", "-"]]
            for n in (30, 100):
                times, start, peak, after, cut = _attack(s, n)
                rows.append(
                    [
                        f"{n} stalled 15 MiB frames",
                        str(len(times)),
                        _pct(times, 0.5),
                        _pct(times, 0.99),
                        f"{start:.0f}",
                        f"{peak:.0f}",
                        f"{after:.0f}",
                        "never" if cut is None else f"{cut:.1f}",
                    ]
                )
            print_table(
                "Control socket under attack (status in ms; RSS in MiB; all cut off after s)",
                ["attack", "status calls", "p50", "p99", "RSS start", "peak", "after", "cut"],
                rows,
            )
            garbage = _time_to_close(s, os.urandom(4096))
            huge = _time_to_close(s, b"\xc6\xff\xff\xff\xff" + b"\0" * 64)
            print_table(
                "Control socket: a garbage connection is closed after (median ms)",
                ["input", "closed after"],
                [
                    ["4 KiB of random bytes", f"{garbage * 1e3:.2f}"],
                    ["a bin32 header of 4 GiB", f"{huge * 1e3:.2f}"],
                ],
            )
        finally:
            s.stop()


if __name__ == "__main__":
    main()
