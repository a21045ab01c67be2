"""The remote kind: an MCP server at an http(s) URL (``type: remote``), over Streamable HTTP.

Theory of operation. :class:`RemoteServer` is an :class:`worker.mcp.client.McpClient` whose
transport is the SDK's Streamable HTTP client on an ``httpx2`` client of ours, so the catalog,
``mcp`` forwarding, cancellation, progress, ``list_changed`` and ``resources/updated`` behave
as for the ``sdk`` kind; the handshake is the 2025-11-25 era's ``initialize``. The entry's
``headers`` are the client's default headers (every request to the server, never the token
endpoint). :class:`Credentials` (an ``httpx2.Auth``) puts the credential on every request:
``bearer`` → ``Authorization: Bearer <token>``; ``apikey`` → ``<header>: <key>``; ``oauth2`` →
an access token from the client-credentials grant (a form POST of ``grant_type``,
``client_id``, ``client_secret`` and ``scope`` to ``tokenUrl``), sent as a bearer token. The
token is fetched before connecting, checked before every request and fetched again when less
than a tenth of its ``expires_in`` (at most :data:`RENEW_MARGIN`) is left, and once more when
the server answers 401 (the request is then sent again, once). Without ``expires_in`` only a
401 renews it.

Failures. A server that cannot be reached, refuses the credentials or fails the handshake makes
:meth:`RemoteServer.start` raise :class:`RemoteError`, whose message names the extension, the
URL (never a secret: no user info, no query) and the cause ("401 Unauthorized from …: check
auth"); the host reports it and exits 1, so the restart policy applies. While running, a lost
connection ends the transport, and with it the session: :attr:`McpClient.exited` resolves and
the host ends the worker (non-zero), as for a stdio server that exits. Each health ping of the
supervisor also sends an MCP ``ping`` to the server (:meth:`RemoteServer.health_ping`, one at a
time, :data:`PING_TIMEOUT` each); :data:`PING_MISSES` failures in a row end the worker too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from worker.kinds.base import Notify, ServerKind, Unavailable
from worker.kinds.remote_auth import Credentials, RemoteAuth, RemoteError, display
from worker.log import say
from worker.mcp.client import Catalog, McpClient, Streams
from worker.protocol import BootSpec

__all__ = [
    "Credentials",
    "RemoteAuth",
    "RemoteError",
    "RemoteKind",
    "RemoteServer",
    "RemoteSpec",
    "display",
    "load",
]

TIMEOUT = httpx2.Timeout(30.0, connect=10.0, read=300.0)  # read: SSE streams stay open
PING_TIMEOUT = 10.0
PING_MISSES = 2


@dataclass(frozen=True)
class RemoteSpec:
    """Which server, how to authenticate, and the extra headers."""

    name: str
    url: str
    auth: RemoteAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry secrets


class RemoteServer(McpClient):
    """One remote MCP server and the session to it; see the module docstring."""

    def __init__(self, spec: RemoteSpec, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.spec = spec
        self.where = display(spec.url)
        self.label = f"remote MCP server {spec.name}"
        self.credentials = Credentials(spec.auth)
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
            raise RemoteError(f"{self.label}: {e}") from None
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


class RemoteKind(ServerKind):
    """Kind ``remote``: a server that cannot be reached at start is :class:`Unavailable` (exit
    1: the restart policy applies), not a load error; each health ping pings it too."""

    server: RemoteServer

    async def start(self) -> Catalog | None:
        try:
            return await self.server.start()
        except RemoteError as e:
            raise Unavailable(str(e)) from None

    def on_ping(self) -> None:
        self.server.health_ping()


async def load(spec: BootSpec, notify: Notify) -> RemoteKind:
    """Check the URL's auth and headers (a bad one is a load error); nothing is sent yet."""
    assert spec.url is not None  # BootSpec.parse checked it
    auth = RemoteAuth.parse(spec.auth) if spec.auth else None
    return RemoteKind(
        "remote", RemoteServer(RemoteSpec(spec.name, spec.url, auth, spec.headers), notify)
    )
