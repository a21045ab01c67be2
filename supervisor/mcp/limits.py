"""Limits both MCP faces share (the HTTP front and ``spctl mcp``), in a module that imports
nothing: ``spctl mcp`` must not import the HTTP front to learn them."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MAX_BODY"]

DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024  # bytes of one request body (HTTP) or message (stdio)
