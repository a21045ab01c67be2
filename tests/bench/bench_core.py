"""Supervision core benchmarks, each against a baseline measured in the same run.

* cold start of 20 workers to ``running`` vs 20 × bare ``python -c pass`` started at once;
* recovery from a worker SIGKILL to ``running`` again (the first restart has no backoff);
* supervisor RSS and idle CPU with 20 workers; worker RSS vs a bare python;
* ``spctl status`` wall time vs ``python -c pass`` with the same interpreter.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.bench._table import print_table
from tests.helpers import SPCTL, Serve, make_extensions, module_entry, wait_for

N = 20


def _bare_parallel(n: int) -> float:
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def _cold_start(root: Path) -> tuple[float, Serve]:
    ext = make_extensions(root, [module_entry(f"w-{i}", "ok_daemon") for i in range(N)])
    s = Serve(root, ext, root / "run" / "control.sock")
    s.start()
    # time from the supervisor answering to every worker running (the start is requested at boot,
    # so measure from process start: Serve.start waited for the socket; add that part too)
    assert s.proc is not None
    created = psutil.Process(s.proc.pid).create_time()
    wait_for(
        lambda: all(
            e["state"] == "running"
            for e in (s.try_status() or {"extensions": [{"state": ""}]})["extensions"]
        ),
        60,
        "all running",
    )
    return time.time() - created, s


def _recovery(s: Serve, rounds: int = 10) -> list[float]:
    times = []
    for i in range(rounds):
        name = f"w-{i}"
        pid = s.ext(name)["pid"]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda n=name, p=pid: (
                (e := s.ext(n))["state"] == "running" and e["pid"] not in (None, p)
            ),
            10,
            "recovery",
        )
        times.append(time.monotonic() - t0)
    return times


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _idle_cpu(pid: int, seconds: float = 5.0) -> float:
    p = psutil.Process(pid)
    t0 = p.cpu_times()
    time.sleep(seconds)
    t1 = p.cpu_times()
    return 100 * ((t1.user - t0.user) + (t1.system - t0.system)) / seconds


def _wall(argv: list[str], env: dict[str, str], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = statistics.median(_bare_parallel(N) for _ in range(3))
        cold, s = _cold_start(root)
        try:
            rec = _recovery(s)
            assert s.proc is not None
            sup_rss = _rss_mb(s.proc.pid)
            idle = _idle_cpu(s.proc.pid)
            worker_pids = [e["pid"] for e in s.try_status()["extensions"]]  # type: ignore[index]
            w_rss = statistics.median(_rss_mb(p) for p in worker_pids)
            bare_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
            time.sleep(0.5)  # let the bare interpreter finish starting before sampling it
            bare_rss = _rss_mb(bare_proc.pid)
            bare_proc.kill()
            bare_proc.wait()
            status_t = _wall([SPCTL, "status"], s.env)
            pass_t = _wall([sys.executable, "-c", "pass"], s.env)
        finally:
            s.stop()
    print_table(
        f"Supervision core ({N} workers, ok_daemon fixture)",
        ["measure", "spctl", "baseline (same run)", "ratio", "goal"],
        [
            [
                f"cold start of {N} workers → running",
                f"{cold * 1000:.0f} ms",
                f"{bare * 1000:.0f} ms ({N}× python -c pass)",
                f"{cold / bare:.2f}×",
                "≤ 1.5×",
            ],
            [
                "recovery: SIGKILL → running (p50 / max)",
                f"{statistics.median(rec) * 1000:.0f} / {max(rec) * 1000:.0f} ms",
                "supervisord: 18 ms",
                "",
                "",
            ],
            [
                f"supervisor RSS with {N} workers",
                f"{sup_rss:.1f} MB",
                "supervisord: 25.8 MB",
                "",
                "≤ 30 MB",
            ],
            [
                f"supervisor idle CPU with {N} workers",
                f"{idle:.2f} %",
                "supervisord: ≤ 0.1 %",
                "",
                "≤ 0.5 %",
            ],
            [
                "worker RSS (plain-Python daemon)",
                f"{w_rss:.1f} MB",
                f"{bare_rss:.1f} MB (bare python)",
                f"{w_rss / bare_rss:.2f}×",
                "≤ 22 MB",
            ],
            [
                "`spctl status` wall time",
                f"{status_t * 1000:.0f} ms",
                f"{pass_t * 1000:.0f} ms (python -c pass)",
                f"{status_t / pass_t:.1f}×",
                "≤ 150 ms",
            ],
        ],
    )


if __name__ == "__main__":
    main()
