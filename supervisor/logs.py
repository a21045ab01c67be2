"""structlog set-up: JSON lines when stderr is not a terminal (journald), readable otherwise.

Every event about an extension carries ``extension=``; secrets never reach here because
configuration secrets are ``Secret`` objects whose repr is redacted.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["configure", "debug_enabled_for"]


def debug_enabled_for(name: str, environ: dict[str, str] | None = None) -> bool:
    """``DEBUG=extensions:*`` or ``DEBUG=extensions:weather,extensions:x`` (as in the seed)."""
    value = (os.environ if environ is None else environ).get("DEBUG", "")
    for part in value.replace(",", " ").split():
        if part in ("extensions:*", f"extensions:{name}"):
            return True
    return False


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
