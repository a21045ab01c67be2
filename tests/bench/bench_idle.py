"""Idle cost of a running supervisor, against a bare sleeping interpreter in the same run.

Each setup is started, left to settle, then watched for a window (``SPCTL_BENCH_IDLE_SECONDS``,
default 30 s): the CPU seconds of every process (``/proc/<pid>/stat`` through psutil, user +
system) and its wakeups (``voluntary_ctxt_switches`` + ``nonvoluntary_ctxt_switches`` of every
thread in ``/proc/<pid>/task/*/status``) are read at the start and the end of the window; the
table gives them as % of one core and wakeups per second, per role (core, front, keeper,
zygote, workers). The setups: the embedded default (the repo's ``extensions/`` with the MCP
front), 20 plain daemons without limits, and the same 20 with a memory limit (cgroups where
this machine has them, and with ``--no-cgroups``: the psutil watchdog). The baseline, measured
over the same windows: a bare ``python -c 'import time; time.sleep(N)'``.

A second table gives the cost of each timer: a single run of each piece of periodic work,
timed in this process over many runs against 20 real workers (the watchdog's psutil sweep, the
cgroup counters read instead, the lineage sweep, the history recorder's point), with the
period it runs at, so its share of one core is cost / period.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.bench._table import print_table
from tests.helpers import REPO, Serve, make_extensions, module_entry, wait_for

N = 20
WINDOW = float(os.environ.get("SPCTL_BENCH_IDLE_SECONDS", "30"))
SETTLE = min(5.0, WINDOW / 4)  # after everything runs: the start's own work is not idle cost


@dataclass(frozen=True)
class Reading:
    cpu: float  # user + system seconds
    switches: int  # voluntary + involuntary context switches, all threads
    threads: int


def _switches(pid: int) -> tuple[int, int]:
    total = threads = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
        threads += 1
    return total, threads


def _read(pid: int) -> Reading | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    switches, threads = _switches(pid)
    return Reading(times.user + times.system, switches, threads)


def _roles(serve: Serve) -> dict[int, str]:
    """pid → role of every process of the supervisor (core, keeper, zygote, front, workers)."""
    assert serve.proc is not None
    core = serve.proc.pid
    status = serve.try_status() or {}
    roles = {core: "core"}
    front = (status.get("supervisor") or {}).get("mcp_front") or {}
    if front.get("pid"):
        roles[front["pid"]] = "front"
    for e in status.get("extensions", []):
        if e.get("pid"):
            roles[e["pid"]] = "workers"
    for child in psutil.Process(core).children(recursive=True):
        if child.pid in roles:
            continue
        cmd = " ".join(child.cmdline())
        role = "keeper" if "keeper" in cmd else "zygote" if "zygote" in cmd else "workers"
        roles.setdefault(child.pid, role)
    return roles


def _window(pids: dict[int, str], seconds: float) -> dict[str, tuple[float, float, int]]:
    """role → (% of one core, wakeups/s, processes) over ``seconds``."""
    before = {pid: r for pid in pids if (r := _read(pid)) is not None}
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= seconds, seconds + 5, "the idle window")
    elapsed = time.monotonic() - t0
    out: dict[str, list[float]] = {}
    for pid, role in pids.items():
        after, start = _read(pid), before.get(pid)
        if after is None or start is None:
            continue
        acc = out.setdefault(role, [0.0, 0.0, 0])
        acc[0] += after.cpu - start.cpu
        acc[1] += after.switches - start.switches
        acc[2] += 1
    return {role: (100 * c / elapsed, s / elapsed, int(n)) for role, (c, s, n) in out.items()}


def _bare() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({WINDOW * 4 + 60})"])


def _all_running(serve: Serve, lazy: set[str]) -> bool:
    status = serve.try_status()
    if status is None:
        return False
    front = (status.get("supervisor") or {}).get("mcp_front")
    if front is not None and front.get("state") != "running":
        return False
    return all(e["state"] == "running" for e in status["extensions"] if e["name"] not in lazy)


def _measure(
    title: str,
    serve: Serve,
    lazy: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[list[str]]:
    serve.start()
    bare = _bare()
    try:
        wait_for(lambda: _all_running(serve, lazy), 120, f"{title}: everything running")
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= SETTLE, SETTLE + 5, "settling")
        roles = _roles(serve)
        roles[bare.pid] = "bare"
        found = _window(roles, WINDOW)
    finally:
        bare.kill()
        bare.wait()
        serve.stop()
    rows = []
    total_cpu = total_wake = 0.0
    for role in ("core", "keeper", "zygote", "front", "workers"):
        if role not in found:
            continue
        cpu, wake, n = found[role]
        total_cpu += cpu
        total_wake += wake
        label = f"{role} ({n})" if role == "workers" else role
        rows.append([title, label, f"{cpu:.3f} %", f"{wake:.1f}"])
    rows.append([title, "**all**", f"**{total_cpu:.3f} %**", f"**{total_wake:.1f}**"])
    cpu, wake, _ = found.get("bare", (0.0, 0.0, 0))
    rows.append([title, "bare `time.sleep` (baseline)", f"{cpu:.3f} %", f"{wake:.1f}"])
    return rows


def _serve(root: Path, ext: Path, *, front: bool = False, args: list[str] = []) -> Serve:  # noqa: B006
    extra = ["--listen", "127.0.0.1:0", *args] if front else args
    return Serve(root, ext, root / "run" / "control.sock", extra_args=extra, front=front)


def _daemons(root: Path, limits: dict[str, Any] | None) -> Path:
    extra = {"limits": limits} if limits else {}
    return make_extensions(root, [module_entry(f"d-{i}", "ok_daemon", **extra) for i in range(N)])


def _idle_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "default"
        root.mkdir()
        serve = _serve(root, REPO / "extensions", front=True)
        rows += _measure("embedded default (+ front)", serve, lazy={"weather"})
    for label, limits, args in (
        (f"{N} daemons, no limits", None, []),
        (f"{N} daemons, memory limit (cgroups)", {"memory": "256MiB"}, []),
        (f"{N} daemons, memory limit, --no-cgroups", {"memory": "256MiB"}, ["--no-cgroups"]),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            rows += _measure(label, _serve(root, _daemons(root, limits), args=args))
    return rows


# ----- the cost of each timer -------------------------------------------------------------------


def _per_call(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Median-free mean seconds per call of ``fn`` over about ``seconds``."""
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or n < 5:
        fn()
        n += 1
    return elapsed / n


def _timer_rows() -> list[list[str]]:
    from supervisor.core.cgroups import Cgroups, detect
    from supervisor.core.orphans import Lineage
    from supervisor.core.process import helper_ended, helper_started, helper_starting
    from supervisor.core.sampler import Sampler
    from supervisor.rules.history import PERIOD
    from supervisor.rules.limits import SAMPLE_PERIOD

    procs = []
    for _ in range(N):  # our children, but spawned ones: the lineage sweep leaves them alone
        helper_starting()
        procs.append(_sleeper())
        helper_started(procs[-1].pid)
    rows: list[list[str]] = []
    try:
        roots = {f"d-{i}": p.pid for i, p in enumerate(procs)}
        sampler = Sampler()
        sweep = _per_call(lambda: sampler.sample(roots))
        rows.append(
            [
                f"watchdog psutil sweep, {N} trees",
                f"{sweep * 1e3:.2f} ms",
                f"{SAMPLE_PERIOD:g} s",
                f"{100 * sweep / SAMPLE_PERIOD:.3f} %",
            ]
        )
        lineage = Lineage()
        # Lineage.sweep walks the trees of the workers it knows: the same 20 roots.
        for pid in roots.values():
            lineage._workers[pid] = _FakeWorker.make(pid)  # type: ignore[assignment]
        lin = _per_call(lineage.sweep)
        from supervisor.core.watchdog import LINEAGE_PERIOD

        rows.append(
            [
                f"lineage sweep, {N} workers",
                f"{lin * 1e3:.2f} ms",
                f"{LINEAGE_PERIOD:g} s",
                f"{100 * lin / LINEAGE_PERIOD:.3f} %",
            ]
        )
        support = detect()
        if support.mode != "none" and os.geteuid() == 0:
            with Cgroups(support, prefix="spctl-bench") as cgroups:
                groups = []
                for i, p in enumerate(procs):
                    g = cgroups.create(f"d-{i}", _Limits())
                    assert g is not None
                    g.add(p.pid)
                    groups.append(g)
                read = _per_call(lambda: [g.usage() for g in groups])
                rows.append(
                    [
                        f"cgroup counters ({support.mode}), {N} groups",
                        f"{read * 1e3:.2f} ms",
                        f"{PERIOD:g} s (history)",
                        f"{100 * read / PERIOD:.3f} %",
                    ]
                )
                for g in groups:
                    g.kill()
                    g.remove()
        rows.append(
            [
                f"history point via psutil sweep, {N} trees (old recorder)",
                f"{sweep * 1e3:.2f} ms",
                f"{PERIOD:g} s",
                f"{100 * sweep / PERIOD:.3f} %",
            ]
        )
    finally:
        for p in procs:
            p.kill()
            p.wait()
            helper_ended(p.pid)
    return rows


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@dataclass(frozen=True)
class _Limits:
    memory: int | None = 256 * 2**20
    cpu: float | None = None
    processes: int | None = None


class _FakeWorker:
    """What Lineage keeps of a worker, for timing its sweep without a runner."""

    @staticmethod
    def make(pid: int) -> Any:
        from supervisor.core.orphans import _Worker

        return _Worker(pid, pid, str(pid), f"w{pid}", None, lambda _reason: None)


def main() -> None:
    load = os.getloadavg()
    idle = _idle_rows()
    after = os.getloadavg()
    print_table(
        f"Idle cost over {WINDOW:g} s windows (load average {load[0]:.2f} before, "
        f"{after[0]:.2f} after; {os.cpu_count()} cores)",
        ["setup", "process", "CPU (% of one core)", "wakeups/s"],
        idle,
    )
    print_table(
        f"The cost of each timer (load average {os.getloadavg()[0]:.2f})",
        ["timer", "one run", "period", "% of one core"],
        _timer_rows(),
    )


if __name__ == "__main__":
    main()
