"""Worker stdout/stderr, line by line.

``LineSplitter`` is pure: bytes in, complete lines out, a partial line kept until the next
chunk or EOF, over-long lines cut (and marked) so a worker without newlines cannot make us
buffer without bound. Non-UTF-8 bytes and control characters (but tab) survive as backslash
escapes. ``PipeReader`` is the asyncio protocol that feeds it from a pipe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from supervisor.rules.text import safe

__all__ = ["MAX_LINE", "LineSplitter", "PipeReader"]

MAX_LINE = 64 * 1024


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    @staticmethod
    def _text(raw: bytes | bytearray) -> str:
        text = bytes(raw).rstrip(b"\r").decode("utf-8", errors="backslashreplace")
        return safe(text)

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
    """Reads one pipe and calls ``on_line(line)`` per line; ``done`` resolves at EOF.

    A worker may print far faster than anyone can log (50 MB/s is easy). Reading stays
    cheap whatever the rate: within each one-second window at most ``max_bytes`` and
    ``max_lines`` are split into lines and passed on; the rest is read and dropped (never
    left in the pipe, so the worker is not blocked and its health pings are not delayed),
    resynchronising at the next newline. ``on_drop(lines, bytes)`` reports what was dropped
    once per window.
    """

    def __init__(
        self,
        on_line: Callable[[str], None],
        *,
        max_bytes: int = 256 * 1024,
        max_lines: int = 2000,
        on_drop: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._on_line = on_line
        self._on_drop = on_drop
        self._clock = clock or loop.time
        self._split = LineSplitter()
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._window = self._clock()
        self._bytes = 0
        self._lines = 0
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._resync = False
        self.done: asyncio.Future[None] = loop.create_future()

    def _roll(self) -> None:
        now = self._clock()
        if now - self._window >= 1.0:
            self._report()
            self._window = now
            self._bytes = self._lines = 0

    def _report(self) -> None:
        if self._dropped_bytes and self._on_drop is not None:
            self._on_drop(self._dropped_lines, self._dropped_bytes)
        self._dropped_lines = self._dropped_bytes = 0

    def data_received(self, data: bytes) -> None:
        self._roll()
        if self._bytes >= self._max_bytes or self._lines >= self._max_lines:
            self._dropped_bytes += sum(len(x) for x in self._split.flush())  # half a line
            self._dropped_bytes += len(data)
            self._dropped_lines += data.count(b"\n")
            self._resync = not data.endswith(b"\n")  # mid-line: skip to the next newline
            return
        if self._resync:
            nl = data.find(b"\n")
            if nl < 0:
                self._dropped_bytes += len(data)
                return
            self._dropped_bytes += nl + 1
            self._dropped_lines += 1
            data = data[nl + 1 :]
            self._resync = False
        self._bytes += len(data)
        for line in self._split.feed(data):
            self._lines += 1
            self._on_line(line)

    def eof_received(self) -> bool:
        for line in self._split.flush():
            self._on_line(line)
        self._report()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
