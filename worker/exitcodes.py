"""Exit codes of ``python -m worker``: the supervisor classifies a worker's death by them.

Codes 3–7 are the worker's own verdicts; 1 is a runtime failure of the extension (or of the
shim itself); a negative returncode means a signal killed it. ``EXIT_LOAD_ERROR`` is the one
that should stop a crash loop: restarting cannot fix an extension that fails to import.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CHANNEL_LOST",
    "EXIT_ERROR",
    "EXIT_LOAD_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_USAGE",
    "describe",
]

EXIT_OK = 0
"""Stopped on request (the ``shutdown`` RPC)."""
EXIT_ERROR = 1
"""The extension failed at run time (initialize/start/is_running raised, or it exited 1)."""
EXIT_USAGE = 2
"""Started without the supervisor's environment or without a socket on fd 3."""
EXIT_LOAD_ERROR = 3
"""The extension could not be loaded: import error, no entry point, bad metadata, rlimit."""
EXIT_NOT_RUNNING = 4
"""A daemon's ``is_running()`` returned False."""
EXIT_ORPHANED = 5
"""The supervisor died before the worker could arm PR_SET_PDEATHSIG."""
EXIT_CHANNEL_LOST = 6
"""The supervisor closed the channel (EOF)."""
EXIT_PROTOCOL_ERROR = 7
"""The supervisor sent something the worker could not understand."""

_DESCRIPTIONS = {
    EXIT_OK: "stopped on request",
    EXIT_ERROR: "extension failed",
    EXIT_USAGE: "worker started without the supervisor's environment",
    EXIT_LOAD_ERROR: "extension failed to load",
    EXIT_NOT_RUNNING: "is_running() returned False",
    EXIT_ORPHANED: "supervisor died before the worker was armed",
    EXIT_CHANNEL_LOST: "channel to the supervisor lost",
    EXIT_PROTOCOL_ERROR: "protocol error on the channel",
}


def describe(returncode: int) -> str:
    """Say in words why a worker with this returncode (as ``Popen.returncode``) ended."""
    if returncode < 0:
        import signal  # only the supervisor calls this; keep the shim's imports minimal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return _DESCRIPTIONS.get(returncode, f"exited with status {returncode}")
