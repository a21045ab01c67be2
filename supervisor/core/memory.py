"""Giving freed memory back to the system after a worker's incarnation is gone.

Each incarnation costs the core buffers (its channel's reads, its output pipes, the boot spec,
the catalog it sent); Python frees them when the worker is gone, but glibc keeps freed heap
pages resident, so a crash-looping extension grew the core's RSS ≈ 19 kB per crash, linearly
(the soak: +5.8 MiB over 300 crashes and 3,000 calls; ``malloc_trim`` gave 85 % of it back).
:func:`trim_soon` asks for one ``malloc_trim(0)`` — at most one per :data:`INTERVAL`, coalesced,
and only after something was freed, so an idle supervisor does no work at all. Without glibc
(musl) it does nothing (:mod:`supervisor.control.heap`).
"""

from __future__ import annotations

import asyncio

from supervisor.control.heap import trim

__all__ = ["INTERVAL", "trim_soon"]

INTERVAL = 2.0  # seconds between trims at most (a trim of a 40 MB heap takes ~1 ms)

_pending: asyncio.TimerHandle | None = None
_last = float("-inf")


def trim_soon() -> None:
    """Trim once the current burst of retirements is over (on the running loop)."""
    global _pending
    if _pending is not None:
        return
    loop = asyncio.get_running_loop()
    _pending = loop.call_later(max(0.0, _last + INTERVAL - loop.time()), _run, loop)


def _run(loop: asyncio.AbstractEventLoop) -> None:
    global _pending, _last
    _pending, _last = None, loop.time()
    trim()
