"""uvicorn's server without its 10 Hz tick: an idle front sleeps until something happens.

``uvicorn.Server.main_loop`` wakes every 100 ms, for ever, to see whether it should exit and to
rewrite the ``Date`` header once a second: ten wakeups a second of an idle front (measured in
``tests/bench/bench_idle.py``). :class:`QuietServer` waits instead on an event that is set the
moment ``should_exit`` becomes true — from a task, another thread or uvicorn's own signal
handler (``call_soon_threadsafe``, which wakes the loop's selector) — and the ``Date`` header
is brought up to date when a request arrives (:func:`refresh_date`, called by the front's
protocol, :mod:`supervisor.mcp.http_conn`), at most once a second: the same header, read from
the same place, without a timer.

Features of ``main_loop`` the front does not use (``limit_max_requests``,
``callback_notify``) make it fall back to uvicorn's own loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate

import uvicorn
from uvicorn.server import ServerState

__all__ = ["QuietServer", "refresh_date"]

_last_second = -1


def refresh_date(state: ServerState) -> None:
    """Put the current second in ``state``'s ``Date`` header (if it has one); cheap when it is
    already current: one clock read."""
    global _last_second
    now = time.time()
    second = int(now)
    if second == _last_second:
        return
    headers = state.default_headers
    if not any(name == b"date" for name, _ in headers):
        return
    _last_second = second
    date = formatdate(now, usegmt=True).encode()
    state.default_headers = [(b"date", date)] + [h for h in headers if h[0] != b"date"]


class QuietServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose main loop sleeps until ``should_exit`` is set."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._should_exit = False
        self._wake: Callable[[], None] | None = None
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._wake is not None:
            self._wake()

    async def main_loop(self) -> None:
        if self.config.limit_max_requests is not None or self.config.callback_notify is not None:
            await super().main_loop()
            return
        loop = asyncio.get_running_loop()
        exiting = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(exiting.set)

        self._wake = wake
        try:
            await self.on_tick(0)  # the default headers, Date among them
            global _last_second
            _last_second = int(time.time())
            while not self.should_exit:
                await exiting.wait()
                exiting.clear()
        finally:
            self._wake = None
