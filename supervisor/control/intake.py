"""What the control socket buffers for its clients: bounded per connection, in total, in time.

Theory of operation: the codec buffers the bytes of a frame until it is complete, so a client
that sends most of a large frame and stalls holds that memory in the supervisor. Control
requests are small (a verb and a name; ``spctl call``'s arguments come from a command line),
so a connection may have at most :attr:`IntakeLimits.per_connection` (1 MiB) of an unfinished
frame. The MCP faces (the HTTP front and ``spctl mcp``) forward tool arguments, which may use
the whole 16 MiB frame: a connection that subscribes as a face (``mcp_watch``) gets
:attr:`IntakeLimits.mcp_face`. Across all connections, unfinished frames may hold
:attr:`IntakeLimits.total`; the connection whose bytes would pass it is cut off. A frame must be
whole within :attr:`IntakeLimits.frame_timeout` of its first byte, or its connection is cut off
(a drip of one byte a second does not keep it alive). Once 4 MiB of unfinished frames have
been freed (their connections gone, or the frames complete and the codec's buffers renewed),
glibc is asked to give the memory back to the kernel (:func:`supervisor.control.heap.trim`,
at most once a second): it would otherwise keep it for later allocations, and the RSS would
stay up.

Answers the supervisor owes a client are bounded elsewhere (``Channel(max_unsent=…)``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.control.heap import trim
from worker.channel import Channel
from worker.rpc import MAX_FRAME_DEFAULT

__all__ = ["FRAME_TIMEOUT_ENV", "Intake", "IntakeLimits"]

MiB = 1024 * 1024
FRAME_TIMEOUT_ENV = "SPCTL_CONTROL_FRAME_TIMEOUT"
_SMALL = 64 * 1024  # the codec's initial buffer
_TRIM_AFTER = 4 * MiB  # unfinished frames freed since the last trim: then glibc is asked
_TRIM_DELAY = 0.05  # seconds: connections closing together cost one trim
_TRIM_INTERVAL = 1.0  # seconds between trims at least: a trim walks the whole heap


@dataclass(frozen=True)
class IntakeLimits:
    per_connection: int = MiB
    mcp_face: int = MAX_FRAME_DEFAULT
    total: int = 64 * MiB
    frame_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IntakeLimits:
        """The defaults, with ``SPCTL_CONTROL_FRAME_TIMEOUT`` (seconds > 0) if it is set.

        Raises ValueError for a value that is not a positive number.
        """
        env = os.environ if environ is None else environ
        text = env.get(FRAME_TIMEOUT_ENV, "").strip()
        if not text:
            return cls()
        try:
            timeout = float(text)
        except ValueError:
            timeout = 0.0
        if not timeout > 0:
            raise ValueError(f"{FRAME_TIMEOUT_ENV}={text!r} is not a positive number of seconds")
        return cls(frame_timeout=timeout)


def _size(n: int) -> str:
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"


class Intake:
    """The accounting for every connection of one control socket (on its event loop)."""

    def __init__(self, limits: IntakeLimits | None = None) -> None:
        self.limits = limits or IntakeLimits()
        self.held = 0  # bytes of unfinished frames across all connections
        self._held: dict[Channel, int] = {}
        self._timers: dict[Channel, tuple[int, asyncio.TimerHandle]] = {}
        self._trim: asyncio.TimerHandle | None = None
        self._trimmed_at = -_TRIM_INTERVAL
        self._freed = 0  # bytes of unfinished frames freed since the last trim

    def admit(self, channel: Channel) -> None:
        """A new connection: small requests only until it becomes an MCP face."""
        channel.max_incoming = self.limits.per_connection

    def widen(self, channel: Channel) -> None:
        """The connection is an MCP face (it forwards tool arguments): whole frames."""
        channel.max_incoming = self.limits.mcp_face

    def on_read(self, channel: Channel) -> None:
        """After each read: account the connection's unfinished frame, cut it off when over."""
        now = channel.partial_bytes
        before = self._held.get(channel, 0)
        if now > before and self.held + now - before > self.limits.total:
            channel.abort(
                f"over the control socket's {_size(self.limits.total)} budget for unfinished "
                f"frames ({now} bytes of a frame from this connection)"
            )
            self.release(channel)
            return
        self.held += now - before
        if now:
            self._held[channel] = now
            self._arm(channel)
        else:
            self._held.pop(channel, None)
            self._disarm(channel)
            self._freed_frame(before)

    def release(self, channel: Channel) -> None:
        """The connection is closed: what its unfinished frame held is free again."""
        before = self._held.pop(channel, 0)
        self.held -= before
        self._disarm(channel)
        self._freed_frame(before)

    def _arm(self, channel: Channel) -> None:
        frame = channel.stats[0]  # messages received so far: a new partial frame changes it
        armed = self._timers.get(channel)
        if armed is not None and armed[0] == frame:
            return  # the same frame, still arriving: its deadline stands
        if armed is not None:
            armed[1].cancel()
        timeout = self.limits.frame_timeout
        handle = asyncio.get_running_loop().call_later(timeout, self._expire, channel, frame)
        self._timers[channel] = (frame, handle)

    def _disarm(self, channel: Channel) -> None:
        armed = self._timers.pop(channel, None)
        if armed is not None:
            armed[1].cancel()

    def _expire(self, channel: Channel, frame: int) -> None:
        self._timers.pop(channel, None)
        if channel.closed or channel.stats[0] != frame or not channel.partial_bytes:
            return
        channel.abort(
            f"partial frame stalled: {channel.partial_bytes} bytes, not complete "
            f"{self.limits.frame_timeout:g} s after its first byte"
        )
        self.release(channel)

    def _freed_frame(self, size: int) -> None:
        if size <= _SMALL:
            return  # fits the codec's initial buffer: nothing grew for it
        self._freed += size
        if self._freed < _TRIM_AFTER or self._trim is not None:
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + _TRIM_DELAY, self._trimmed_at + _TRIM_INTERVAL)
        self._trim = loop.call_at(at, self._trimmed)

    def _trimmed(self) -> None:
        self._trim = None
        self._trimmed_at = asyncio.get_running_loop().time()
        self._freed = 0
        trim()

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
