"""What every MCP-server kind shares: publishing its catalog and checking ``mcp`` arguments.

An MCP server's catalog (tools, resources, resource templates, prompts) goes to the supervisor
twice over: once in ``ready``, then as a ``catalog`` notification whenever the server says its
lists changed. Changes that arrive while a refetch runs are merged into one more refetch, and
only a catalog that really differs is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from worker.protocol import CATALOG, INVALID_PARAMS
from worker.rpc import RpcError

__all__ = ["Catalog", "CatalogPublisher", "check_mcp_args", "empty_catalog"]

Catalog = dict[str, list[dict[str, Any]]]


def empty_catalog() -> Catalog:
    return {"tools": [], "resources": [], "resourceTemplates": [], "prompts": []}


def check_mcp_args(method: object, params: object, meta: object) -> None:
    """The ``mcp`` request's own arguments; raises RpcError(INVALID_PARAMS)."""
    if not isinstance(method, str):
        raise RpcError(INVALID_PARAMS, "mcp: method must be a string")
    if not isinstance(params, dict | None) or not isinstance(meta, dict | None):
        raise RpcError(INVALID_PARAMS, "mcp: params and meta must be maps")


class CatalogPublisher:
    """Base of the MCP-server kinds; subclasses provide :meth:`fetch_catalog`."""

    def __init__(self, notify: Callable[..., None]) -> None:
        self._notify = notify
        self.loop = asyncio.get_running_loop()
        self._catalog: Catalog | None = None
        self._dirty = False
        self._armed = False
        self._closing = False
        self._refetch: asyncio.Task[None] | None = None

    async def fetch_catalog(self) -> Catalog:
        raise NotImplementedError

    def notify(self, method: str, *params: Any) -> None:
        with contextlib.suppress(RpcError):  # the channel is closed: the worker is ending
            self._notify(method, *params)

    def stop_publishing(self) -> None:
        """Closing: no more refetches (one in progress is cancelled), no more catalogs sent."""
        self._closing = True
        if self._refetch is not None:
            self._refetch.cancel()

    def arm(self) -> None:
        """From now on (the supervisor has the first catalog) changes are sent."""
        self._armed = True
        if self._dirty:
            self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if self._armed and not self._closing and self._refetch is None:
            self._refetch = self.loop.create_task(self._refetch_until_clean())

    async def _refetch_until_clean(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                catalog = await self.fetch_catalog()
                if catalog != self._catalog:
                    self._catalog = catalog
                    self.notify(CATALOG, catalog)
        finally:
            self._refetch = None
