"""cgroups: detection (real and on a fake /proc), and kernel-enforced limits on real hogs.

Every cgroup is made beneath our own, in ``<own>/spctl-test-<pid>/``, and removed afterwards
(the fixture checks it, even when the test fails).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.config import Limits
from supervisor.core.cgroups import (
    Cgroups,
    Support,
    WorkerCgroup,
    detect,
    parse_mountinfo,
    parse_proc_cgroup,
)
from tests.fixtures.hogs.launch import Hog, hog, started
from tests.helpers import pid_gone, wait_for

MiB = 1 << 20
PREFIX = "spctl-test"
SUPPORT = detect(environ={})
needs_cgroups = pytest.mark.skipif(
    SUPPORT.mode == "none" or os.geteuid() != 0,
    reason=f"needs root and cgroups ({SUPPORT.mode}: {SUPPORT.reason})",
)


def own_v1_memory() -> bool:
    return any("memory" in c for c, _ in parse_proc_cgroup(Path("/proc/self/cgroup").read_text()))


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    cg = Cgroups(SUPPORT, prefix=PREFIX)
    parents = [h.path / f"{PREFIX}-{os.getpid()}" for h in SUPPORT.hierarchies]
    assert all(p.is_dir() for p in parents)
    try:
        yield cg
    finally:
        cg.close()
        assert not any(p.exists() for p in parents), "close() left a parent behind"


def exit_of(h: Hog, timeout: float = 10.0) -> int:
    try:
        return h.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pid {h.pid} still alive after {timeout}s") from None


@contextlib.contextmanager
def start_in(group: WorkerCgroup, script: str, *args: object) -> Iterator[Hog]:
    """Start a hog that waits for 'go', move it into ``group``, then let it go."""
    with hog(script, "--go", *args) as h:
        assert h.line() == "ready"
        group.add(h.pid)
        assert h.pid in group.pids()
        h.go()
        yield h


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["off", "OFF", "0", "no", "false"])
def test_switched_off_by_environment(value: str) -> None:
    support = detect(environ={"SPCTL_CGROUPS": value})
    assert support == Support("none", f"SPCTL_CGROUPS={value}")


def test_switched_off_by_configuration_and_nonsense() -> None:
    assert detect(disabled=True) == Support("none", "cgroups disabled by configuration")
    bad = detect(environ={"SPCTL_CGROUPS": "v3"})
    assert bad.mode == "none"
    assert "not off|v1|v2|auto" in bad.reason


def test_mode_none_makes_nothing() -> None:
    cg = Cgroups(Support("none", "test"))
    assert cg.create("x", Limits(memory=64 * MiB)) is None
    cg.close()


@needs_cgroups
def test_detect_here() -> None:
    """This machine (hybrid, root): v1 with memory, pids, cpu and freezer; v2 has no memory."""
    if not own_v1_memory():
        pytest.skip("no v1 memory hierarchy on this machine")
    assert SUPPORT.mode == "cgroup v1"
    assert {"memory", "pids", "cpu", "freezer"} <= SUPPORT.controllers
    own = dict(
        (next(iter(c)), p)
        for c, p in parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
        if len(c) == 1
    )
    memory = next(h.path for h in SUPPORT.hierarchies if "memory" in h.controllers)
    assert str(memory).endswith(own["memory"].rstrip("/"))
    print(f"\n{SUPPORT.mode}: {SUPPORT.reason}")


def fake_proc(tmp_path: Path, cgroup: str, mounts: list[tuple[str, Path, str, str]]) -> Path:
    """A /proc/self with ``cgroup`` and a mountinfo of (root, mount point, fstype, options)."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    lines = [
        f"{30 + i} 23 0:{40 + i} {root} {point} rw,relatime - {fstype} {fstype} {options}"
        for i, (root, point, fstype, options) in enumerate(mounts)
    ]
    (tmp_path / "proc/self/mountinfo").write_text("\n".join(lines) + "\n")
    return tmp_path / "proc"


def cgroup_dir(path: Path, controllers: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("")
    (path / "cgroup.controllers").write_text(controllers)
    return path


def test_detect_pure_v2_delegated(tmp_path: Path) -> None:
    svc = cgroup_dir(tmp_path / "cg/system.slice/spctl.service", "cpuset cpu io memory pids")
    proc = fake_proc(
        tmp_path, "0::/system.slice/spctl.service\n", [("/", tmp_path / "cg", "cgroup2", "rw")]
    )
    support = detect(environ={}, proc=proc)
    assert support.mode == "cgroup v2"
    assert support.hierarchies[0].path == svc
    assert support.controllers == {"memory", "pids", "cpu"}


@pytest.mark.parametrize(
    ("procs", "enabled", "usable"),
    [
        ("self", "", True),  # only us: we may move ourselves into a leaf
        ("parent", "", False),  # a login session's scope: not ours to rearrange
        ("parent", "cpu memory pids", True),  # already enabled for children: nothing to move
    ],
)
def test_detect_v2_only_when_delegated(
    tmp_path: Path, procs: str, enabled: str, usable: bool
) -> None:
    svc = cgroup_dir(tmp_path / "cg/user.slice/session-1.scope", "cpu memory pids")
    (svc / "cgroup.type").write_text("domain\n")  # not the root cgroup
    (svc / "cgroup.subtree_control").write_text(enabled)
    (svc / "cgroup.procs").write_text(f"{os.getpid() if procs == 'self' else os.getppid()}\n")
    proc = fake_proc(
        tmp_path, "0::/user.slice/session-1.scope\n", [("/", tmp_path / "cg", "cgroup2", "rw")]
    )
    support = detect(environ={}, proc=proc)
    assert (support.mode == "cgroup v2") is usable, support.reason
    if not usable:
        assert "not delegated to us" in support.reason


def test_detect_v2_without_memory_falls_back_to_v1(tmp_path: Path) -> None:
    cgroup_dir(tmp_path / "unified", "hugetlb")
    memory = cgroup_dir(tmp_path / "memory/box/a b")
    cpu = cgroup_dir(tmp_path / "cpu,cpuacct")
    proc = fake_proc(
        tmp_path,
        "4:memory:/box/a b\n2:cpu,cpuacct:/\n9:name=systemd:/\n0::/\n",
        [
            ("/", tmp_path / "memory", "cgroup", "rw,memory"),
            ("/", tmp_path / "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            ("/", tmp_path / "unified", "cgroup2", "rw"),
        ],
    )
    support = detect(environ={}, proc=proc)
    assert support.mode == "cgroup v1"
    assert {(h.path, h.controllers) for h in support.hierarchies} == {
        (memory, frozenset({"memory"})),
        (cpu, frozenset({"cpu", "cpuacct"})),
    }
    assert "v2: no memory controller" in support.reason
    forced = detect(environ={"SPCTL_CGROUPS": "v2"}, proc=proc)
    assert forced.mode == "cgroup v2"  # forced: usable for kill and removal, no limits
    assert forced.controllers == frozenset()


def test_detect_ignores_mounts_that_do_not_show_our_cgroup(tmp_path: Path) -> None:
    cgroup_dir(tmp_path / "memory")
    proc = fake_proc(
        tmp_path, "4:memory:/elsewhere/me\n", [("/box", tmp_path / "memory", "cgroup", "rw,memory")]
    )
    support = detect(environ={}, proc=proc)
    assert support.mode == "none"
    assert "v1: no writable memory, pids or cpu hierarchy" in support.reason


def test_parsers() -> None:
    assert parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/\n0::/x:y\n") == [
        (frozenset({"memory"}), "/a/b"),
        (frozenset({"cpu", "cpuacct"}), "/"),
        (frozenset(), "/x:y"),
    ]
    text = (
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 /sub /mnt/with\\040space rw,relatime shared:1 - cgroup2 cgroup2 rw\n"
        "22 1 0:21 / /proc rw - proc proc rw\n"
    )
    mounts = parse_mountinfo(text)
    assert [(m.root, str(m.point), m.fstype) for m in mounts] == [
        ("/", "/sys/fs/cgroup/memory", "cgroup"),
        ("/sub", "/mnt/with space", "cgroup2"),
    ]
    assert "memory" in mounts[0].options


# -- limits the kernel enforces ----------------------------------------------------------------


@needs_cgroups
def test_memory_limit_oom_kills_a_growing_process(cgroups: Cgroups) -> None:
    group = cgroups.create("mem", Limits(memory=64 * MiB))
    assert group is not None
    assert not group.oom_killed()
    with start_in(group, "membomb", "--rate", 200, "--max", 200) as h:
        began = time.monotonic()
        assert exit_of(h) == -9
        took = time.monotonic() - began
        assert group.oom_killed()
        usage = group.usage()
        print(f"\nOOM-killed {took * 1e3:.0f} ms after go; usage {usage}")
        assert usage.get("oom_kills", 1) >= 1
        assert usage.get("memory_peak", 0) <= 64 * MiB
    assert group.remove()


@needs_cgroups
def test_memory_limit_stops_an_instant_4gib_allocation(cgroups: Cgroups) -> None:
    group = cgroups.create("big", Limits(memory=64 * MiB))
    assert group is not None
    with start_in(group, "bigalloc", "--size", 4096) as h:
        assert exit_of(h) == -9
        assert group.oom_killed()


@needs_cgroups
def test_pids_limit_stops_a_fork_bomb(cgroups: Cgroups) -> None:
    group = cgroups.create("forks", Limits(processes=8))
    assert group is not None
    with start_in(group, "forkbomb", "--max", 30) as h:
        words = h.line().split()
        forked, failed = int(words[1]), int(words[3])
        assert forked == 7, words  # 8 tasks: the bomb and 7 children (pids.max counts threads)
        assert failed == 23
        assert len(group.pids()) == 8
        assert group.usage().get("pids", 8) == 8
        assert group.kill()


@needs_cgroups
def test_cpu_quota_throttles_a_spinner(cgroups: Cgroups) -> None:
    group = cgroups.create("cpu", Limits(cpu=0.2))
    assert group is not None
    with start_in(group, "spin") as h:
        assert h.line().startswith("spinning")
        tick = os.sysconf("SC_CLK_TCK")

        def used() -> float:
            fields = Path(f"/proc/{h.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        start, cpu0, usec0 = time.monotonic(), used(), group.usage().get("cpu_usec")
        wait_for(lambda: time.monotonic() - start >= 2.0, what="a 2 s interval")
        cores = (used() - cpu0) / (time.monotonic() - start)
        usage = group.usage()
        kernel = None if usec0 is None else (usage["cpu_usec"] - usec0) / 1e6 / 2.0
        print(f"\nspinner under cpu 0.2: {cores:.3f} cores (/proc), {kernel} (cgroup), {usage}")
        assert 0.05 < cores < 0.35
        assert usage.get("nr_throttled", 1) > 0


@needs_cgroups
def test_kill_takes_the_whole_group(cgroups: Cgroups) -> None:
    group = cgroups.create("five", Limits())
    assert group is not None
    with start_in(group, "forkbomb", "--max", 4) as h:
        assert h.line() == "forked 4 failed 0"
        pids = group.pids()
        assert len(pids) == 5
        began = time.monotonic()
        assert group.kill(timeout=2.0)
        wait_for(lambda: all(pid_gone(p) for p in pids), timeout=2.0, what="all five gone")
        print(f"\nkill() of 5 processes: empty after {(time.monotonic() - began) * 1e3:.1f} ms")
        assert exit_of(h) == -9
        assert not group.oom_killed()
    assert group.remove()
    assert not any(p.exists() for p in group.paths)
    assert group.remove()  # idempotent


@needs_cgroups
def test_kill_a_group_that_keeps_forking(cgroups: Cgroups) -> None:
    """A shell forking as fast as it can: freezing (v1) or cgroup.kill (v2) leaves no escapee."""
    group = cgroups.create("churn", Limits(processes=64))
    assert group is not None
    with started(["sh", "-c", "read _; while :; do sleep 5 & done"]) as h:
        group.add(h.pid)
        h.go()
        wait_for(lambda: len(group.pids()) > 20, what="the shell to fork")
        assert group.kill(timeout=3.0)
        assert group.pids() == set()


@needs_cgroups
def test_usage_and_add_errors(cgroups: Cgroups) -> None:
    group = cgroups.create("usage", Limits(memory=256 * MiB, processes=16, cpu=1.0))
    assert group is not None
    with start_in(group, "tree", "--children", 2) as h:
        assert h.line().startswith("pids ")
        assert len(group.pids()) == 3  # children forked inside the group stay in it
        usage = group.usage()
        print(f"\nusage of a 3-process tree: {usage}")
        if "memory" in SUPPORT.controllers:
            assert usage["memory"] > 10 * MiB
        if "pids" in SUPPORT.controllers:
            assert usage["pids"] == 3
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(ProcessLookupError):
        group.add(dead.pid)


@needs_cgroups
def test_names_are_made_safe_and_unique(cgroups: Cgroups) -> None:
    a = cgroups.create("../weird name/.x", Limits())
    b = cgroups.create("../weird name/.x", Limits())
    assert a is not None and b is not None
    for path in (*a.paths, *b.paths):
        assert path.parent.name == f"{PREFIX}-{os.getpid()}"
        assert "/" not in path.name and not path.name.startswith(".")
    assert set(a.paths).isdisjoint(b.paths)


@needs_cgroups
def test_a_removed_group_is_forgotten(cgroups: Cgroups) -> None:
    """A crash-looping worker makes a group per start: each one removed must leave the
    registry too (they were kept until shutdown: the supervisor grew with every crash)."""
    groups = [cgroups.create("loop", Limits()) for _ in range(3)]
    assert all(g is not None for g in groups) and cgroups.tracked == 3
    for group in groups[:2]:
        assert group is not None and group.remove()
    assert cgroups.tracked == 1
    assert groups[0] is not None and groups[0].remove()  # idempotent: forgotten once
    assert cgroups.tracked == 1
    cgroups.close()
    assert cgroups.tracked == 0


@needs_cgroups
def test_close_kills_and_removes_everything(cgroups: Cgroups) -> None:
    group = cgroups.create("left", Limits(memory=64 * MiB))
    assert group is not None
    with start_in(group, "spin") as h:
        assert h.line().startswith("spinning")
        cgroups.close()
        assert exit_of(h, 2.0) == -9
        assert not any(p.exists() for p in group.paths)


@needs_cgroups
def test_parents_of_dead_supervisors_are_swept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [h.path / f"{PREFIX}-{dead.pid}" for h in SUPPORT.hierarchies]
    try:
        for path in stale:
            (path / "worker-1").mkdir(parents=True)
        Cgroups(SUPPORT, prefix=PREFIX).close()
        assert not any(p.exists() for p in stale)
    finally:
        for path in stale:
            for p in (path / "worker-1", path):
                with contextlib.suppress(FileNotFoundError):
                    p.rmdir()


def test_forced_v2_kill_and_remove() -> None:
    """Where a writable cgroup2 mount shows our cgroup (even without controllers):
    cgroup.kill and removal work. On this machine the unified hierarchy of the hybrid."""
    support = detect(environ={"SPCTL_CGROUPS": "v2"})
    if support.mode != "cgroup v2" or os.geteuid() != 0:
        pytest.skip(f"no writable cgroup2 mount: {support.reason}")
    cg = Cgroups(support, prefix=PREFIX)
    try:
        group = cg.create("v2", Limits(memory=64 * MiB, processes=8, cpu=0.5))
        assert group is not None
        with start_in(group, "forkbomb", "--max", 4) as h:
            assert h.line().startswith("forked")
            assert len(group.pids()) == 5
            assert group.kill()
            assert exit_of(h) == -9
        assert group.remove()
    finally:
        cg.close()
    assert not (support.hierarchies[0].path / f"{PREFIX}-{os.getpid()}").exists()


@needs_cgroups
def test_the_meter_reads_a_tree_from_its_cgroup_counters(cgroups: Cgroups) -> None:
    """CgroupMeter (what status, top and the history read for a worker in its cgroup): the
    processes of the group, the memory it is charged, its CPU time and the rate of it; None
    once the group is gone."""
    from supervisor.core.cgroup_meter import CgroupMeter

    group = cgroups.create("meter", Limits(memory=256 * MiB))
    assert group is not None
    meter = CgroupMeter()
    with start_in(group, "tree", "--children", 2, "--spin", 1) as h:
        assert h.line().startswith("pids ")
        first = meter.sample("meter", group)
        assert first is not None and first.source == "cgroup"
        assert first.processes == 3
        assert first.open_files >= 3 * 3  # stdin, stdout, stderr at least, each
        assert first.cpu == 0.0  # nothing to compare with yet
        assert first.rss > 10 * MiB  # three interpreters
        if "memory" in SUPPORT.controllers:
            assert first.charged is not None and first.charged > 0
        assert meter.sample("meter", group, fds=False) is not None  # a reading of its own
        spun = wait_for(
            lambda: (s := meter.sample("meter", group, fds=False)) and s.cpu > 0.2 and s,
            10,
            "the spinner's CPU in the counters",
        )
        if "cpuacct" in SUPPORT.controllers or SUPPORT.mode == "cgroup v2":
            assert spun.cpu_seconds > first.cpu_seconds
        assert spun.open_files == 0  # fds=False: not counted
        assert group.kill()
    assert group.remove()
    assert meter.sample("meter", group) is None


@needs_cgroups
def test_outside_tells_a_pid_moved_out_in_any_hierarchy(cgroups: Cgroups) -> None:
    """What the lineage's escape check asks: inside the group or a cgroup beneath it in every
    hierarchy, or not; a pid moved to the parent in one hierarchy only is outside."""
    group = cgroups.create("outside", Limits())
    assert group is not None
    subs = [path / "inner" for path in group.paths]
    with start_in(group, "tree", "--children", 0) as h:
        try:
            assert group.outside({h.pid}) == set()
            for sub in subs:  # an extension's own cgroup beneath its group: still inside
                sub.mkdir()
                (sub / "cgroup.procs").write_text(str(h.pid))
            assert group.outside({h.pid}) == set()
            (group.paths[-1].parent / "cgroup.procs").write_text(str(h.pid))
            assert group.outside({h.pid}) == {h.pid}
            assert group.outside(set()) == set()
        finally:
            group.kill()  # what is left in it; the hog left it in one hierarchy: killed below
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, 9)
            wait_for(lambda: pid_gone(h.pid), 10, "the hog to die")
            for sub in subs:
                wait_for(lambda s=sub: _rmdir_ok(s), 10, f"{sub} removed")
    assert group.remove()


def _rmdir_ok(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
