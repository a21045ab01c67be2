"""Limits the MCP faces share (the HTTP front and ``spctl mcp``), in a module that imports
nothing of the SDK or of uvicorn: ``spctl mcp`` must not import the HTTP front to learn them.

:class:`FrontLimits` are the HTTP front's own (docs/security.md, "Limits of the front"): how
many connections it serves, how long a client may take to send a request's head or leave a
kept-alive connection idle, and how many 2025-era (``Mcp-Session-Id``) sessions it keeps
across all its URLs, each for how long when idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_BODY", "FrontLimits"]

DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024  # bytes of one request body (HTTP) or message (stdio)


@dataclass(frozen=True)
class FrontLimits:
    """The HTTP front's limits; every field has a ``--flag`` of the same name on the front.

    Raises ValueError on a value that is not positive (and finite, for times)."""

    max_connections: int = 1000  # served at once; more get 503 (and past twice this: closed)
    header_timeout: float = (
        10.0  # seconds to send a request's head (from its first byte), and its body
    )
    keepalive_timeout: float = 5.0  # seconds a connection may idle between requests
    max_sessions: int = 1000  # 2025-era sessions across all URLs; then the oldest idle goes
    session_idle_timeout: float = 1800.0  # seconds a session may idle before it is closed

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_sessions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        for name in ("header_timeout", "keepalive_timeout", "session_idle_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of seconds")

    @property
    def hard_connections(self) -> int:
        """Past this many, a new connection is closed at once, unanswered (see ``http_conn``)."""
        return 2 * self.max_connections
