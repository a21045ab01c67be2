"""The zygote: a fork server that has imported the worker's modules, so a worker starts by
``fork`` instead of a fresh interpreter (on unless ``SPCTL_ZYGOTE=off``; DESIGN §14).

Theory of operation. The core starts ``python -P -m worker.zygote`` with one end of a
``SOCK_SEQPACKET`` socketpair at fd 3. The zygote imports :mod:`worker.host` (asyncio, msgpack,
the kinds) but nothing of any extension, freezes the heap (``gc.freeze``), says it is ready
(one packet, ``{"ready": pid}``) and then, single threaded, serves requests: one packet whose
payload is the worker's environment (msgpack) and whose ``SCM_RIGHTS`` are stdin, stdout,
stderr and the channel end. For each it forks an
*intermediate* that forks the worker and exits at once, so the worker is re-parented to the
core (a child subreaper): waitid(P_PIDFD), the reaping and the keeper work as for an exec'd
worker, and killing the zygote kills no worker. The zygote answers the worker's pid (or an
error) only after the intermediate is reaped, i.e. once the worker is the core's child.

The worker waits for that re-parenting, puts itself in its own process group, moves the four
fds to 0–3, closes every other fd, replaces the environment (and what /proc shows of it and
of its command line: those of an exec'd worker) and runs
:func:`worker.__main__.main` — which arms PR_SET_PDEATHSIG and checks that its parent is the
core, exactly as an exec'd worker does. The signal dispositions are those of a fresh
interpreter: the zygote never changes them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import pwd  # noqa: F401  (the worker's user: and sandbox set-up import them)
import resource  # noqa: F401
import signal
import socket
import sys
import time
from typing import NoReturn

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

import worker.__main__ as worker_main
import worker.host  # pre-imported, with what the host imports on demand: what a fork saves
import worker.kinds.daemon
import worker.kinds.services  # noqa: F401
from worker.privileges import arm_pdeathsig, guard_parent
from worker.protocol import EXIT_ORPHANED

ZYGOTE_FD = 3
MAX_REQUEST = 1 << 20
REPARENT_TIMEOUT = 5.0


def _own_block(env: dict[str, str]) -> None:
    """Make /proc/self/environ show ``env`` as an exec'd worker's does: the kernel shows the
    memory where the zygote's own environment was at its exec, which the core made roomy
    (``SPCTL_ZYGOTE_ROOM``); ``env`` is written there, NUL-padded, unless it does not fit
    (then it shows the zygote's). Call it once os.environ no longer points into that area."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50, 51
        block = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
        if len(block) > end - start:
            return
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(block.ljust(end - start, b"\0"))
    except (OSError, ValueError, IndexError):
        pass


def _retitle() -> None:
    """Show this worker's command line as an exec'd worker's, ``python -P -m worker`` (``ps``,
    ``pgrep -f``): the argument area the kernel shows is rewritten in place, NUL-padded."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48, 49
        with open("/proc/self/cmdline", "rb") as f:
            old = f.read()
        new = old.replace(b"\0-m\0worker.zygote\0", b"\0-m\0worker\0", 1)
        if new == old or end - start != len(old):
            return
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(new.ljust(len(old), b"\0"))
    except (OSError, ValueError, IndexError):
        pass  # cosmetic: a worker that keeps the zygote's command line works the same


def _child(fds: list[int], env: dict[str, str], intermediate: int) -> NoReturn:
    try:
        deadline = time.monotonic() + REPARENT_TIMEOUT
        while os.getppid() == intermediate:  # the intermediate exits right after the fork
            if time.monotonic() > deadline:
                os._exit(EXIT_ORPHANED)
            time.sleep(0.0002)
        os.setpgid(0, 0)
        _retitle()
        high = [os.dup(fd) for fd in fds]  # out of the way of 0–3 before the dup2s
        high = [os.dup2(fd, 100 + i) for i, fd in enumerate(high)]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        top = os.sysconf("SC_OPEN_MAX")
        os.closerange(4, top if top > 0 else 65536)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.environ.clear()  # every C environ entry unset: none points into the old block
        os.environ.update(env)
        _own_block(env)
        sys.argv[:] = [worker_main.__file__]  # as ``python -m worker`` has them
        sys.orig_argv[-1:] = ["worker"]
        # The zygote's objects stay frozen (gc.freeze): a collection in the worker never walks
        # them, so never writes their pages, which stay shared with the zygote and the siblings.
        worker_main.main()
    finally:  # never back into the zygote's loop, whatever happened
        os._exit(1)


def _intermediate(sock: socket.socket, fds: list[int], env: dict[str, str], w: int) -> NoReturn:
    """Fork the worker, tell the zygote its pid through ``w``, exit (the worker is re-parented
    to the core). Whatever fails here (the zygote killed under it: EPIPE) ends in _exit."""
    try:
        me = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, "?")
            os.write(w, msgpack.packb({"error": f"fork: {e.strerror} ({name})"}))
            os._exit(0)
        if pid == 0:
            os.close(w)
            sock.close()
            _child(fds, env, me)
        # Its own group before the core learns its pid (the core signals the group and
        # the keeper watches it); the child does the same, whichever runs first.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        os.write(w, msgpack.packb({"pid": pid}))
    finally:
        os._exit(0)


def _serve_one(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    try:
        env = msgpack.unpackb(data)
        if len(fds) != 4 or not isinstance(env, dict):
            raise ValueError("a request is an environment and 4 fds")
        r, w = os.pipe()
        try:
            inter = os.fork()
        except OSError as e:  # EAGAIN: a pids.max or RLIMIT_NPROC of the zygote's
            os.close(r)
            os.close(w)
            name = errno.errorcode.get(e.errno or 0, "?")
            sock.send(msgpack.packb({"error": f"fork: {e.strerror} ({name})"}))
            return
        if inter == 0:
            os.close(r)
            _intermediate(sock, fds, env, w)
        os.close(w)
        os.waitpid(inter, 0)
        with os.fdopen(r, "rb") as f:
            answer = f.read()
        sock.send(answer or msgpack.packb({"error": "the intermediate died"}))
    except (OSError, ValueError) as e:
        sock.send(msgpack.packb({"error": f"{type(e).__name__}: {e}"}))
    finally:
        for fd in fds:
            os.close(fd)


def main() -> None:
    arm_pdeathsig()
    parent = os.environ.get("SPCTL_PARENT_PID", "")
    if parent.isdigit():
        guard_parent(int(parent), "before the zygote was armed")
    sock = socket.socket(fileno=ZYGOTE_FD)
    os.set_inheritable(ZYGOTE_FD, False)
    gc.freeze()
    # Ready: the core waits for this (with a long deadline: an interpreter's start on a loaded
    # machine) before its first request, whose answer it then waits for only briefly.
    try:
        sock.send(msgpack.packb({"ready": os.getpid()}))
    except OSError:  # the core is gone or gave up on us
        sys.exit(0)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 4)
        except OSError:
            break
        if not data:
            break
        _serve_one(sock, data, fds)
    sys.exit(0)


if __name__ == "__main__":
    main()
