"""The remote kind through the official SDK's Streamable HTTP client: the benchmarks' baseline.

``REMOTE_MCP_CLIENT=sdk`` in a ``type: remote`` entry's ``env:`` makes its worker use this
:class:`SdkRemoteServer` instead of the lean :class:`worker.kinds.remote.RemoteServer` (no
feature needs it: it is kept so ``tests/bench/bench_remote.py`` can measure what the lean
client saves, in the same run). It is what the remote kind was before the lean client: an
:class:`worker.mcp.client.McpClient` whose transport is the SDK's ``streamable_http_client`` on
an ``httpx2`` client carrying the entry's headers and :class:`Credentials`; the handshake is the
2025-11-25 era's ``initialize``. Its failures read as the lean client's (:meth:`explain`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from worker.kinds.remote_auth import (
    PING_MISSES,
    PING_TIMEOUT,
    TIMEOUT,
    Credentials,
    RemoteError,
    RemoteSpec,
    display,
)
from worker.log import say
from worker.mcp.client import Catalog, McpClient, Streams

__all__ = ["SdkRemoteServer"]


class SdkRemoteServer(McpClient):
    """One remote MCP server and the session to it; see the module docstring."""

    def __init__(self, spec: RemoteSpec, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.spec = spec
        self.where = display(spec.url)
        self.label = f"remote MCP server {spec.name}"
        self.credentials = Credentials(spec.auth, spec.url, spec.headers, spec.name)
        self._pinging: asyncio.Task[None] | None = None
        self._missed = 0

    @property
    def metadata(self) -> dict[str, Any]:
        auth = self.spec.auth.type if self.spec.auth is not None else "none"
        return {"url": self.where, "auth": auth, **super().metadata}

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Streams]:
        async with (
            httpx2.AsyncClient(
                headers=dict(self.spec.headers), timeout=TIMEOUT, auth=self.credentials
            ) as client,
            streamable_http_client(self.spec.url, http_client=client) as streams,
        ):
            yield streams

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        return self._connect()

    async def start(self) -> Catalog:
        """Get a token (oauth2), connect, handshake, fetch the catalog; RemoteError if not."""
        try:
            if self.spec.auth is not None and self.spec.auth.type == "oauth2":
                await self.credentials.token()
            return await super().start()
        except RemoteError as e:
            raise type(e)(f"{self.label}: {e}") from None  # LoginNeeded stays one
        except Exception as e:
            raise RemoteError(f"{self.label}: {self.explain(e)}") from None

    def explain(self, error: BaseException) -> str:
        """Why talking to the server failed, in words that name the URL and no secret."""
        if isinstance(error, RemoteError):
            return str(error)
        detail = str(error) or type(error).__name__
        if isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout):
            return f"cannot connect to {self.where}: {detail}"
        if not isinstance(error, MCPError):
            return f"{type(error).__name__} from {self.where}: {detail}"
        if error.code == CONNECTION_CLOSED:
            return f"the connection to {self.where} closed"
        # The SDK turns an HTTP error status into a generic MCP error: say the status instead.
        status = self.credentials.status
        if status is not None and status[:3] in ("401", "403"):
            return f"{status} from {self.where}: check auth"
        if status is not None and status[0] in "45":
            return f"{status} from {self.where}: {error.message}"
        return f"{self.where} answered with an MCP error: {error.message}"

    def _session_ended(self, error: BaseException | None) -> None:
        if not self.exited.done():
            how = "closed the session" if error is None else f"was lost: {self.explain(error)}"
            self.exited.set_result(how)

    async def close(self) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
        await super().close()

    # -- health ---------------------------------------------------------------------------

    def health_ping(self) -> None:
        """The supervisor pinged the worker: ping the server too (unless a ping is out)."""
        if self._pinging is None and not self._closing and self.session is not None:
            self._pinging = self.loop.create_task(self._ping())

    async def _ping(self) -> None:
        session = self.session
        try:
            if session is None:
                return
            async with asyncio.timeout(PING_TIMEOUT):
                await session.send_ping()
            self._missed = 0
        except Exception as e:
            if isinstance(e, MCPError) and e.code == CONNECTION_CLOSED:
                return  # the transport is gone: the session's end says why
            self._missed += 1
            why = "no answer" if isinstance(e, TimeoutError) else self.explain(e)
            say(f"ping to {self.where} failed ({self._missed}/{PING_MISSES}): {why}")
            if self._missed >= PING_MISSES and not self._closing and not self.exited.done():
                self.exited.set_result(
                    f"at {self.where} failed {self._missed} pings in a row: {why}"
                )
        finally:
            self._pinging = None
