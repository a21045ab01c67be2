"""Limits benchmarks, each against a baseline measured in the same run.

* Watchdog sweep cost: one ``Sampler().sample(roots)`` over 1, 20 and 100 process trees (each
  ``sh -c 'sleep & exec sleep'``: a root in a session of its own with one child), wall and CPU
  per sweep, and the supervisor CPU that means at one sweep per ``SAMPLE_PERIOD``; against a
  bare psutil loop over the same roots (``children(recursive=True)`` + ``memory_info`` +
  ``cpu_times`` each) and a floor that only measures a known list of pids.
* Breach → kill on a real ``spctl serve``, with ``--no-cgroups`` (rlimits + watchdog) and by
  default (cgroup v1 here, as root). One supervisor per mode and hog (so two hogs never share
  the 2 cores), restarting at once: each run is one incarnation of the worker.

  - memory: hog ``membomb`` at 50 MiB/s, ``memory: 128MiB``. Crossed = the first time the
    observer (polling every 2 ms) sees the worker's RSS over the limit (what the watchdog
    judges; the hog has no children) or, under cgroups, the cgroup's charge at the limit
    (``memory.failcnt`` > 0 or ``memory.usage_in_bytes`` within a page of it). The hog's
    ``progress`` file (MiB it allocated) is reported too, but RSS includes ~15 MiB of
    interpreter, so it rarely reaches 128 before the kill.
  - processes: hog ``forkbomb``, ``processes: 16``. Without cgroups: from its first fork (the
    bomb is live, as the worker turns running) and from the tree first counting > 16, to the
    worker gone and to every child seen gone. Under cgroups ``pids.max`` makes fork fail with
    EAGAIN: the run shows that, and that nothing is killed in 8 sample periods.

  Gone = the worker's pidfd is readable (it exited). The supervisor's "limit breached" log line
  splits the watchdog's delay into deciding and killing; the reason recorded at each run's end
  tells who killed it (watchdog or kernel OOM). Part 2 uses wall-clock time, as the log does.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from supervisor.core.sampler import Sampler, _read_table
from supervisor.rules.limits import SAMPLE_PERIOD
from tests.bench._table import print_table
from tests.helpers import Serve, make_extensions, module_entry, wait_for

TREES = (1, 20, 100)
SWEEPS = 20
RUNS = 10
LIMIT_MIB = 128
PROCESSES = 16
POLL = 0.002  # the observer's polling interval (s)
PAGE = os.sysconf("SC_PAGE_SIZE")
FAST = {"policy": "always", "backoff": "10ms", "maxBackoff": "20ms", "maxRestarts": 1000}
MODES = {"--no-cgroups (watchdog)": ["--no-cgroups"], "default (cgroup v1)": []}


# -- 1. sweep cost ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (of every thread of it); empty when it is gone."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
            out.extend(int(c) for c in f.read().split())
    return out


@contextlib.contextmanager
def _trees(n: int) -> Iterator[list[int]]:
    procs = [
        subprocess.Popen(["sh", "-c", "sleep 600 & exec sleep 600"], start_new_session=True)
        for _ in range(n)
    ]
    try:
        for p in procs:  # exec'd into sleep and holding its child
            wait_for(partial(_tree_ready, p.pid), 20, "tree")
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # root and child share its session's group
            p.wait()
        wait_for(lambda: not any(_in_group(p.pid) for p in procs), 20, "trees gone")


def _tree_ready(root: int) -> bool:
    return bool(_children(root)) and psutil.Process(root).name() == "sleep"


def _in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _psutil_loop(roots: list[int]) -> None:
    for root in roots:
        p = psutil.Process(root)
        for q in [p, *p.children(recursive=True)]:
            q.memory_info()
            q.cpu_times()


def _floor(procs: list[psutil.Process]) -> None:
    for q in procs:
        q.memory_info()
        q.cpu_times()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _scan_cost() -> tuple[int, float]:
    """Processes on the machine, and the CPU of the Sampler's /proc scan alone (median)."""
    _read_table()
    return len(_read_table()), statistics.median(_timed(_read_table)[1] for _ in range(SWEEPS))


def _sweep_costs() -> tuple[list[list[str]], str]:
    """Rows of the sweep table, and what the /proc scan costs with and without the trees."""
    rows = []
    bare, bare_cost = _scan_cost()
    with _trees(max(TREES)) as all_roots:
        procs, cost = _scan_cost()  # the scan costs by these, not by the trees watched
        for n in TREES:
            roots = all_roots[:n]
            sampler = Sampler()
            named = {f"w{i}": pid for i, pid in enumerate(roots)}
            known = [psutil.Process(p) for r in roots for p in [r, *_children(r)]]
            variants: dict[str, Callable[[], object]] = {
                "Sampler().sample": partial(sampler.sample, named),
                "psutil loop": partial(_psutil_loop, roots),
                "floor": partial(_floor, known),
                "table": _read_table,  # the Sampler's /proc scan alone, for where time goes
            }
            for fn in variants.values():
                fn()  # warm-up: psutil objects made, /proc dentries cached
            got: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
            for _ in range(SWEEPS):  # interleaved, so noise hits all alike
                for name, fn in variants.items():
                    got[name].append(_timed(fn))
            assert len(sampler.sample(named)) == n
            med = {
                k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                for k, v in got.items()
            }
            sw, sc = med["Sampler().sample"]
            bw, bc = med["psutil loop"]
            fw, fc = med["floor"]
            _, tc = med["table"]
            rows.append(
                [
                    f"{n} ({2 * n} procs)",
                    f"{sw * 1e3:.2f} / {sc * 1e3:.2f} ms",
                    f"{100 * sc / SAMPLE_PERIOD:.2f} %",
                    f"{tc * 1e3:.2f} ms",
                    f"{bw * 1e3:.2f} / {bc * 1e3:.2f} ms",
                    f"{fw * 1e3:.2f} / {fc * 1e3:.2f} ms",
                    f"{sc / bc:.2f}×",
                    f"{sc / fc:.2f}×",
                ]
            )
    note = (
        f"{procs} processes on the machine; the /proc scan alone: {cost * 1e3:.2f} ms,"
        f" and {bare_cost * 1e3:.2f} ms at {bare} processes before the trees"
    )
    return rows, note


# -- 2. breach → kill on a real supervisor ------------------------------------------------------


def _is_worker(pid: int) -> bool:
    """``python … -m worker``: a worker, not the zygote (``-m worker.zygote``) it forks from."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(a == b"-m" and b == b"worker" for a, b in itertools.pairwise(argv))


def _next_worker(sup: int, seen: set[int], timeout: float = 20.0) -> int:
    """The supervisor's next worker pid (polled finely: forks start right after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(sup):
            # Not marked seen otherwise: until it execs, a new worker shows our own cmdline.
            if pid not in seen and _is_worker(pid):
                seen.add(pid)
                return pid
        time.sleep(POLL)  # polling interval of a deadline wait
    raise AssertionError("no new worker")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cgroup_dir(pid: int, controller: str) -> str | None:
    """The worker's own v1 cgroup directory of ``controller``, None outside one of ours."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") and "/spctl-" in path:
            return f"/sys/fs/cgroup/{controller}{path}"
    return None


def _start_time(pid: int) -> int | None:
    """Start time of ``pid`` (with the pid, its identity), None when gone or a zombie."""
    data = _read(f"/proc/{pid}/stat")
    fields = data[data.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


def _observe(pid: int, probe: Callable[[float], None], what: str) -> float:
    """Call ``probe(now)`` every POLL s until ``pid`` exits; return when it did (wall clock,
    to compare with the supervisor's log). The exit is seen through a pidfd, not by polling."""
    fd = os.pidfd_open(pid)
    deadline = time.time() + 30
    try:
        while not select.select([fd], [], [], POLL)[0]:
            now = time.time()
            assert now < deadline, f"{what} not killed"
            probe(now)
        return time.time()
    finally:
        os.close(fd)


def _memory_run(sup: int, seen: set[int], progress: Path) -> dict[str, Any]:
    pid = _next_worker(sup, seen)
    limit = LIMIT_MIB * 2**20
    at: dict[str, float] = {}
    mib = [0]
    cgroup = [""]

    def probe(now: float) -> None:
        statm = _read(f"/proc/{pid}/statm").split()
        if len(statm) > 1 and int(statm[1]) * PAGE > limit:
            at.setdefault("rss", now)
        if (text := _read(str(progress))).isdigit():
            mib[0] = int(text)
            if mib[0] >= LIMIT_MIB:
                at.setdefault("progress", now)
        cgroup[0] = cgroup[0] or _cgroup_dir(pid, "memory") or ""
        if cgroup[0]:
            # At the limit: a charge failed (reclaim or OOM follows), or usage within a page.
            failed = _read(f"{cgroup[0]}/memory.failcnt").strip() not in ("", "0")
            usage = _read(f"{cgroup[0]}/memory.usage_in_bytes").strip()
            if failed or (usage.isdigit() and int(usage) >= limit - PAGE):
                at.setdefault("charge", now)

    gone = _observe(pid, probe, "memory bomb")
    with contextlib.suppress(FileNotFoundError):
        progress.unlink()  # the next incarnation starts from nothing
    delays = {k: gone - t for k, t in at.items()}  # rss, progress, charge: each → gone
    return {"gone": gone, "start": min(at.values(), default=gone), "mib": mib[0], **delays}


def _fork_run(sup: int, seen: set[int]) -> dict[str, Any]:
    pid = _next_worker(sup, seen)
    at: dict[str, float] = {}
    kids: dict[int, int] = {}

    def probe(now: float) -> None:
        current = _children(pid)
        for kid in current:
            if kid not in kids and (start := _start_time(kid)) is not None:
                kids[kid] = start
        if current:
            at.setdefault("first", now)
        if 1 + len(current) > PROCESSES:
            at.setdefault("crossed", now)

    gone = _observe(pid, probe, "fork bomb")
    wait_for(
        lambda: all(_start_time(k) != s for k, s in kids.items()), 20, "fork bomb children gone"
    )
    assert "first" in at and "crossed" in at, "bomb killed before it was seen forking"
    return {
        "gone": gone,
        "start": at["first"],
        "first": gone - at["first"],
        "crossed": gone - at["crossed"],
        "tree": time.time() - at["first"],
        "kids": len(kids),
    }


def _log(s: Serve, event: str) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for e in s.logs():
        if e.get("event") == event and "timestamp" in e:
            ts = datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
            out.append((ts, e))
    return out


def _attribute(s: Serve, runs: list[dict[str, Any]]) -> str:
    """Give each run the delay from the watchdog's "limit breached" to the worker gone, and
    tell who killed the measured incarnations: the reason recorded at each one's end."""
    breaches = [ts for ts, _ in _log(s, "limit breached")]
    for run in runs:
        inside = [ts for ts in breaches if run["start"] - 1 <= ts <= run["gone"]]
        if inside:
            run["breach"] = run["gone"] - max(inside)

    def crashes() -> list[tuple[float, str]]:
        return [
            (ts, str(e.get("reason"))) for ts, e in _log(s, "state") if e.get("to") == "crashed"
        ]

    # The end is logged once the tree is reaped: a moment after the observer saw the exit.
    wait_for(lambda: any(ts >= runs[-1]["gone"] - 0.01 for ts, _ in crashes()), 10, "last end")
    ends = crashes()
    reasons: Counter[str] = Counter()
    for run in runs:
        reason = next((r for ts, r in ends if ts >= run["gone"] - 0.01), "?")
        reasons["kernel OOM" if "OOM" in reason else reason.split(" (")[0]] += 1
    return ", ".join(f"{k}: {v}" for k, v in reasons.most_common())


@contextlib.contextmanager
def _supervisor(root: Path, entry: dict[str, Any], args: list[str]) -> Iterator[Serve]:
    root.mkdir()
    s = Serve(root, make_extensions(root, [entry]), root / "run" / "control.sock", extra_args=args)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        s.kill()


def _ms(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    if not values:
        return "–"
    text = f"{statistics.median(values) * 1e3:.0f} / {max(values) * 1e3:.0f} ms"
    return text if len(values) == len(runs) else f"{text} ({len(values)}/{len(runs)} runs)"


def _memory_rows(tmp: Path) -> list[list[str]]:
    rows = []
    for label, args in MODES.items():
        root = tmp / f"mem{len(args)}"
        progress = root / "mib"
        entry = module_entry(
            "bomb",
            "hog",
            config={"mode": "membomb", "rate": 50, "progress": str(progress)},
            limits={"memory": f"{LIMIT_MIB}MiB"},
            restart=FAST,
        )
        with _supervisor(root, entry, args) as s:
            assert s.proc is not None
            seen: set[int] = set()
            runs = [_memory_run(s.proc.pid, seen, progress) for _ in range(RUNS)]
            killers = _attribute(s, runs)
        rows.append(
            [
                label,
                _ms(runs, "rss"),
                _ms(runs, "charge") if not args else "n/a",
                _ms(runs, "breach"),
                _ms(runs, "progress"),
                f"{statistics.median(r['mib'] for r in runs):.0f} MiB",
                killers,
            ]
        )
    return rows


def _fork_rows(tmp: Path) -> list[list[str]]:
    rows = []
    for label, args in MODES.items():
        root = tmp / f"fork{len(args)}"
        progress = root / "fork"
        entry = module_entry(
            "fb",
            "hog",
            config={"mode": "forkbomb", "progress": str(progress)},
            limits={"processes": PROCESSES},
            restart=FAST,
        )
        with _supervisor(root, entry, args) as s:
            assert s.proc is not None
            if args:
                seen: set[int] = set()
                runs = [_fork_run(s.proc.pid, seen) for _ in range(RUNS)]
                killers = _attribute(s, runs)
                rows.append(
                    [
                        label,
                        _ms(runs, "first"),
                        _ms(runs, "crossed"),
                        _ms(runs, "breach"),
                        _ms(runs, "tree"),
                        f"{statistics.median(r['kids'] for r in runs):.0f}",
                        killers,
                    ]
                )
            else:
                rows.append([label, *_contained(s, progress)])
    return rows


def _contained(s: Serve, progress: Path) -> list[str]:
    """Under pids.max: fork fails with EAGAIN, the worker lives on, nothing is killed."""
    assert s.proc is not None
    pid = _next_worker(s.proc.pid, set())
    t0 = time.monotonic()
    outcome = wait_for(lambda: _read(str(progress)), 20, "fork refused")
    refused = time.monotonic() - t0
    pids = f"{_cgroup_dir(pid, 'pids')}/pids.current"
    peak = 0
    window = 8 * SAMPLE_PERIOD  # four times what the watchdog needs to breach
    until = time.monotonic() + window
    while time.monotonic() < until:  # an observation window: nothing may happen in it
        assert _start_time(pid) is not None, "worker killed under pids.max"
        peak = max(peak, int(_read(pids).strip() or 0))
        time.sleep(0.01)
    crashed = [e for _, e in _log(s, "state") if e.get("to") == "crashed"]
    return [
        f"contained (fork fails with {outcome})",
        f"{outcome} {refused * 1e3:.0f} ms after the worker is seen",
        f"no breach ({len(_log(s, 'limit breached'))} logged)",
        f"worker still alive {window:g} s later",
        f"pids.current peak {peak} (tasks, threads included)",
        f"{len(crashed)} crashes",
    ]


def main() -> None:
    rows, note = _sweep_costs()
    print_table(
        f"Watchdog sweep cost (median of {SWEEPS} sweeps; wall / CPU per sweep; "
        f"each tree = a root + 1 child; {note})",
        [
            "trees",
            "Sampler sweep",
            f"supervisor CPU at {SAMPLE_PERIOD * 1e3:.0f} ms",
            "of which /proc table scan (CPU)",
            "psutil loop (same run)",
            "floor: known pids",
            "CPU vs psutil loop",
            "CPU vs floor",
        ],
        rows,
    )
    with tempfile.TemporaryDirectory() as tmp:
        mem = _memory_rows(Path(tmp))
        fork = _fork_rows(Path(tmp))
    print_table(
        f"Memory limit {LIMIT_MIB}MiB, membomb at 50 MiB/s → worker gone (median / max of {RUNS}"
        " runs, one restart each; observer polls every 2 ms; goal ≤ 500 ms median)",
        [
            "mode",
            f"RSS > {LIMIT_MIB}MiB → gone",
            "cgroup charge at limit → gone",
            '"limit breached" logged → gone',
            f"progress ≥ {LIMIT_MIB} → gone",
            "progress at death",
            "killed by (reasons recorded)",
        ],
        mem,
    )
    print_table(
        f"Processes limit {PROCESSES}, forkbomb → worker gone (median / max of {RUNS} runs, one"
        " restart each; observer polls every 2 ms; goal ≤ 500 ms median)",
        [
            "mode",
            "first fork → worker gone",
            f"tree > {PROCESSES} → worker gone",
            '"limit breached" logged → gone',
            "first fork → every child seen gone",
            "children seen",
            "killed by (reasons recorded)",
        ],
        fork,
    )


if __name__ == "__main__":
    main()
