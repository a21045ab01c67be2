"""The keeper kills worker process groups when the supervisor dies: real processes, pidfds."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.keeper import Keeper

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 5.0

# A worker stand-in: leads its own process group and starts a plain grandchild in that group,
# with no PDEATHSIG of its own: only the keeper can kill it.
WORKER = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(['sleep', '1000'])\n"
    "print(p.pid, flush=True)\n"
    "p.wait()\n"
)

# A supervisor stand-in: starts a keeper, three groups, tells the keeper, reports, blocks.
FAKE_SUPERVISOR = """
import json, subprocess, sys
from supervisor.core.keeper import Keeper

keeper = Keeper()
keeper.start()
pids = []
for _ in range(3):
    worker = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1]], start_new_session=True, stdout=subprocess.PIPE
    )
    grandchild = int(worker.stdout.readline())
    keeper.watch(worker.pid)
    pids += [worker.pid, grandchild]
print(json.dumps({"keeper": keeper.pid, "pids": pids}), flush=True)
sys.stdin.read()
"""


def read_line(fd: int, timeout: float = DEADLINE) -> bytes:
    """One line from a pipe, waiting at most ``timeout`` for it."""
    data = b""
    end = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not data.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError(f"no line within {timeout}s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"pipe closed (got {data!r})")
        data += chunk
    return data


class Watch:
    """pidfds for processes that are not (all) our children; readable once a process ended.

    A zombie counts as gone: its pidfd is readable although nobody has reaped it yet.
    """

    def __init__(self, pids: list[int]) -> None:
        self.fds = {pid: os.pidfd_open(pid) for pid in pids}

    def alive(self) -> set[int]:
        poller = select.poll()
        for fd in self.fds.values():
            poller.register(fd, select.POLLIN)
        ended = {fd for fd, _ in poller.poll(0)}
        return {pid for pid, fd in self.fds.items() if fd not in ended}

    def wait_gone(self, pids: list[int] | None = None, timeout: float = DEADLINE) -> float:
        """Seconds until these (default: all) processes ended; fails after ``timeout``."""
        start = time.monotonic()
        poller = select.poll()
        pending = {fd: pid for pid, fd in self.fds.items() if pids is None or pid in pids}
        for fd in pending:
            poller.register(fd, select.POLLIN)
        while pending:
            left = start + timeout - time.monotonic()
            if left <= 0:
                pytest.fail(f"still alive after {timeout}s: {sorted(pending.values())}")
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                pending.pop(fd)
        return time.monotonic() - start

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


class Groups:
    """Worker stand-ins started by the test; whatever survives is killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> tuple[int, int]:
        """Start a group; return (leader pid = pgid, grandchild pid)."""
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], start_new_session=True, stdout=subprocess.PIPE
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        return proc.pid, int(read_line(proc.stdout.fileno()))

    def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(DEADLINE)
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.fixture
def groups() -> Iterator[Groups]:
    g = Groups()
    yield g
    g.cleanup()


def raw_keeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.core.keeper"],
        stdin=subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )


def wait_ignoring(pid: int, signals: list[signal.Signals]) -> None:
    """Wait until ``pid`` has set these signals to SIG_IGN (its SigIgn mask in /proc)."""
    want = sum(1 << (s - 1) for s in signals)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:") and int(line.split()[1], 16) & want == want:
                return
        time.sleep(0.001)  # polling /proc: there is no event for "signal disposition changed"
    pytest.fail(f"keeper {pid} did not ignore {signals} within {DEADLINE}s")


def test_kill_9_of_the_supervisor_takes_every_group_down() -> None:
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_SUPERVISOR, WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert fake.stdout is not None
    try:
        report = json.loads(read_line(fake.stdout.fileno()))
        descendants: list[int] = report["pids"]
        watch = Watch([*descendants, report["keeper"]])
        assert watch.alive() == {*descendants, report["keeper"]}
        os.kill(fake.pid, signal.SIGKILL)
        fake.wait(DEADLINE)
        elapsed = watch.wait_gone()
        watch.close()
        print(f"\n{len(descendants)} descendants and the keeper gone {elapsed * 1000:.1f} ms "
              "after kill -9 of the supervisor")  # fmt: skip
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
        for pipe in (fake.stdin, fake.stdout):
            if pipe is not None:
                pipe.close()


def test_unwatched_group_survives_and_close_kills_the_rest(groups: Groups) -> None:
    keeper = Keeper()
    keeper.start()
    kept, kept_child = groups.spawn()
    freed, freed_child = groups.spawn()
    keeper.watch(kept)
    keeper.watch(freed)
    keeper.unwatch(freed)
    assert keeper.watched == {kept}
    watch = Watch([kept, kept_child, freed, freed_child])
    keeper.close()  # returns once the keeper has exited, i.e. after its killpg
    assert keeper.pid is None
    watch.wait_gone([kept, kept_child])
    assert watch.alive() == {freed, freed_child}
    watch.close()
    keeper.close()  # idempotent


def test_malformed_lines_are_ignored(groups: Groups) -> None:
    target, target_child = groups.spawn()
    bystander, bystander_child = groups.spawn()
    keeper = raw_keeper()
    assert keeper.stdin is not None
    junk = [
        b"garbage\n",
        b"\n",
        b"+\n",
        b"-\n",
        b"+abc\n",
        b"+0\n",  # "my own group" to killpg: the keeper would kill itself
        b"+-%d\n" % bystander,
        b"*%d\n" % bystander,
        b"+%dx\n" % bystander,
        b"+ %d\n" % bystander,
        b"+99999999999999999999\n",
        b"+" + b"0" * 40 + b"%d\n" % bystander,  # overlong: skipped whole
    ]
    keeper.stdin.write(b"".join(junk))
    keeper.stdin.flush()
    # An overlong line split across writes is skipped up to its newline ...
    keeper.stdin.write(b"+" + b"9" * 40)
    keeper.stdin.flush()
    keeper.stdin.write(b"%d\n" % bystander)
    keeper.stdin.flush()
    # ... and a good line arriving byte by byte still counts.
    for byte in b"+%d\n" % target:
        keeper.stdin.write(bytes([byte]))
        keeper.stdin.flush()
    watch = Watch([target, target_child, bystander, bystander_child])
    keeper.stdin.close()
    assert keeper.wait(DEADLINE) == 0
    watch.wait_gone([target, target_child])
    assert watch.alive() == {bystander, bystander_child}
    watch.close()


def test_keeper_ignores_terminal_and_service_signals(groups: Groups) -> None:
    pgid, child = groups.spawn()
    keeper = raw_keeper()
    assert keeper.stdin is not None
    keeper.stdin.write(b"+%d\n" % pgid)
    keeper.stdin.flush()
    polite = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE]
    wait_ignoring(keeper.pid, polite)
    for signum in polite:
        os.kill(keeper.pid, signum)
    watch = Watch([pgid, child])
    keeper.stdin.close()
    assert keeper.wait(DEADLINE) == 0  # not -15: SIGTERM did not end it, EOF did
    watch.wait_gone()
    watch.close()


def test_a_dead_keeper_is_restarted_and_told_everything(groups: Groups) -> None:
    first, first_child = groups.spawn()
    second, second_child = groups.spawn()
    keeper = Keeper()
    keeper.start()
    keeper.watch(first)
    old = keeper.pid
    assert old is not None
    died = Watch([old])
    os.kill(old, signal.SIGKILL)  # SIGKILL: the old keeper kills nothing on its way out
    died.wait_gone()
    died.close()
    keeper.watch(second)
    assert keeper.pid not in (None, old)
    watch = Watch([first, first_child, second, second_child])
    assert watch.alive() == {first, first_child, second, second_child}
    keeper.close()
    watch.wait_gone()
    watch.close()


def test_workers_never_inherit_the_pipe(groups: Groups) -> None:
    with Keeper() as keeper:
        assert keeper.pid is not None
        pipe = os.readlink(f"/proc/{keeper.pid}/fd/0")
        assert pipe.startswith("pipe:")
        ours = [
            int(fd) for fd in os.listdir("/proc/self/fd") if _link(f"/proc/self/fd/{fd}") == pipe
        ]
        assert len(ours) == 1
        assert not os.get_inheritable(ours[0])
        # A child that keeps every inheritable fd still does not get it.
        leaky = subprocess.Popen(["sleep", "1000"], close_fds=False)
        try:
            links = {
                _link(f"/proc/{leaky.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{leaky.pid}/fd")
            }
            assert pipe not in links
        finally:
            leaky.kill()
            leaky.wait()


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_keeper_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import supervisor.core.keeper\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, cwd=ROOT, timeout=DEADLINE
    ).stdout.split()
    light = {b"signal", b"supervisor", b"supervisor.core", b"supervisor.core.keeper"}
    assert set(out) <= light | {b"supervisor.core.kill"}


def test_keeper_with_nothing_watched_leaves_on_eof() -> None:
    keeper = raw_keeper()
    assert keeper.stdin is not None
    keeper.stdin.close()
    assert keeper.wait(DEADLINE) == 0


def _start_time(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data.rsplit(b")", 1)[1].split()[19])


def test_a_watched_process_dies_with_its_descendants_but_never_a_reused_pid() -> None:
    """``+p<pid>.<start>``: the process (it left every watched group) and what it started; a
    pid whose start time is not the one told is another process and is left alone."""
    tree = subprocess.Popen(
        [sys.executable, "-c", WORKER], start_new_session=True, stdout=subprocess.PIPE
    )
    bystander = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert tree.stdout is not None
        child = int(read_line(tree.stdout.fileno()))
        keeper = raw_keeper()
        assert keeper.stdin is not None
        keeper.stdin.write(b"+p%d.%d\n" % (tree.pid, _start_time(tree.pid)))
        keeper.stdin.write(b"+p%d.%d\n" % (bystander.pid, _start_time(bystander.pid) + 1))
        keeper.stdin.write(b"+p%d.%d\n-p%d.%d\n" % ((child, _start_time(child)) * 2))
        watch = Watch([tree.pid, child, bystander.pid])
        keeper.stdin.close()
        assert keeper.wait(DEADLINE) == 0
        watch.wait_gone([tree.pid, child])  # the child died as the tree's descendant
        assert watch.alive() == {bystander.pid}
        watch.close()
    finally:
        for proc in (tree, bystander):  # each leads its own group (the child is in tree's)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if tree.stdout is not None:
            tree.stdout.close()


# A supervisor stand-in that starts its keeper and two sleepers in sessions of their own: one
# with its lineage mark in the environment, one with another supervisor's.
MARKED = """
import json, os, subprocess, sys
from supervisor.core.keeper import Keeper
from supervisor.core.kill import LINEAGE, lineage_prefix

keeper = Keeper()
keeper.start()
ours = {**os.environ, LINEAGE: lineage_prefix(os.getpid()) + "7"}
other = {**os.environ, LINEAGE: "1.1.7"}
pids = [
    subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True).pid
    for env in (ours, other)
]
print(json.dumps({"keeper": keeper.pid, "pids": pids}), flush=True)
sys.stdin.read()
"""


def test_kill_9_of_the_supervisor_kills_what_carries_its_lineage_mark() -> None:
    fake = subprocess.Popen(
        [sys.executable, "-c", MARKED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    assert fake.stdout is not None
    pids: list[int] = []
    try:
        report = json.loads(read_line(fake.stdout.fileno()))
        pids = report["pids"]
        marked, other = pids
        watch = Watch([marked, other, report["keeper"]])
        os.kill(fake.pid, signal.SIGKILL)
        fake.wait(DEADLINE)
        watch.wait_gone([marked, report["keeper"]])
        assert watch.alive() == {other}
        watch.close()
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
        for pipe in (fake.stdin, fake.stdout):
            if pipe is not None:
                pipe.close()
        for pid in pids:  # the other supervisor's sleeper survives by design
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
