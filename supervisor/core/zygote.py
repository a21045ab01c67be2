"""The core's side of the zygote (:mod:`worker.zygote`): start it, ask it for a worker, and
restart it when it died (opt-in: ``SPCTL_ZYGOTE=on``).

Every failure here is a fallback, never a failed start: :func:`fork_worker` returns None (and
says why in :attr:`Zygote.last_error`) and the caller exec's the worker as without a zygote.
A dead zygote is restarted on the next request, no sooner than :data:`BACKOFF` after the last
start. The request is short and made from the loop thread (like posix_spawn): the zygote's
answer comes once the worker is already our child (see :mod:`worker.zygote`).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

__all__ = ["BACKOFF", "Zygote", "enabled"]

BACKOFF = 1.0
REPLY_TIMEOUT = 2.0


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """``SPCTL_ZYGOTE=on`` turns it on; it is off by default."""
    return environ.get("SPCTL_ZYGOTE", "off").strip().lower() in ("on", "1", "yes", "true")


class Zygote:
    """One zygote of ``python`` (the core's own interpreter by default)."""

    def __init__(
        self,
        python: str = sys.executable,
        *,
        starting: Callable[[], None] = lambda: None,
        started: Callable[[int | None], None] = lambda pid: None,
        ended: Callable[[int], None] = lambda pid: None,
    ) -> None:
        # starting/started/ended: supervisor.core.process's helper_* (the orphan reaper's
        # bookkeeping: it must never reap the zygote or a worker whose pid is not known yet)
        self.python = python
        self._starting, self._started, self._ended = starting, started, ended
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.started_at = -BACKOFF
        self.starts = 0
        self.last_error = ""

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

    def start(self) -> bool:
        """Start the zygote unless it runs or was started less than BACKOFF ago."""
        if self._alive():
            return True
        now = time.monotonic()
        if now - self.started_at < BACKOFF:
            return False
        self.started_at = now
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # No secret of the core's environment: a forked worker's /proc/PID/environ shows
        # the zygote's (os.environ is replaced in the child, the initial block is inherited).
        keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["SPCTL_PARENT_PID"] = str(os.getpid())
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
        self.pid, self.sock = pid, ours
        self.starts += 1
        return True

    def fork_worker(self, env: dict[str, str], fds: list[int]) -> int | None:
        """A worker forked with ``env`` and ``fds`` (stdin, stdout, stderr, channel) at 0–3;
        its pid (already our child), or None: exec it instead (why: :attr:`last_error`)."""
        if not self.start() or self.sock is None:
            return None
        pid: int | None = None
        self._starting()  # the orphan reaper must not take it before we know its pid
        try:
            self.sock.settimeout(REPLY_TIMEOUT)
            socket.send_fds(self.sock, [msgpack.packb(env)], fds)
            reply = self.sock.recv(65536)
            if not reply:
                raise OSError("the zygote closed its socket")
            answer = msgpack.unpackb(reply)
            if "pid" not in answer:
                self.last_error = f"zygote: {answer.get('error', 'no pid')}"
                return None
            pid = int(answer["pid"])
            self.last_error = ""
            return pid
        except (OSError, ValueError, TypeError) as e:
            self.last_error = f"zygote request failed: {e}"
            self.close()  # a late answer must never be read as the next request's
            return None
        finally:
            self._started(pid)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            import signal

            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._ended(self.pid)
            self.pid = None
