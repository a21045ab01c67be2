"""Workers forked from the zygote vs exec'd (``SPCTL_ZYGOTE=on|off``), same run, same machine.

* 20 workers (ok_daemon) to ``running``: from the supervisor's process start (as bench_core)
  and from its first ``starting`` to its last ``running`` (the spawns alone, from its log),
  against 20 × bare ``python -c pass`` started at once;
* recovery: kill -9 of a worker → ``running`` again, p50 / max of 10, as ``spctl status``
  polling sees it and as the core's log has it (``crashed`` → ``running``);
* one worker's RSS / USS / PSS (psutil ``memory_full_info``), median of the 20;
* the whole embedded default (``extensions/``, with the MCP front): sum of the PSS of the core
  and of every process under it, and the sum of their USS.

The load average is printed with the table: on a busy machine every time grows.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.bench._goals import record
from tests.bench._table import print_table
from tests.helpers import REPO, Serve, make_extensions, module_entry, wait_for

N = 20
MODES = ("exec", "zygote")


def _bare_parallel(n: int) -> float:
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def _serve(root: Path, ext: Path, mode: str, **kw: Any) -> Serve:
    s = Serve(root, ext, root / "run" / "control.sock", **kw)
    s.extra_args = [*s.extra_args, "--zygote" if mode == "zygote" else "--no-zygote"]
    return s


def _all_running(s: Serve) -> bool:
    status = s.try_status()
    if status is None:
        return False
    exts = [e for e in status["extensions"] if e.get("enabled", True) and not e.get("lazy")]
    return all(e["state"] == "running" for e in exts)


def _spawn_span(s: Serve) -> float:
    """First ``starting`` to last ``running`` in the supervisor's log (seconds)."""
    stamps: dict[str, list[datetime]] = {"starting": [], "running": []}
    for e in s.logs():
        if e.get("event") == "state" and e.get("to") in stamps:
            stamps[e["to"]].append(datetime.fromisoformat(e["timestamp"]))
    return (max(stamps["running"]) - min(stamps["starting"])).total_seconds()


def _logged_recovery(s: Serve) -> list[float]:
    """Each ``crashed`` → the next ``running`` of the same extension, in the log (seconds):
    the recovery without the time the benchmark's status polling adds."""
    crashed: dict[str, datetime] = {}
    out = []
    for e in s.logs():
        if e.get("event") != "state":
            continue
        at = datetime.fromisoformat(e["timestamp"])
        if e.get("to") == "crashed":
            crashed[e["extension"]] = at
        elif e.get("to") == "running" and e.get("extension") in crashed:
            out.append((at - crashed.pop(e["extension"])).total_seconds())
    return out


def _mem(pid: int) -> tuple[float, float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 2**20, info.uss / 2**20, info.pss / 2**20


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


def _twenty(mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ext = make_extensions(root, [module_entry(f"w-{i}", "ok_daemon") for i in range(N)])
        s = _serve(root, ext, mode)
        s.start()
        try:
            assert s.proc is not None
            created = psutil.Process(s.proc.pid).create_time()
            wait_for(lambda: _all_running(s), 60, "all running")
            cold = time.time() - created
            span = _spawn_span(s)
            status = s.try_status()
            assert status is not None
            spawns = {e["spawn"] for e in status["extensions"]}
            assert spawns == {mode}, f"{mode} run: the workers were spawned by {spawns}"
            mems = [_mem(e["pid"]) for e in status["extensions"]]
            rec = _recovery(s)
            logged = _logged_recovery(s)
        finally:
            s.stop()
    return {
        "cold": cold,
        "span": span,
        "rec": rec,
        "logged": logged,
        "rss": statistics.median(m[0] for m in mems),
        "uss": statistics.median(m[1] for m in mems),
        "pss": statistics.median(m[2] for m in mems),
    }


def _embedded(mode: str) -> dict[str, Any]:
    """The embedded default with its front: PSS/USS of the core and everything under it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = _serve(root, REPO / "extensions", mode, front=True)
        s.extra_args = [*s.extra_args, "--listen", "127.0.0.1:0"]
        s.start()
        try:
            assert s.proc is not None
            wait_for(lambda: _all_running(s), 60, "the embedded default running")
            wait_for(
                lambda: (
                    ((s.try_status() or {}).get("supervisor", {}).get("mcp_front") or {}).get(
                        "state"
                    )
                    == "running"
                ),
                60,
                "the front running",
            )
            core = psutil.Process(s.proc.pid)
            procs = [core, *core.children(recursive=True)]
            mems = []
            for p in procs:
                try:
                    mems.append(_mem(p.pid))
                except psutil.NoSuchProcess:
                    continue
        finally:
            s.stop()
    return {
        "procs": len(mems),
        "pss": sum(m[2] for m in mems),
        "uss": sum(m[1] for m in mems),
        "rss": sum(m[0] for m in mems),
    }


def main() -> None:
    samples: list[float] = []
    runs = {}
    for mode in MODES:  # the baseline right before each mode: a busy moment hits both
        samples += [_bare_parallel(N) for _ in range(3)]
        runs[mode] = _twenty(mode)
    bare = statistics.median(samples)
    embedded = {mode: _embedded(mode) for mode in MODES}
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    ex, zy = runs["exec"], runs["zygote"]

    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    def p50max(r: list[float]) -> str:
        return f"{statistics.median(r) * 1000:.0f} / {max(r) * 1000:.0f} ms"

    rows = [
        [
            f"{N} workers → running, from serve's start",
            ms(ex["cold"]),
            ms(zy["cold"]),
            f"{ex['cold'] / bare:.2f}× / {zy['cold'] / bare:.2f}×",
            "",
        ],
        [
            f"{N} workers → running, first starting → last running",
            ms(ex["span"]),
            ms(zy["span"]),
            f"{ex['span'] / bare:.2f}× / {zy['span'] / bare:.2f}×",
            "≤ 1.0×",
        ],
        [f"baseline: {N}× bare python -c pass at once", ms(bare), ms(bare), "1.00×", ""],
        [
            "recovery: kill -9 → running seen by `status` (p50 / max)",
            p50max(ex["rec"]),
            p50max(zy["rec"]),
            "",
            "≤ 30 ms",
        ],
        [
            "recovery: crashed → running in the log (p50 / max)",
            p50max(ex["logged"]),
            p50max(zy["logged"]),
            "",
            "",
        ],
        [
            "worker RSS / USS / PSS (MiB, ok_daemon, median)",
            f"{ex['rss']:.1f} / {ex['uss']:.1f} / {ex['pss']:.1f}",
            f"{zy['rss']:.1f} / {zy['uss']:.1f} / {zy['pss']:.1f}",
            f"USS {zy['uss'] / ex['uss']:.2f}×",
            "USS ≤ 4 MiB",
        ],
    ]
    record(
        "zygote",
        f"{N} workers to running (first starting → last running) vs {N}× bare python -c pass",
        "≤ 1.0×",
        f"{ms(zy['span'])} vs {ms(bare)}: {zy['span'] / bare:.2f}×",
        zy["span"] <= bare,
    )
    logged = statistics.median(zy["logged"])
    record(
        "zygote",
        "recovery: kill -9 → running, p50 (the core's log)",
        "≤ 30 ms",
        f"{logged * 1000:.0f} ms ({statistics.median(zy['rec']) * 1000:.0f} ms seen by status)",
        logged <= 0.030,
    )
    record(
        "zygote",
        "worker USS, plain-Python extension (forked)",
        "≤ 4 MiB",
        f"{zy['uss']:.1f} MiB (exec'd {ex['uss']:.1f})",
        zy["uss"] <= 4,
    )
    record(
        "zygote",
        "whole embedded default + front, sum of PSS",
        "≤ 60 MiB",
        f"{embedded['zygote']['pss']:.1f} MiB (exec'd {embedded['exec']['pss']:.1f})",
        embedded["zygote"]["pss"] <= 60,
    )
    ep, zp = embedded["exec"]["procs"], embedded["zygote"]["procs"]
    for label, key in (("PSS", "pss"), ("USS", "uss")):
        e, z = embedded["exec"][key], embedded["zygote"][key]
        rows.append(
            [
                f"embedded default + front, sum of {label}",
                f"{e:.1f} MiB ({ep} processes)",
                f"{z:.1f} MiB ({zp}, with the zygote)",
                f"{z / e:.2f}×",
                "≤ 60 MiB" if key == "pss" else "",
            ]
        )
    print_table(
        f"Zygote: forked vs exec'd workers (load average {load}, {os.cpu_count()} cores)",
        [
            "measure",
            "exec (--no-zygote)",
            "zygote (--zygote)",
            "ratio (vs bare / zygote÷exec)",
            "goal",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
