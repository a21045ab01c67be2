"""Spawning one worker process and learning, without polling, when it ends.

Theory of operation: a worker is ``python -m worker`` started from the event-loop thread
(PDEATHSIG is per *thread*: a child forked from a pool thread would be killed when that
thread exits) in a process group of its own, with the child end of a socketpair as fd 3
and pipes for stdout/stderr. Its exit is learned through a pidfd registered with the loop
and collected with ``waitid(P_PIDFD)``, so no SIGCHLD-wide ``waitpid(-1)`` can steal
another child's status. After the leader exits, whatever is left of its group (children
of the extension, re-parented to us because the supervisor is a child subreaper) is
SIGKILLed and reaped, so "stopped" means the whole tree is gone.

By default a worker on spctl's own interpreter is not exec'd but forked from the zygote
(:mod:`supervisor.core.zygote`, :mod:`worker.zygote`), which hands us the same descriptors and
a pid that is already our child; every failure of it falls back to posix_spawn, with fresh
descriptors (a worker of a failed request keeps the old ones and finds its channel closed).
serve starts that zygote before its own start-up work (:func:`start_zygote_early`); after a
death the next fork starts it. Another interpreter (an entry's ``python:``) gets a zygote of
its own, made by the first fork that needs it, while more than one extension's worker runs on
it (serve tells :func:`set_interpreter_users` which they are); :func:`prune_zygotes` stops it
once no more than one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from supervisor.core.kill import LINEAGE, children, lineage_prefix
from supervisor.core.output import PipeReader
from supervisor.core.zygote import Zygote, enabled, sys_path_env

__all__ = [
    "WorkerProcess",
    "managed",
    "prune_zygotes",
    "reap_orphans",
    "set_child_subreaper",
    "set_interpreter_users",
    "spawn_mode",
    "spawn_worker",
    "start_zygote_early",
    "stop_zygote",
    "zygote",
    "zygote_status",
]

PR_SET_CHILD_SUBREAPER = 36

# Pids we spawned and whose exit we collect through their pidfd: the orphan reaper must
# never take their status. Added synchronously right after posix_spawn.
_managed: set[int] = set()
_serials = itertools.count(1)
_zygote: Zygote | None = None


def stop_zygote() -> None:
    """At the core's exit: kill the zygotes (no worker is their child; they are stopped already)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None
    for z in _others.values():
        z.close()
    _others.clear()


def zygote_status() -> dict[str, Any] | None:
    """The zygote for ``spctl status --json`` (``supervisor.zygote``, with ``others``: those of
    other interpreters); None when it is off."""
    z = zygote()
    if z is None:
        return None
    prune_zygotes()
    return {**z.status(), "others": [o.status() for o in _others.values()]}


def start_zygote_early(pythons: Iterable[str]) -> bool:
    """At serve's start, before its own start-up work: start the zygote now if a worker will be
    forked from it (one of ``pythons``, the interpreters of the extensions to start, is its),
    so that its boot (its imports: a fresh interpreter's) overlaps the core's instead of
    delaying the first fork. Call it from the thread that runs the loop (its parent-death
    signal is armed against that thread). Makes us a child subreaper first (a forked worker
    needs it). False: nothing started (off, no extension of its interpreter, or it failed:
    the first fork tries again, as after a death). Zygotes of other interpreters start on
    their first fork."""
    if not enabled() or not set_child_subreaper():
        return False
    z = zygote()
    if z is None or z.python not in set(pythons):
        return False
    return z.start()


def zygote() -> Zygote | None:
    """The core's zygote (created on first use), or None with ``SPCTL_ZYGOTE=off``."""
    global _zygote
    if _zygote is None and enabled():
        _zygote = Zygote(starting=helper_starting, started=helper_started, ended=helper_ended)
    return _zygote


# Another interpreter (an entry's ``python:``) gets a zygote of its own while more than one
# extension's worker runs on it: serve says which interpreter each extension's runs on.
_others: dict[str, Zygote] = {}
_users: Callable[[], Iterable[str]] = tuple  # none until serve says


def set_interpreter_users(users: Callable[[], Iterable[str]]) -> None:
    """``users()``: the interpreter of each configured (enabled) extension's worker, once per
    extension (serve: from its fleet, read at each spawn and each transition)."""
    global _users
    _users = users


def _user_count(python: str) -> int:
    return sum(1 for p in _users() if p == python)


def prune_zygotes() -> None:
    """Stop the zygote of an interpreter no more than one extension uses (after a reload)."""
    for python in [p for p in _others if _user_count(p) < 2]:
        _others.pop(python).close()


def spawn_mode(argv: Sequence[str]) -> str:
    """How a worker with ``argv`` would be started: "zygote" ("zygote:PYTHON" from another
    interpreter's) or "exec"."""
    own = _forkable(argv)[0]
    if own is None:
        return "exec"
    return "zygote" if own is _zygote else f"zygote:{argv[0]}"


def _forkable(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[Zygote | None, str]:
    """The zygote that can fork a worker of ``argv`` (or None, and why not: "" when there is
    nothing to say): one of its interpreter (spctl's own, or another that more than one
    extension uses), and we are a child subreaper (its worker, an orphan once the
    intermediate exits, must be re-parented to us: without, it would go to init and refuse
    to run). Another interpreter's is made for a worker with ``env`` (it starts with what of
    it sets sys.path: how that interpreter finds the worker package); without ``env`` (a
    question, not a spawn) spctl's own stands for one not made yet."""
    own = zygote()
    if own is None or not _subreaper or list(argv[1:]) != ["-P", "-m", "worker"]:
        return None, ""
    python = argv[0]
    if python == own.python:
        return own, ""
    if _user_count(python) < 2:
        prune_zygotes()
        return None, f"no other extension runs on {python}"
    if env is None:
        return _others.get(python, own), ""
    z = _others.get(python)
    if z is None:
        z = _others[python] = Zygote(
            python,
            extra=sys_path_env(env),
            starting=helper_starting,
            started=helper_started,
            ended=helper_ended,
        )
    return z, ""


def managed(pid: int) -> bool:
    """Did we spawn ``pid`` (a worker or a helper, not yet reaped)? Orphan handling must leave
    it alone. While a helper is being forked (its pid not known yet) every child counts."""
    return pid in _managed or _helpers_starting > 0


# Helpers: children of the core that are not workers (a hook, supervisor.core.hooks; uv
# building an environment from a thread, supervisor.install.uv), reaped by their own
# subprocess.Popen, never adopted or killed. helper_starting() before the fork, so that
# orphan handling on another thread leaves every child alone until helper_started(pid) says
# which one it is (None: the fork failed); helper_ended(pid) once it is reaped.
_helpers_lock = threading.Lock()
_helpers_starting = 0


def helper_starting() -> None:
    global _helpers_starting
    with _helpers_lock:
        _helpers_starting += 1


def helper_started(pid: int | None) -> None:
    global _helpers_starting
    with _helpers_lock:
        if pid is not None:
            _managed.add(pid)
        _helpers_starting -= 1


def helper_ended(pid: int) -> None:
    _managed.discard(pid)


_subreaper = False  # set_child_subreaper() succeeded: a forked worker is re-parented to us


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to us (so we can reap and account for them)."""
    import ctypes

    global _subreaper
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = _subreaper or bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        pass
    return _subreaper


@dataclass(eq=False)
class WorkerProcess:
    pid: int
    sock: socket.socket
    exited: asyncio.Future[os.waitid_result]
    readers: list[PipeReader] = field(default_factory=list)
    mark: str = ""  # SPCTL_LINEAGE: inherited by what it starts (see supervisor.core.orphans)
    spawn: str = "exec"  # or "zygote": forked from it ("zygote:PYTHON": another interpreter's)
    why: str = ""  # why it was exec'd although the zygote is on (its last error)

    @property
    def pgid(self) -> int:
        return self.pid  # process_group=0 makes the worker its group's leader

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    async def wait(self) -> os.waitid_result:
        """Wait for the exit; cancelling the waiter never cancels the shared future."""
        return await asyncio.shield(self.exited)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole process group; False when nothing is left in it."""
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False

    async def reap_group(self, timeout: float = 5.0) -> None:
        """SIGKILL what is left of the group and wait until every member is reaped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.signal_group(signal.SIGKILL):
            _reap_group_members(self.pgid)
            if loop.time() > deadline:
                return
            # Members that are not (yet) our children die on their own; their zombies are
            # reaped by their parent or, once re-parented, by us. Nothing to await: poll briefly.
            await asyncio.sleep(0.005)

    async def wait_output(self, timeout: float = 1.0) -> None:
        """Let the pipe readers reach EOF so the last lines are not lost."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(r.done for r in self.readers))


def _reap_group_members(pgid: int) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap_orphans(known: set[int]) -> int:
    """Reap zombie children we do not manage (orphans re-parented to us). Returns how many."""
    reaped = 0
    if _helpers_starting:
        return 0  # a helper being forked: its pid is not in _managed yet
    for pid in set(children("self")) - known - _managed:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped += 1
    return reaped


class _Fds:
    """One worker's descriptors: the channel's socketpair, its stdout/stderr pipes, and
    /dev/null for its stdin; the child's ends are closed once it has them."""

    def __init__(self) -> None:
        self.parent_sock, self.child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def child(self) -> list[int]:
        return [self.null, self.out_w, self.err_w, self.child_sock.fileno()]

    def close_child(self) -> None:
        self.child_sock.close()
        for fd in (self.out_w, self.err_w, self.null):
            os.close(fd)

    def close_ours(self) -> None:
        self.parent_sock.close()
        os.close(self.out_r)
        os.close(self.err_r)


_RESET_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGCHLD,
)


async def spawn_worker(
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    on_line: Callable[[str, str], None],
    on_spawned: Callable[[int], Awaitable[None]] | None = None,
) -> WorkerProcess:
    """Start one worker: ``argv`` with fd 3 = the channel. ``on_line(stream, line)`` gets output;
    ``await on_spawned(pid)`` runs once the process exists and is watched, before this returns
    (so before the caller connects the channel: the worker cannot boot its extension before
    it, e.g. before it is in its cgroup).

    posix_spawn (not fork + preexec_fn, which is unsafe in a threaded process) places the
    channel at fd 3 and the pipes at 1/2, puts the child in its own process group and resets
    the signals Python ignores. Every other descriptor of ours is close-on-exec (PEP 446).
    Raises OSError when the program cannot be started; nothing is left behind then.
    A worker the zygote can fork (:func:`spawn_mode`) is asked of it first (awaited: the loop
    is never blocked); ``spawn``/``why`` of the result say how it was started.
    """
    loop = asyncio.get_running_loop()
    full_env = dict(env)
    full_env["SPCTL_PARENT_PID"] = str(os.getpid())
    mark = f"{lineage_prefix(os.getpid()) or ''}{next(_serials)}"
    full_env[LINEAGE] = mark
    spawn = "exec"
    z, why = _forkable(argv, full_env)
    pid: int | None = None
    if z is not None and (refused := z.unforkable(full_env)) is not None:
        why = refused
        on_line("spctl", f"worker exec'd, not forked: {why}")
    elif z is not None:
        fds = _Fds()
        try:
            pid = await z.fork(full_env, fds.child())
        except BaseException:  # cancelled: the zygote is killed, nothing of ours is left
            fds.close_ours()
            raise
        finally:
            fds.close_child()
        if pid is None:
            # A failed request may have forked a worker all the same: it keeps these ends,
            # so they are closed (it finds its channel closed and exits) and new ones made.
            fds.close_ours()
            why = z.last_error
            on_line("spctl", f"worker exec'd, not forked: {why}")
        else:
            # "zygote": spctl's own; "zygote:PYTHON": that of another interpreter
            spawn = "zygote" if z is _zygote else f"zygote:{z.python}"
    if pid is None:
        fds = _Fds()
        try:
            # Spawned from the loop thread on purpose (PDEATHSIG is per thread); ~1 ms.
            pid = os.posix_spawn(  # noqa: ASYNC221
                argv[0],
                list(argv),
                full_env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, fds.null, 0),
                    (os.POSIX_SPAWN_DUP2, fds.out_w, 1),
                    (os.POSIX_SPAWN_DUP2, fds.err_w, 2),
                    (os.POSIX_SPAWN_DUP2, fds.child_sock.fileno(), 3),
                ],
                setpgroup=0,
                setsigdef=_RESET_SIGNALS,
            )
        except BaseException:
            fds.close_ours()
            raise
        finally:
            fds.close_child()
    parent_sock, out_r, err_r = fds.parent_sock, fds.out_r, fds.err_r
    _managed.add(pid)
    pidfd = os.pidfd_open(pid)
    exited: asyncio.Future[os.waitid_result] = loop.create_future()

    def _on_exit() -> None:
        loop.remove_reader(pidfd)
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            result = None
        os.close(pidfd)
        _managed.discard(pid)
        if result is not None and not exited.done():
            exited.set_result(result)

    loop.add_reader(pidfd, _on_exit)
    proc = WorkerProcess(
        pid=pid,
        sock=parent_sock,
        exited=exited,
        mark=mark,
        spawn=spawn,
        why=why,
    )
    for stream, fd in (("stdout", out_r), ("stderr", err_r)):

        def _make(stream: str = stream) -> PipeReader:
            return PipeReader(
                lambda line: on_line(stream, line),
                on_drop=lambda lines, size: on_line(
                    "spctl", f"[{lines} {stream} lines ({size} bytes) dropped: over the rate limit]"
                ),
            )

        _, reader = await loop.connect_read_pipe(_make, os.fdopen(fd, "rb", buffering=0))
        proc.readers.append(reader)
    if on_spawned is not None:
        with anyio.CancelScope(shield=True):  # the process exists: the caller must get it
            await on_spawned(pid)
    return proc
