"""The front's HTTP connections: uvicorn's httptools (the default) and h11 protocols with a
header-read timeout and a cap on connections.

Theory of operation: uvicorn closes a kept-alive connection that stays silent for
``timeout_keep_alive`` after a response, but it has no timer while a request's head is being
read: a client that opens a connection and drips its headers a byte at a time (or sends
nothing) holds a socket and a protocol object for ever, and a few thousand of them exhaust the
process's file descriptors. :func:`limited_protocol` makes the subclass uvicorn is given
(``Config(http=…)``), of either parser (``--http``: what differs is only how each says where a
request's head and body start and end):

- **header timeout**: a new connection, and a kept-alive one from the first byte of its next
  request, must deliver the whole request head within ``header_timeout`` seconds; otherwise it
  is answered ``408`` and closed. Its body, if any, then has as long again (a body dripped
  byte by byte would otherwise hold the connection, and a slot under the cap, for ever); a
  late body closes the connection. The gap between requests is uvicorn's keep-alive timeout,
  which also closes a connection that is only idle.
- **connection cap**: while ``max_connections`` connections are open, a new one is still read,
  but its request is answered ``503`` (a JSON-RPC error saying so, ``Retry-After: 1``) and the
  connection closed: reading the request first is what lets the client see the answer rather
  than a reset. The header timeout bounds how long such a connection can linger; past
  ``hard_connections`` a new connection is closed at once, unanswered, so even a flood of them
  keeps the descriptors bounded.

uvicorn's own ``limit_concurrency`` was not used: it answers a plain-text 503 only once a whole
request has arrived, so it neither bounds connections that never finish their headers nor says
what limit was hit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import h11
import structlog
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.mcp.limits import FrontLimits
from supervisor.mcp.quiet_server import refresh_date

__all__ = ["HTTP_IMPLEMENTATIONS", "limited_protocol"]

log = structlog.get_logger("spctl.front")

_WARN_EVERY = 60.0  # seconds between two warnings of one kind: a flood must not flood the log


def _error_body(message: str) -> bytes:
    error = {"code": -32600, "message": message}
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()


def _raw_response(status: str, message: str) -> bytes:
    body = _error_body(message)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Warnings:
    """At most one log line per kind per :data:`_WARN_EVERY`, with the count since the last."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, kind: str, **fields: Any) -> None:
        self._count[kind] = self._count.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
            log.warning(kind, times=self._count[kind], **fields)
            self._last[kind] = now
            self._count[kind] = 0


class _Limits:
    """What both limited protocols share: the connection cap at ``connection_made``, the read
    timer (:meth:`_time` is told which part of a request is being read) and the answers. The
    protocol-specific part says when a head or body starts and ends."""

    limits: ClassVar[FrontLimits]
    warnings: ClassVar[_Warnings]
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    app: Any

    def _init_limits(self) -> None:
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # the part of a request being timed: head or body
        self._dropped = False

    def _admit(self, transport: asyncio.Transport) -> bool:
        """Before the protocol's own ``connection_made``: False when the connection is closed
        at once, unanswered (far over the cap)."""
        open_now = len(self.connections)  # not counting this one
        if open_now >= self.limits.hard_connections:
            self._dropped = True
            self.transport = transport
            transport.abort()
            self.warnings.warn("connection closed unanswered: far over the cap", open=open_now)
            return False
        return True

    def _cap(self) -> None:
        """After the protocol's own ``connection_made``: over the cap, the request gets 503."""
        open_now = len(self.connections) - 1
        if open_now >= self.limits.max_connections:
            self.app = self._too_many  # this connection's request gets the 503
            self.warnings.warn(
                "connection refused: too many connections",
                open=open_now,
                max_connections=self.limits.max_connections,
            )

    def _time(self, part: str | None) -> None:
        """Time ``part`` of a request (``head``, ``body``, or None: nothing is being read)."""
        if part != self._reading:
            self._stop_read_timer()
            self._reading = part
            if part is not None and not self.transport.is_closing():
                self._read_timer = self.loop.call_later(self.limits.header_timeout, self._late)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _late(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        part, timeout = self._reading, self.limits.header_timeout
        self.warnings.warn(f"connection closed: request {part} too slow", header_timeout=timeout)
        if part == "head":  # nothing answered yet on this request: say why
            self.transport.write(
                _raw_response(
                    "408 Request Timeout",
                    f"the request's head did not arrive within {timeout:g} s (the front's "
                    "--header-timeout)",
                )
            )
        self.transport.close()  # a body too slow: the app sees a disconnect

    async def _too_many(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self.limits.max_connections
        message = (
            f"too many connections to the spctl MCP front (its --max-connections is {cap}); "
            "retry shortly"
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": _error_body(message)})


class _LimitedH11(_Limits, H11Protocol):
    """h11 (pure Python): the part being read is asked of h11's state after each event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._admit(transport):
            return
        super().connection_made(transport)
        self._cap()
        self._watch_reading()

    def data_received(self, data: bytes) -> None:
        if self._dropped:
            return
        refresh_date(self.server_state)  # the Date header, without the server's 1 s timer
        super().data_received(data)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        if self._dropped:
            return
        super().connection_lost(exc)

    def _watch_reading(self) -> None:
        """Time the part of a request being read: its head, from the connection's start or
        the first byte of a later request (``trailing_data``: bytes h11 holds that make no
        whole event yet); then its body, afresh from the end of the head."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            part: str | None = "body"
        elif state is h11.IDLE and (self.cycle is None or bool(self.conn.trailing_data[0])):
            part = "head"
        else:
            part = None
        self._time(part)


class _LimitedHttpTools(_Limits, HttpToolsProtocol):
    """httptools (llhttp, C): the parser's callbacks say where a request starts, where its
    head ends and where it is complete."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._admit(transport):
            return
        super().connection_made(transport)
        self._cap()
        self._time("head")  # from the connection's start

    def data_received(self, data: bytes) -> None:
        if not self._dropped:
            refresh_date(self.server_state)  # the Date header, without the server's 1 s timer
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        if self._dropped:
            return
        super().connection_lost(exc)

    def on_message_begin(self) -> None:  # the first byte of a (later) request
        super().on_message_begin()
        self._time("head")

    def on_headers_complete(self) -> None:
        self._time("body")  # afresh from the end of the head; a bodiless request ends next
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._time(None)
        super().on_message_complete()


HTTP_IMPLEMENTATIONS = ("httptools", "h11")


def limited_protocol(limits: FrontLimits, http: str = "h11") -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=…)`` enforcing ``limits``' connection cap
    and header timeout (the keep-alive timeout is uvicorn's ``timeout_keep_alive``) on the
    ``http`` parser: ``h11`` or ``httptools``."""
    base = {"h11": _LimitedH11, "httptools": _LimitedHttpTools}[http]
    attrs = {"limits": limits, "warnings": _Warnings()}
    return type(f"Limited{base.__name__[8:]}Protocol", (base,), attrs)
