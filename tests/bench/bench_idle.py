"""Idle cost of a running supervisor, against a bare sleeping interpreter in the same run.

Each setup is started, left to settle, then watched for a window (``SPCTL_BENCH_IDLE_SECONDS``,
default 30 s; the issue's goal is stated over 60 s): for every process, the CPU seconds from
``/proc/<pid>/stat`` (psutil ``cpu_times``, user + system: 10 ms ticks, so a 30 s window
resolves 0.03 %), the seconds on a CPU from ``/proc/<pid>/task/*/schedstat`` of its live
threads (nanoseconds: the precise figure) and its wakeups (``voluntary_ctxt_switches`` +
``nonvoluntary_ctxt_switches`` of every thread) are read at the start and the end of the
window; the table gives them as % of one core and wakeups per second, per role (core, keeper,
zygote, front, workers). The setups: the embedded default (the repo's ``extensions/`` with
the MCP front), 20 plain daemons without limits, the same 20 with a memory limit (in cgroups
where this machine has them), and with ``--no-cgroups`` (the psutil watchdog). The baseline,
measured over the same windows: a bare ``python -c 'import time; time.sleep(N)'``; the
figures before this work are in docs/benchmarks.md (same bench, same machine).

A second table gives the cost of each timer: one run of each piece of periodic work, timed in
this process over many runs against 20 real sleeping processes — the watchdog's sweep (before:
psutil per process; now: the tree's own read of ``stat``), the lineage sweep with and without
cgroups, the history point (before: a sweep with psutil; now: the cgroup counters, or the
sweep) — with the period it ran at before and runs at now, so its share of one core is
cost / period.
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

from tests.bench._goals import record
from tests.bench._table import print_table
from tests.helpers import REPO, Serve, make_extensions, module_entry, wait_for

N = 20
WINDOW = float(os.environ.get("SPCTL_BENCH_IDLE_SECONDS", "30"))
SETTLE = min(5.0, WINDOW / 4)  # after everything runs: the start's own work is not idle cost


@dataclass(frozen=True)
class Reading:
    cpu: float  # user + system seconds (/proc/<pid>/stat, clock ticks)
    ran: float  # seconds on a CPU of the live threads (/proc/<pid>/task/*/schedstat, ns)
    switches: int  # voluntary + involuntary context switches, all threads


def _threads(pid: int) -> tuple[float, int]:
    """(seconds on a CPU, context switches) summed over the live threads of ``pid``."""
    ran = 0.0
    switches = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ran += int(f.read().split()[0]) / 1e9
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return ran, switches


def _read(pid: int) -> Reading | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    ran, switches = _threads(pid)
    return Reading(times.user + times.system, ran, switches)


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


def _window(pids: dict[int, str], seconds: float) -> dict[str, tuple[float, float, float, int]]:
    """role → (% of one core by stat, by schedstat, wakeups/s, processes) over ``seconds``."""
    before = {pid: r for pid in pids if (r := _read(pid)) is not None}
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= seconds, seconds + 5, "the idle window")
    elapsed = time.monotonic() - t0
    out: dict[str, list[float]] = {}
    for pid, role in pids.items():
        after, start = _read(pid), before.get(pid)
        if after is None or start is None:
            continue
        acc = out.setdefault(role, [0.0, 0.0, 0.0, 0])
        acc[0] += after.cpu - start.cpu
        acc[1] += max(0.0, after.ran - start.ran)
        acc[2] += after.switches - start.switches
        acc[3] += 1
    return {
        role: (100 * c / elapsed, 100 * r / elapsed, w / elapsed, int(n))
        for role, (c, r, w, n) in out.items()
    }


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
    total = [0.0, 0.0, 0.0]
    for role in ("core", "keeper", "zygote", "front", "workers"):
        if role not in found:
            continue
        cpu, ran, wake, n = found[role]
        total = [total[0] + cpu, total[1] + ran, total[2] + wake]
        label = f"{role} ({n})" if role == "workers" else role
        rows.append([title, label, f"{cpu:.3f} %", f"{ran:.3f} %", f"{wake:.1f}"])
    rows.append(
        [title, "**all**", f"**{total[0]:.3f} %**", f"**{total[1]:.3f} %**", f"**{total[2]:.1f}**"]
    )
    if title.startswith("embedded default"):
        record(
            "idle",
            "idle CPU, embedded default, core + front + workers (stat / schedstat)",
            "≤ 0.15 %",
            f"{total[0]:.3f} % / {total[1]:.3f} %",
            max(total[0], total[1]) <= 0.15,
        )
    cpu, ran, wake, _ = found.get("bare", (0.0, 0.0, 0.0, 0))
    rows.append(
        [title, "bare `time.sleep` (baseline)", f"{cpu:.3f} %", f"{ran:.3f} %", f"{wake:.1f}"]
    )
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


def _psutil_sweep(roots: dict[str, int], procs: dict[int, psutil.Process]) -> None:
    """What the watchdog's sweep did before: the same tree table, then psutil per process
    (``cpu_times``, ``memory_info``, ``num_fds`` under ``oneshot``), Process objects kept."""
    from supervisor.core.sampler import ProcessTable

    table = ProcessTable(roots.values())
    for root in roots.values():
        for pid in table.tree(root):
            proc = procs.get(pid)
            try:
                if proc is None:
                    proc = procs[pid] = psutil.Process(pid)
                with proc.oneshot():
                    proc.cpu_times()
                    proc.memory_info()
                    proc.num_fds()
            except psutil.Error:
                continue


def _timer_rows() -> list[list[str]]:
    from supervisor.core.cgroup_meter import CgroupMeter
    from supervisor.core.cgroups import Cgroups, WorkerCgroup, detect
    from supervisor.core.orphans import Lineage
    from supervisor.core.process import helper_ended, helper_started, helper_starting
    from supervisor.core.sampler import Sampler
    from supervisor.core.watchdog import LINEAGE_PERIOD
    from supervisor.rules.history import PERIOD
    from supervisor.rules.limits import SAMPLE_PERIOD

    Run = tuple[float, float] | None  # (seconds one run takes, period) or None: never

    def cell(run: Run) -> str:
        if run is None:
            return "never"
        cost, period = run
        return f"{cost * 1e3:.2f} ms / {period:g} s = {100 * cost / period:.3f} %"

    procs = []
    for _ in range(N):  # our children, but spawned ones: the lineage sweep leaves them alone
        helper_starting()
        procs.append(_sleeper())
        helper_started(procs[-1].pid)
    rows: list[list[str]] = []

    def row(label: str, before: Run, now: Run) -> None:
        rows.append([label, cell(before), cell(now)])

    def lineage_of(groups: list[WorkerCgroup | None]) -> Lineage:
        lineage = Lineage()  # the trees of the workers it knows: the same 20 roots
        for p, g in zip(procs, groups, strict=True):
            lineage._workers[p.pid] = _worker(p.pid, g)
        return lineage

    try:
        roots = {f"d-{i}": p.pid for i, p in enumerate(procs)}
        cache: dict[int, psutil.Process] = {}
        old = _per_call(lambda: _psutil_sweep(roots, cache))
        sampler = Sampler()
        watch = _per_call(lambda: sampler.sample(roots, fds=False))
        point = _per_call(lambda: sampler.sample(roots))
        row(
            f"watchdog sweep, {N} limited trees, no cgroups",
            (old, SAMPLE_PERIOD),
            (watch, SAMPLE_PERIOD),
        )
        row(f"history point, {N} trees, no cgroups", (old, PERIOD), (point, PERIOD))
        bare = _per_call(lineage_of([None] * N).sweep)
        row(
            f"lineage sweep, {N} workers, no cgroups",
            (bare, SAMPLE_PERIOD * 2),
            (bare, LINEAGE_PERIOD),
        )
        support = detect()
        if support.mode != "none" and os.geteuid() == 0:
            with Cgroups(support, prefix="spctl-bench") as cgroups:
                groups: list[WorkerCgroup | None] = []
                for i, p in enumerate(procs):
                    g = cgroups.create(f"d-{i}", _Limits())
                    assert g is not None
                    g.add(p.pid)
                    groups.append(g)
                live = [g for g in groups if g is not None]
                row(
                    f"watchdog sweep, {N} memory-limited trees in cgroups ({support.mode})",
                    (old, SAMPLE_PERIOD),
                    None,
                )
                walked = bare + _per_call(lambda: [g.members() for g in live])
                confined = _per_call(lineage_of(groups).sweep)
                row(
                    f"lineage sweep, {N} workers in cgroups ({support.mode})",
                    (walked, SAMPLE_PERIOD * 2),
                    (confined, LINEAGE_PERIOD),
                )
                meter = CgroupMeter()
                counters = _per_call(
                    lambda: [meter.sample(g.paths[0].name, g, fds=False) for g in live]
                )
                row(
                    f"history point, {N} workers in cgroups (now: their counters)",
                    (old, PERIOD),
                    (counters, PERIOD),
                )
                status = _per_call(lambda: [meter.sample(g.paths[0].name, g) for g in live])
                rows.append(
                    [
                        f"`status` usage, {N} workers in cgroups (on demand)",
                        f"{old * 1e3:.2f} ms",
                        f"{status * 1e3:.2f} ms",
                    ]
                )
                for g in live:
                    g.kill()
                    g.remove()
    finally:
        for p in procs:
            p.kill()
            p.wait()
            helper_ended(p.pid)
    rows.append(["uvicorn's tick in the front", "a wakeup / 0.1 s", "never"])
    rows.append(["a daemon's sync `is_running()`", "≈ 4 wakeups / 1 s", "1 wakeup / 1 s"])
    return rows


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@dataclass(frozen=True)
class _Limits:
    memory: int | None = 256 * 2**20
    cpu: float | None = None
    processes: int | None = None


def _worker(pid: int, group: Any) -> Any:
    """What Lineage keeps of a worker, for timing its sweep without a runner."""
    from supervisor.core.orphans import _Worker

    return _Worker(pid, pid, str(pid), f"w{pid}", group, lambda _reason: None)


def main() -> None:
    load = os.getloadavg()
    idle = _idle_rows()
    after = os.getloadavg()
    print_table(
        f"Idle cost over {WINDOW:g} s windows (load average {load[0]:.2f} before, "
        f"{after[0]:.2f} after; {os.cpu_count()} cores)",
        ["setup", "process", "CPU, stat", "CPU, schedstat", "wakeups/s"],
        idle,
    )
    print_table(
        f"The cost of each timer (load average {os.getloadavg()[0]:.2f})",
        ["timer", "before: one run / period = % of one core", "now"],
        _timer_rows(),
    )


if __name__ == "__main__":
    main()
