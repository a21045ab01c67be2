"""The last lines a worker wrote (for ``spctl logs``) and who follows them (``logs -f``).

The pipe line splitter is ``output.py``; this is where its lines land, per extension: a
bounded ring, each line logged (``extension=`` bound) and pushed to every subscriber.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["OUTPUT_RING", "Line", "OutputRing"]

OUTPUT_RING = 1000  # lines of worker output kept per extension for `spctl logs`

Line = tuple[float, str, str]
"""(wall-clock time, stream, text); stream is stdout, stderr or spctl: spctl's own note about
the worker — ``[N lines dropped …]`` or how it was started (``worker exec'd, not forked: …``)."""


class OutputRing:
    def __init__(self, log: Any, size: int = OUTPUT_RING) -> None:
        self.lines: deque[Line] = deque(maxlen=size)
        self.subscribers: set[Callable[[Line], None]] = set()
        self._log = log

    def add(self, stream: str, line: str) -> None:
        entry = (time.time(), stream, line)
        self.lines.append(entry)
        if stream == "spctl":
            dropped = line.startswith("[") and "dropped" in line
            self._log.warning("lines dropped" if dropped else "worker note", detail=line)
        else:
            self._log.info("output", stream=stream, line=line)
        for push in list(self.subscribers):
            push(entry)
