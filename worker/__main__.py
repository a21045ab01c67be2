"""Bootstrap of ``python -m worker``: the process that hosts one extension.

The supervisor starts it with the child end of a socketpair as fd 3, stdout/stderr as pipes,
its own process group, and ``SPCTL_PARENT_PID``/``SPCTL_EXTENSION`` in the environment. The
first acts, before anything but the standard library is imported:

1. arm ``PR_SET_PDEATHSIG=SIGKILL``, so the worker dies with the supervisor;
2. the race guard: if the parent is no longer the supervisor, it died before step 1 and the
   signal will never come → exit ``EXIT_ORPHANED`` (both in :mod:`worker.privileges`, which
   does them again after switching to an entry's ``user:``);
3. move the channel to fd 3 if ``SPCTL_CHANNEL_FD`` names another number (``pass_fds`` keeps
   numbers); drop ``SPCTL_*`` from the environment (extension subprocesses must not inherit
   them) but ``SPCTL_LINEAGE``, the mark by which the supervisor knows the processes the
   extension starts, even after they left its process group and session; make fd 3
   close-on-exec (a grandchild holding it would hide the worker's death from the supervisor)
   and make stdout/stderr line-buffered (``print()`` goes to the pipes, never fd 3);
4. hand over to :mod:`worker.host`, which only then imports asyncio and msgpack.
"""

from __future__ import annotations

import os
import stat
import sys

from worker.privileges import arm_pdeathsig, die, guard_parent
from worker.protocol import EXIT_USAGE

CHANNEL_FD = 3


def _move_channel(number: str) -> None:
    """Put the channel at fd 3 when the spawner could only pass it at another number.

    ``subprocess``'s ``pass_fds`` keeps an fd's number, so a supervisor that spawns with
    it names the number in ``SPCTL_CHANNEL_FD``; the fixed fd 3 is the default.
    """
    if not number:
        return
    if not number.isdigit() or int(number) < 3:
        die(EXIT_USAGE, f"SPCTL_CHANNEL_FD={number!r} is not a descriptor number >= 3")
    fd = int(number)
    if fd != CHANNEL_FD:
        try:
            os.dup2(fd, CHANNEL_FD)
            os.close(fd)
        except OSError as e:
            die(EXIT_USAGE, f"SPCTL_CHANNEL_FD={fd}: {e.strerror}")


def main() -> None:
    arm_pdeathsig()
    parent = os.environ.get("SPCTL_PARENT_PID", "")
    if not parent.isdigit():
        die(EXIT_USAGE, "SPCTL_PARENT_PID is not set: python -m worker is started by spctl")
    guard_parent(int(parent), "before the worker was armed")
    _move_channel(os.environ.get("SPCTL_CHANNEL_FD", ""))
    for key in [k for k in os.environ if k.startswith("SPCTL_") and k != "SPCTL_LINEAGE"]:
        del os.environ[key]
    try:
        is_socket = stat.S_ISSOCK(os.fstat(CHANNEL_FD).st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        die(EXIT_USAGE, f"fd {CHANNEL_FD} is not the supervisor's socket")
    os.set_inheritable(CHANNEL_FD, False)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    import socket

    from worker.host import run

    run(socket.socket(fileno=CHANNEL_FD))


if __name__ == "__main__":
    main()
