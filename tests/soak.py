"""The soak (#17, ``make soak``; not in CI): does the supervisor give back what each restart and
each call cost? One real ``spctl serve`` runs a daemon that crash-loops (restart always, no
backoff) beside an MCP server that is called over the control socket and ``kill -9``\\ ed every
``--kill-every`` calls. After a warm-up it prints the supervisor's RSS, USS (smaps_rollup),
open fds, threads and zombie children, at the start and at the end, and exits 1 when the goal
is missed (RSS Δ ≥ 1 MiB after warm-up, or fds or zombies grew).

    python -m tests.soak [--crashes 1000] [--calls 10000] [--kill-every 1000] [--no-cgroups]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from supervisor.control.client import ControlClient
from tests.bench._table import print_table
from tests.helpers import Serve, make_extensions, module_entry, server_entry, wait_for

LOOP = {"policy": "always", "backoff": "0s", "maxBackoff": "0s", "maxRestarts": 10**9}


@dataclass
class Sample:
    rss_kib: int
    uss_kib: int
    fds: int
    threads: int
    zombies: int


def sample(pid: int) -> Sample:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    private = sum(
        int(line.split()[1])
        for line in rollup
        if line.startswith(("Private_Clean", "Private_Dirty"))
    )
    zombies = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        zombies += stat.rsplit(")", 1)[1].split()[0] == "Z"
    return Sample(
        rss_kib=int(status["VmRSS"].split()[0]),
        uss_kib=private,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        zombies=zombies,
    )


def quiet_sample(s: Serve, pid: int) -> Sample:
    """A sample with the looper stopped and echo running (so no worker is half-way), taken once
    the supervisor has had the time to give back what it freed (memory.INTERVAL)."""
    s.call("stop", "looper")
    wait_for(lambda: s.ext("echo")["state"] == "running", 30, "echo running")
    time.sleep(3)  # a measurement's settling time (memory.INTERVAL is 2 s), not synchronisation
    return sample(pid)


def restarts(s: Serve, name: str) -> int:
    return int(s.ext(name).get("restarts", 0))


def crash_cycles(s: Serve, target: int) -> None:
    wait_for(lambda: restarts(s, "looper") >= target, 60 + target / 5, f"{target} crash cycles")


def calls(s: Serve, count: int, kill_every: int) -> int:
    failed = 0
    with ControlClient(s.socket, timeout=30) as c:
        for i in range(count):
            if kill_every and i and i % kill_every == 0:
                pid = s.ext("echo").get("pid")
                if pid:
                    os.kill(pid, signal.SIGKILL)
            try:
                c.call("call", "echo", "echo", {"text": f"call {i}"})
            except Exception:  # a call during the kill: the worker went away; counted
                failed += 1
    return failed


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak")
    ap.add_argument("--crashes", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--kill-every", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100, help="crash cycles before the first sample")
    ap.add_argument("--no-cgroups", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mods = [module_entry("looper", "crash_later", config={"after": 0.01}, restart=LOOP)]
        servers = [server_entry("echo", "mcp_echo", restart=LOOP)]
        s = Serve(root, make_extensions(root, mods, servers), root / "run" / "control.sock")
        if args.no_cgroups:
            s.extra_args.append("--no-cgroups")
        s.start()
        try:
            assert s.proc is not None
            pid = s.proc.pid
            s.wait_state("echo", "running")
            crash_cycles(s, args.warmup)
            calls(s, 200, 0)
            start = quiet_sample(s, pid)  # looper stopped: no worker of it half-way
            s.call("start", "looper")
            base, t0 = restarts(s, "looper"), time.monotonic()
            failed: list[int] = []
            caller = threading.Thread(
                target=lambda: failed.append(calls(s, args.calls, args.kill_every))
            )
            caller.start()
            crash_cycles(s, base + args.crashes)
            caller.join()
            end = quiet_sample(s, pid)
            done = restarts(s, "looper") - base
            elapsed = time.monotonic() - t0
        finally:
            s.stop()
    rows = [
        [name, str(getattr(start, key)), str(getattr(end, key)),
         f"{getattr(end, key) - getattr(start, key):+d}"]
        for name, key in [("RSS (KiB)", "rss_kib"), ("USS (KiB)", "uss_kib"), ("open fds", "fds"),
                          ("threads", "threads"), ("zombie children", "zombies")]
    ]  # fmt: skip
    print_table(
        f"Soak: {done} crash cycles and {args.calls} calls ({failed[0]} failed "
        f"around {args.calls // args.kill_every if args.kill_every else 0} kill -9s) in "
        f"{elapsed:.0f} s, after {args.warmup} cycles of warm-up"
        + (", --no-cgroups" if args.no_cgroups else ""),
        ["supervisor", "start", "end", "Δ"],
        rows,
    )
    ok = (
        end.rss_kib - start.rss_kib < 1024 and end.fds <= start.fds and end.zombies <= start.zombies
    )
    print("goal (RSS Δ < 1 MiB, fds and zombies flat):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
