"""The worker's one voice: ``spctl-worker: <message>`` lines on stderr.

The supervisor logs the worker's stderr (``spctl logs``), and operators and tests match these
lines, so their text is part of the interface. One ``write`` per line: lines from threads do not
interleave. Standard library only: :mod:`worker.__main__` uses it before anything is armed.
"""

from __future__ import annotations

import sys

__all__ = ["PREFIX", "say"]

PREFIX = "spctl-worker: "


def say(message: str) -> None:
    """Write one ``spctl-worker: …`` line to stderr, flushed."""
    sys.stderr.write(f"{PREFIX}{message}\n")
    sys.stderr.flush()
