"""How a worker ended, classified and described for people.

An :class:`Exit` holds the raw facts (exit status or signal) plus what *we* did or saw
(``cause``: "health check timeout", "memory limit … exceeded") and whether we asked it to stop.
``describe()`` turns that into the reason recorded with the state transition, cause first,
because "killed by SIGKILL" alone says nothing when it was our own watchdog that killed it.

Worker exit codes (defined once, in :mod:`worker.protocol`; the worker side never imports
this module):

====  =======================================================================
  0   ok: the worker was asked to stop, or the extension finished on its own
  2   usage: the worker was started without the supervisor's environment or fd 3
  3   load error: the extension could not be imported/configured (stops crash loops)
  4   a daemon extension reports it is not running (``is_running()`` false)
  5   orphaned at start: the supervisor was already gone when the worker came up
  6   channel lost: the socketpair to the supervisor closed under the worker
  7   protocol error: the supervisor sent something the worker could not accept
====  =======================================================================
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from worker.protocol import (
    EXIT_CHANNEL_LOST,
    EXIT_LOAD_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_PROTOCOL_ERROR,
    EXIT_USAGE,
)
from worker.protocol import EXIT_MEANINGS as _CODE_MEANINGS

__all__ = [
    "CRASH_REASONS",
    "EXIT_CHANNEL_LOST",
    "EXIT_LOAD_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_USAGE",
    "Exit",
    "crash_reason",
    "describe",
    "from_returncode",
    "from_wait_status",
    "from_waitid",
]

# Signals whose default action dumps core: worth a hint that a core file may exist.
_CORE_SIGNALS = frozenset(
    {
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGQUIT,
        signal.SIGSEGV,
        signal.SIGSYS,
        signal.SIGTRAP,
        signal.SIGXCPU,
        signal.SIGXFSZ,
    }
)


@dataclass(frozen=True)
class Exit:
    """How a worker ended.

    ``code`` is the exit status, or None if a signal killed it (then ``signal`` is set).
    ``cause`` is what we did or saw (e.g. "start timeout (30s)"); it leads the description.
    ``requested`` is true when we asked it to stop (stop, restart, shutdown).
    ``core_dumped`` is what the kernel said about a core dump (waitpid/waitid tell; a
    returncode does not: None, unknown).
    ``load_error``: the worker *reported* (its ``load_error`` notification) that the extension
    could not be loaded; retrying will rarely help. Never inferred from the status: an
    extension may exit with 3 at run time too.
    ``detail`` is what the worker said went wrong (the message of its ``load_error`` or
    ``error``); its first line, shortened, ends the description.
    """

    code: int | None
    signal: int | None
    cause: str | None = None
    requested: bool = False
    core_dumped: bool | None = None

    load_error: bool = False
    detail: str | None = None
    cause_kind: str | None = None  # what ``cause`` was, for counting: "limit" or "health"

    @property
    def clean(self) -> bool:
        """Exited with status 0 and nothing of ours to blame."""
        return self.code == EXIT_OK and self.cause is None


CRASH_REASONS = ("exit", "signal", "limit", "health", "load")
"""The reasons a crash is counted under (``spctl_extension_crashes_total{reason}``)."""


def crash_reason(exit: Exit) -> str:
    """One of :data:`CRASH_REASONS`: the extension could not load; we killed it for a limit
    or its health (a start timeout included); else a signal killed it, or it exited."""
    if exit.load_error:
        return "load"
    if exit.cause_kind in ("limit", "health"):
        return exit.cause_kind
    return "signal" if exit.signal is not None else "exit"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _plain(exit: Exit) -> str | None:
    """The bare facts, no interpretation: "exited with status 1", "killed by SIGKILL"."""
    if exit.signal is not None:
        dumped = ", core dumped" if exit.core_dumped else ""
        return f"killed by {_signal_name(exit.signal)}{dumped}"
    if exit.code is not None:
        return f"exited with status {exit.code}"
    return None  # never ran, or someone else reaped it


DETAIL_CHARS = 100  # of the worker's own message, in a one-line reason


def describe(exit: Exit) -> str:
    """A one-line reason for people and logs.

    With a ``cause`` the cause leads and the facts follow in parentheses:
    "health check timeout (killed by SIGKILL)". Otherwise the facts are interpreted:
    "load error (exit 3)" (reported by the worker), "killed by SIGKILL: perhaps out of
    memory?", "killed by SIGSEGV (core dumped?)". The worker's ``detail`` follows after a
    colon: "load error (exit 3): ModuleNotFoundError: No module named 'x'".
    """
    text = _interpret(exit)
    if not exit.detail:
        return text
    line = exit.detail.strip().splitlines()[0] if exit.detail.strip() else ""
    if len(line) > DETAIL_CHARS:
        line = line[: DETAIL_CHARS - 1] + "…"
    return f"{text}: {line}" if line else text


def _interpret(exit: Exit) -> str:
    facts = _plain(exit)
    if exit.cause is not None:
        return exit.cause if facts is None else f"{exit.cause} ({facts})"
    if exit.load_error:
        if exit.code is not None:
            return f"load error (exit {exit.code})"
        return "load error" if facts is None else f"load error ({facts})"
    if exit.signal is not None:
        name = _signal_name(exit.signal)
        if exit.core_dumped:
            return f"killed by {name} (core dumped)"
        if exit.core_dumped is None and exit.signal in _CORE_SIGNALS:
            return f"killed by {name} (core dumped?)"
        if exit.signal == signal.SIGKILL and not exit.requested:
            # Nobody of ours sent it (no cause, not requested): the kernel's OOM killer is the
            # usual suspect (gunicorn's arbiter gives the same hint).
            return f"killed by {name}: perhaps out of memory?"
        return f"killed by {name}"
    if exit.code == EXIT_OK:
        return "exited cleanly"
    if exit.code in _CODE_MEANINGS and exit.code != EXIT_LOAD_ERROR:  # 3: only when reported
        return f"{_CODE_MEANINGS[exit.code]} (exit {exit.code})"
    return facts or "ended (status unknown)"


def from_wait_status(status: int, *, cause: str | None = None, requested: bool = False) -> Exit:
    """Classify an ``os.waitpid()`` status.

    Raises:
        ValueError: the status reports a stopped/continued child, not an ended one.
    """
    if os.WIFEXITED(status):
        return Exit(os.WEXITSTATUS(status), None, cause, requested)
    if os.WIFSIGNALED(status):
        return Exit(None, os.WTERMSIG(status), cause, requested, os.WCOREDUMP(status))
    raise ValueError(f"wait status {status:#x} does not describe an ended process")


def from_waitid(
    si_code: int, si_status: int, *, cause: str | None = None, requested: bool = False
) -> Exit:
    """Classify an ``os.waitid()`` result (``si_code``, ``si_status``).

    Raises:
        ValueError: ``si_code`` is not CLD_EXITED, CLD_KILLED or CLD_DUMPED.
    """
    if si_code == os.CLD_EXITED:
        return Exit(si_status, None, cause, requested)
    if si_code == os.CLD_KILLED:
        return Exit(None, si_status, cause, requested, core_dumped=False)
    if si_code == os.CLD_DUMPED:
        return Exit(None, si_status, cause, requested, core_dumped=True)
    raise ValueError(f"si_code {si_code} does not describe an ended process")


def from_returncode(returncode: int, *, cause: str | None = None, requested: bool = False) -> Exit:
    """Classify a ``subprocess``/anyio ``returncode`` (negative: killed by that signal).

    A returncode cannot tell whether a core was dumped (``core_dumped`` stays None).
    """
    if returncode < 0:
        return Exit(None, -returncode, cause, requested)
    return Exit(returncode, None, cause, requested)
