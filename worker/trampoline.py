"""The PDEATHSIG trampoline: every process a worker spawns for its extension starts through it.

Theory of operation. ``PR_SET_PDEATHSIG`` can only be armed by the process itself, and a
plain ``subprocess.Popen`` child of a worker has none: when the worker is SIGKILLed the child
lives on. So the argv from :func:`trampoline_argv` starts a tiny ``python -I -S -c CODE``
that (1) arms PR_SET_PDEATHSIG=SIGKILL, (2) checks ``getppid()`` against the spawner's pid
(carried in argv) — if they differ the spawner died before step 1 and the signal will never
come, so it exits 127 — and (3) ``execvp``\\ s the real command, which keeps the death signal
(it survives execve, except for set-uid binaries). ``-I -S`` skips site and the environment, so
the trampoline costs ~20 ms and needs nothing but the standard library; the exec'd command
inherits the environment untouched.

The kernel sends the death signal when the *thread* that forked the child exits, not the
process. Spawn from a long-lived thread — the worker's event-loop thread — never from
``asyncio.to_thread`` or a short-lived ``threading.Thread``, or the child is killed when that
thread ends.

``python -m worker.trampoline PPID CMD ARGS...`` runs the same code (when ``worker`` is
importable); :func:`trampoline_argv` uses ``-c`` so it works from any interpreter.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["TRAMPOLINE_CODE", "TRAMPOLINE_EXIT", "trampoline_argv"]

TRAMPOLINE_EXIT = 127
"""Exit status of the trampoline when the spawner is already dead or the exec fails."""

# argv: [-c, PPID, CMD, ARGS...]. 1 = PR_SET_PDEATHSIG, 9 = SIGKILL (Linux).
TRAMPOLINE_CODE = """\
import ctypes, os, sys
a = sys.argv[1:]
ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
if len(a) < 2:
    sys.stderr.write("trampoline: usage: PPID CMD [ARGS...]\\n"); os._exit(127)
if os.getppid() != int(a[0]):
    sys.stderr.write("trampoline: parent %s died before %s started\\n" % (a[0], a[1]))
    os._exit(127)
try:
    os.execvp(a[1], a[1:])
except OSError as e:
    sys.stderr.write("trampoline: cannot run %s: %s\\n" % (a[1], e.strerror)); os._exit(127)
"""


def trampoline_argv(
    argv: Sequence[str], python: str = sys.executable, *, parent_pid: int | None = None
) -> list[str]:
    """Wrap ``argv`` so the process it starts dies with its parent (SIGKILL).

    ``parent_pid`` is the pid of the process that will spawn the argv; it defaults to the
    caller's own pid. Spawn it from a long-lived thread (see the module docstring).
    Raises ValueError for an empty argv.
    """
    if not argv:
        raise ValueError("trampoline_argv: empty argv")
    ppid = os.getpid() if parent_pid is None else parent_pid
    return [python, "-I", "-S", "-c", TRAMPOLINE_CODE, str(ppid), *argv]


if __name__ == "__main__":  # pragma: no cover - exercised via -c in the tests
    exec(compile(TRAMPOLINE_CODE, "<trampoline>", "exec"))
