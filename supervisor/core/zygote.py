"""The core's side of a zygote (:mod:`worker.zygote`): start it, ask it for a worker, and
restart it when it died (on by default; ``SPCTL_ZYGOTE=off`` or ``spctl serve --no-zygote``
turns it off). One object per interpreter (:mod:`supervisor.core.process` says which exist);
one of another interpreter than spctl's is started with what its workers' environment sets
that changes sys.path (``extra``: how that interpreter finds the worker package).

Every failure here is a fallback, never a failed start: :meth:`Zygote.fork` returns None (and
says why in :attr:`Zygote.last_error`) and the caller exec's the worker as without a zygote.
A dead zygote is restarted on the next request, no sooner than :data:`BACKOFF` after the last
start; one whose interpreter was deleted or replaced since it started (an upgrade) is killed
and restarted on the new one. A new zygote says it is ready (one message, once it has imported
everything) before its first request is sent: its own start, which a loaded machine can
stretch past a second, is waited for with :data:`BOOT_TIMEOUT`, and each request's answer with
the much shorter :data:`REPLY_TIMEOUT`. The zygote is started from the loop thread (its
parent-death signal is per thread, like a worker's); a request is awaited, never blocking the
loop: its answer comes once the worker is already our child (see :mod:`worker.zygote`), and
requests are made one at a time (the zygote answers them in order).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

__all__ = [
    "BACKOFF",
    "BOOT_TIMEOUT",
    "REPLY_TIMEOUT",
    "Zygote",
    "enabled",
    "switch_problem",
    "sys_path_env",
]

BACKOFF = 1.0
BOOT_TIMEOUT = 15.0
"""Seconds a new zygote may take to say it is ready (its interpreter's start and imports:
0.1 s of CPU, but over 1 s of wall time on a loaded 2-core machine)."""
REPLY_TIMEOUT = 2.0
"""Seconds a ready zygote may take to answer a request (a fork: milliseconds)."""
ENV_ROOM = 16384  # bytes of environment a forked worker's /proc/PID/environ can show


_ON = ("on", "1", "yes", "true", "")
_OFF = ("off", "0", "no", "false")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """On unless ``SPCTL_ZYGOTE=off`` (or 0, no, false)."""
    return environ.get("SPCTL_ZYGOTE", "on").strip().lower() not in _OFF


def switch_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why ``SPCTL_ZYGOTE`` is not a value :func:`enabled` understands (serve refuses it)."""
    value = environ.get("SPCTL_ZYGOTE")
    if value is None or value.strip().lower() in _ON + _OFF:
        return None
    return f"SPCTL_ZYGOTE={value!r} is not on or off"


def _identity(path: str) -> tuple[int, int, int] | None:
    """What says the file at ``path`` is still the same one: device, inode, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


# PYTHON* variables that change sys.path: never in the zygote's start (an exec'd worker does
# not inherit them from the core either); an entry's own makes its worker exec'd.
_SYS_PATH = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "PYTHONNOUSERSITE",
        "PYTHONPLATLIBDIR",
        "PYTHONSTARTUP",
        "PYTHONEXECUTABLE",
    }
)


def sys_path_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What of ``environ`` changes sys.path (``PYTHONPATH``…)."""
    return {k: v for k, v in environ.items() if k in _SYS_PATH}


def _interpreter_reads(name: str) -> bool:
    """Read by an interpreter when it starts (its encodings, time zone, sys.path, flags)."""
    return name in ("LANG", "LANGUAGE", "TZ") or name.startswith(("LC_", "PYTHON"))


def _start_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a zygote started now would read of its environment."""
    return {k: v for k, v in environ.items() if _interpreter_reads(k) and k not in _SYS_PATH}


class Zygote:
    """One zygote of ``python`` (the core's own interpreter by default)."""

    def __init__(
        self,
        python: str = sys.executable,
        *,
        extra: Mapping[str, str] | None = None,
        starting: Callable[[], None] = lambda: None,
        started: Callable[[int | None], None] = lambda pid: None,
        ended: Callable[[int], None] = lambda pid: None,
    ) -> None:
        # starting/started/ended: supervisor.core.process's helper_* (the orphan reaper's
        # bookkeeping: it must never reap the zygote or a worker whose pid is not known yet)
        self.python = python
        # what its workers' environment sets that changes sys.path (PYTHONPATH…: how another
        # interpreter finds the worker package), given to the zygote too: it must import it
        self.extra = dict(extra or {})
        self._starting, self._started, self._ended = starting, started, ended
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.started_at = -BACKOFF
        self.starts = 0
        self.forks = 0
        self.last_error = ""
        self._binary: tuple[int, int, int] | None = None  # the interpreter it was started from
        self._ready = False  # the running zygote said it is ready
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._start_env: dict[str, str] = {}  # what of its start's environment it read

    def unforkable(self, env: Mapping[str, str]) -> str | None:
        """Why a worker with ``env`` cannot be forked from this zygote: its environment sets
        what an interpreter reads when it starts (``PYTHONPATH``, ``PYTHONHASHSEED``…, a
        locale or ``TZ``) to something else than the zygote started with, which a fork would
        ignore. None: it can."""
        started = (
            self._start_env if self.pid is not None else {**_start_env(os.environ), **self.extra}
        )
        python = sorted(k for k, v in env.items() if k.startswith("PYTHON") and started.get(k) != v)
        if python:
            return f"its environment sets {', '.join(python)} (read when an interpreter starts)"
        locale = {k: v for k, v in env.items() if _interpreter_reads(k) and k[:6] != "PYTHON"}
        ours = {k: v for k, v in started.items() if k[:6] != "PYTHON"}
        if locale != ours:
            names = ", ".join(sorted({k for k, _ in set(locale.items()) ^ set(ours.items())}))
            return f"its locale differs from the zygote's ({names})"
        return None

    def _alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            got, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            got = self.pid
        if got == 0:
            return True
        self._ended(self.pid)
        self.last_error = f"zygote (pid {self.pid}) died"
        self.pid = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return False

    def _replaced(self) -> str | None:
        """Why the running zygote's interpreter is not ``python`` any more, if it is not."""
        if self.pid is None:
            return None
        try:
            deleted = os.readlink(f"/proc/{self.pid}/exe").endswith(" (deleted)")
        except OSError:
            deleted = False
        now = _identity(self.python)
        if deleted or now is None:
            return f"the interpreter {self.python} was deleted under the zygote (pid {self.pid})"
        if now != self._binary:
            return f"the interpreter {self.python} was replaced under the zygote (pid {self.pid})"
        return None

    def start(self) -> bool:
        """Start the zygote unless it runs or was started less than BACKOFF ago. Call it from
        the loop thread (the zygote's parent-death signal is armed against that thread)."""
        replaced = self._replaced() if self._alive() else None
        if replaced is not None:
            self.close()
            self.last_error = replaced  # this worker is exec'd; the next request restarts it
            return False
        if self.pid is not None:
            return True
        now = time.monotonic()
        if now - self.started_at < BACKOFF:
            return False
        self.started_at = now
        binary = _identity(self.python)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # Only what an interpreter reads when it starts (PATH, the locale, the core's PYTHON*
        # flags but none that changes sys.path: an exec'd worker gets none of those), so no
        # secret of the core's: a forked worker's /proc/PID/environ shows this block.
        env = {k: v for k, v in os.environ.items() if k == "PATH" or _interpreter_reads(k)}
        env = {k: v for k, v in env.items() if k not in _SYS_PATH}
        env.update(self.extra)
        env["SPCTL_PARENT_PID"] = str(os.getpid())
        # Room in its environment block, where each forked worker writes its own environment
        # (so that /proc/PID/environ shows it, as an exec'd worker's; worker.zygote._own_block)
        env["SPCTL_ZYGOTE_ROOM"] = "." * ENV_ROOM
        pid = None
        self._starting()
        try:
            pid = os.posix_spawn(
                self.python,
                [self.python, "-P", "-m", "worker.zygote"],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setpgroup=0,
            )
        except OSError as e:
            self.last_error = f"cannot start the zygote: {e.strerror}"
            ours.close()
            return False
        finally:
            self._started(pid)
            theirs.close()
            os.close(null)
        ours.setblocking(False)
        self.pid, self.sock, self._binary, self._ready = pid, ours, binary, False
        self._start_env = {**_start_env(env), **self.extra}
        self.starts += 1
        return True

    async def fork(self, env: dict[str, str], fds: list[int]) -> int | None:
        """A worker forked with ``env`` and ``fds`` (stdin, stdout, stderr, channel) at 0–3;
        its pid (already our child), or None: exec it instead (why: :attr:`last_error`).

        A request that failed may still have forked a worker (the zygote was killed or out of
        step after its fork): the caller must not reuse ``fds`` for the exec, so that such a
        worker finds its channel closed and exits."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:  # a lock is bound to one loop
            self._lock = (loop, asyncio.Lock())
        async with self._lock[1]:  # one request at a time: answers come in order
            if not self.start() or self.sock is None:
                return None
            sock = self.sock
            if not self._ready and not await self._await_ready(loop, sock):
                return None
            pid: int | None = None
            self._starting()  # the orphan reaper must not take it before we know its pid
            try:
                socket.send_fds(sock, [msgpack.packb(env)], fds)
                async with asyncio.timeout(REPLY_TIMEOUT):
                    reply = await loop.sock_recv(sock, 65536)
                if not reply:
                    raise OSError("the zygote closed its socket")
                answer = msgpack.unpackb(reply)
                if "pid" not in answer:
                    self.last_error = f"zygote: {answer.get('error', 'no pid')}"
                    return None
                pid = int(answer["pid"])
                self.last_error = ""
                self.forks += 1
                return pid
            except TimeoutError:
                self.last_error = f"zygote request failed: no answer within {REPLY_TIMEOUT:g} s"
                self.close()  # a late answer must never be read as the next request's
                return None
            except (OSError, ValueError, TypeError) as e:
                self.last_error = f"zygote request failed: {e}"
                self.close()
                return None
            except BaseException:  # cancelled while waiting: its answer would come too late
                self.last_error = "zygote request cancelled"
                self.close()
                raise
            finally:
                self._started(pid)

    async def _await_ready(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
        """Wait for a new zygote's ``{"ready": pid}``; False (and closed): exec instead."""
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                hello = await loop.sock_recv(sock, 65536)
            if not hello:
                raise OSError("the zygote closed its socket before it was ready")
            said = msgpack.unpackb(hello)
            if not isinstance(said, dict) or said.get("ready") != self.pid:
                raise ValueError(f"the zygote's first message is not its ready: {said!r:.80}")
        except TimeoutError:
            self.last_error = f"the zygote was not ready within {BOOT_TIMEOUT:g} s"
        except (OSError, ValueError, TypeError) as e:
            self.last_error = f"zygote start failed: {e}"
        except BaseException:  # cancelled: the next request starts afresh
            self.last_error = "zygote start cancelled"
            self.close()
            raise
        else:
            self._ready = True
            return True
        self.close()
        return False

    def status(self) -> dict[str, Any]:
        """For ``spctl status --json`` (``supervisor.zygote``)."""
        return {
            "python": self.python,
            "pid": self.pid if self._alive() else None,
            "starts": self.starts,
            "forks": self.forks,
            "last_error": self.last_error or None,
        }

    def close(self) -> None:
        """Kill the zygote (its workers are not its children: none of them dies)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._ended(self.pid)
            self.pid = None
