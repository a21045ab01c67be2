"""Worker stdout/stderr, line by line.

``LineSplitter`` is pure: bytes in, complete lines out, a partial line kept until the next
chunk or EOF, over-long lines cut (and marked) so a worker without newlines cannot make us
buffer without bound. Non-UTF-8 bytes survive as backslash escapes. ``PipeReader`` is the
asyncio protocol that feeds it from a pipe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["MAX_LINE", "LineSplitter", "PipeReader"]

MAX_LINE = 64 * 1024


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    @staticmethod
    def _text(raw: bytes | bytearray) -> str:
        return bytes(raw).rstrip(b"\r").decode("utf-8", errors="backslashreplace")

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        start = 0
        buf = self._buf
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0 or nl - start > self.max_line:
                break
            lines.append(self._text(buf[start:nl]))
            start = nl + 1
        while len(buf) - start > self.max_line:
            lines.append(self._text(buf[start : start + self.max_line]) + " [line cut]")
            start += self.max_line
            nl = buf.find(b"\n", start)
            while nl >= 0 and nl - start <= self.max_line:
                lines.append(self._text(buf[start:nl]))
                start = nl + 1
                nl = buf.find(b"\n", start)
        del buf[:start]
        return lines

    def flush(self) -> list[str]:
        """At EOF: the partial last line, if any, is kept."""
        if not self._buf:
            return []
        line = self._text(self._buf)
        self._buf.clear()
        return [line]


class PipeReader(asyncio.Protocol):
    """Reads one pipe and calls ``on_line(line)`` per line; ``done`` resolves at EOF."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._split = LineSplitter()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        for line in self._split.feed(data):
            self._on_line(line)

    def eof_received(self) -> bool:
        for line in self._split.flush():
            self._on_line(line)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
