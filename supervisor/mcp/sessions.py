"""2025-era (``Mcp-Session-Id``) sessions of every URL of the front, under one cap.

Theory of operation: each face (``/mcp``, ``/mcp/<server>``) has its own SDK session manager,
whose own limit (10,000 by default) is per manager, so N URLs allowed N × 10,000 sessions of
~40 kB each. :class:`Sessions` is shared by all the faces' managers (:class:`SessionManager`)
and admits a new session only while fewer than ``cap`` are open. At the cap it **drops the
oldest idle session** (the one whose last request ended longest ago; a session with a request
in flight or an open GET stream is never idle) and admits the new one; only when every open
session is busy is the new one refused, with a 503 that says so.

Why drop rather than refuse: a client whose idle session was dropped gets ``404 Session not
found`` on its next request and, as the specification requires, initializes a new session, so
it loses nothing but a round trip. Refusing instead would let whoever opened ``cap`` sessions
and left them idle (one loop of ``initialize`` requests) lock every other client out until the
idle timeout ran out. The clients that use their sessions (a standalone GET stream, calls in
flight) are the ones kept.

Idleness is the SDK transport's own: its ``idle_scope`` deadline is infinite while a request is
in flight and "now + idle timeout" once the last one ended, so the smallest finite deadline is
the oldest idle session; dropping it cancels that scope, exactly what the idle timeout does.
"""

from __future__ import annotations

import math
import time
from typing import Any

import structlog
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Scope

__all__ = ["SessionManager", "Sessions", "opens_session"]

log = structlog.get_logger("spctl.front")

_LOG_EVERY = 60.0  # seconds between two "cap reached" lines


def opens_session(scope: Scope) -> bool:
    """Whether this request would open a 2025-era session: a POST without ``Mcp-Session-Id``
    in that era (no protocol version header, or one of the handshake versions)."""
    if scope.get("method") != "POST":
        return False
    version = None
    for key, value in scope["headers"]:
        if key == b"mcp-session-id":
            return False
        if key == b"mcp-protocol-version":
            version = value.decode("latin-1")
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


class Sessions:
    """The open sessions of all faces; ``cap`` at most, the oldest idle dropped for a new one."""

    def __init__(self, cap: int, idle_timeout: float) -> None:
        self.cap = cap
        self.idle_timeout = idle_timeout
        self._open: dict[StreamableHTTPServerTransport, None] = {}  # in order of opening
        self.dropped = 0  # sessions dropped for room, since start
        self._logged = -_LOG_EVERY

    def __len__(self) -> int:
        return len(self._open)

    def full(self) -> bool:
        """At the cap with no idle session to drop: a new session would be refused."""
        return len(self._open) >= self.cap and self._oldest_idle() is None

    def make_room(self) -> bool:
        """Make room for one more session (dropping the oldest idle one if at the cap); False
        when every one of ``cap`` sessions is busy. Synchronous: nothing can slip in between
        the check and the caller's registration."""
        if len(self._open) < self.cap:
            return True
        victim = self._oldest_idle()
        if victim is None:
            return False
        assert victim.idle_scope is not None
        del self._open[victim]
        victim.idle_scope.cancel()  # as the idle timeout would: the session ends and is discarded
        self.dropped += 1
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            log.warning(
                "session cap reached: dropping the oldest idle", cap=self.cap, dropped=self.dropped
            )
        return True

    def add(self, transport: StreamableHTTPServerTransport) -> None:
        self._open[transport] = None

    def discard(self, transport: StreamableHTTPServerTransport) -> None:
        self._open.pop(transport, None)

    def _oldest_idle(self) -> StreamableHTTPServerTransport | None:
        oldest, deadline = None, math.inf
        for transport in self._open:
            scope = transport.idle_scope
            if scope is not None and not scope.cancel_called and scope.deadline < deadline:
                oldest, deadline = transport, scope.deadline
        return oldest


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, admitting sessions through the shared :class:`Sessions`
    (whose idle timeout it uses) instead of its own per-manager limit."""

    def __init__(self, app: Server[Any], sessions: Sessions, *, max_body: int) -> None:
        super().__init__(
            app,
            session_idle_timeout=sessions.idle_timeout,
            max_request_body_size=max_body,
            max_sessions=None,
        )
        self.sessions = sessions

    # The two hooks below are the SDK's own (private) admission and discard steps: the one
    # place where a session's transport is created and registered without an await between.

    def _admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        if not self.sessions.make_room():
            return None  # the SDK answers 503 "Too many open sessions"
        transport = super()._admit_session(requestor)
        if transport is not None:
            self.sessions.add(transport)
        return transport

    async def _discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        self.sessions.discard(transport)
        await super()._discard_session(session_id, transport)
