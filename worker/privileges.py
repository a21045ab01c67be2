"""The worker's ties to the supervisor's life, and the switch to an entry's ``user:``/``group:``.

Standard library only: :mod:`worker.__main__` uses it before anything else is imported.

Theory of operation. A worker must die with the supervisor: ``PR_SET_PDEATHSIG=SIGKILL`` asks
the kernel to kill it when its parent ends, and the *race guard* covers a parent that died
before the signal was armed (then it never comes): if ``getppid()`` is no longer the
supervisor, the worker exits ``EXIT_ORPHANED`` at once.

Linux clears the parent-death signal whenever a process changes its credentials, so
:func:`drop_privileges` (run by root workers for entries with ``user:``, after the rlimits and
before the extension is imported) arms it again right after ``setuid`` and repeats the race
guard: the supervisor may have died between the two. The order is the one that works: the
supplementary groups go first and the gid before the uid, since both need the privilege that
``setuid`` gives up.
"""

from __future__ import annotations

import os
from typing import NoReturn

from worker.log import say
from worker.protocol import EXIT_ORPHANED, EXIT_USAGE

__all__ = ["arm_pdeathsig", "die", "drop_privileges", "guard_parent"]

PR_SET_PDEATHSIG = 1


def die(code: int, message: str) -> NoReturn:
    """Say why on stderr (the supervisor logs it) and end now, without interpreter shutdown."""
    say(message)
    os._exit(code)


def arm_pdeathsig() -> None:
    """SIGKILL this process when its parent (the supervisor) ends."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        die(EXIT_USAGE, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")


def guard_parent(parent: int, when: str) -> None:
    """The race guard: exit ``EXIT_ORPHANED`` if the parent is no longer ``parent``."""
    if os.getppid() != parent:
        die(EXIT_ORPHANED, f"supervisor (pid {parent}) died {when}")


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups, for good (real, effective and saved
    ids), still tied to the supervisor. Raises OSError when the kernel refuses."""
    parent = os.getppid()  # still the supervisor: the armed signal would have killed us
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    arm_pdeathsig()  # cleared by the credential change
    guard_parent(parent, "while the worker switched to its user")
