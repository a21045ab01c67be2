"""The remote kind: an MCP server at an http(s) URL (``type: remote``), over Streamable HTTP.

Theory of operation. :class:`RemoteServer` is a :class:`worker.mcp.lean.LeanClient` whose
peer is an :class:`worker.mcp.http_peer.HttpPeer` (every message a POST to the URL, answers
as JSON or an event stream, the ``Mcp-Session-Id`` and ``MCP-Protocol-Version`` headers, a GET
stream for what the server sends outside a call), so the handshake (the 2025-11-25 era's
``initialize``; the version the server answers is recorded), the catalog, ``mcp`` forwarding,
cancellation, progress, ``list_changed`` and ``resources/updated`` behave as for the
``stdio`` kind, and so do the server's elicitation, sampling and roots requests (declared in
``initialize``, forwarded to the client of the call they belong to, parked for a 2026-07-28
client) — with one difference: which call a request belongs to is known exactly. A
Streamable HTTP server asks on the event stream that answers the POST of the call it serves
(SEP-2260); the peer says which POST that was (:attr:`HttpPeer.origin`), and the call's
:class:`worker.mcp.ask.Asking` is the tag the call was sent with, so any number of calls in
flight each get their own client's answer, POSTed back to the server. A request on the
standalone GET stream belongs to no call: refused with a JSON-RPC error (and logged), as is
one on the stream of spctl's own requests (the catalog's lists, pings). This module imports
neither the MCP SDK nor pydantic (a worker costs about a third of the SDK's memory:
docs/extensions/remote-server.md). The peer's ``httpx2``
client carries the entry's ``headers`` (every request to the server, never the token
endpoint) and :class:`worker.kinds.remote_auth.Credentials`, which put the credential on
every request (``bearer``, ``apikey``, or an ``oauth2`` client-credentials token fetched
before connecting, renewed before it expires and once on a 401).

Failures. A server that cannot be reached, refuses the credentials or fails the handshake makes
:meth:`RemoteServer.start` raise :class:`RemoteError`, whose message names the extension, the
URL (never a secret: no user info, no query) and the cause ("401 Unauthorized from …: check
auth"); the host reports it and exits 1, so the restart policy applies. While running, a
request that cannot be sent (the connection refused or reset) ends the session:
:attr:`LeanClient.exited` resolves ("was lost: cannot connect to …") and the host ends the
worker (non-zero); calls in flight fail at once. Each health ping of the supervisor also
sends an MCP ``ping`` to the server (:meth:`RemoteServer.health_ping`, one at a time,
:data:`PING_TIMEOUT` each); :data:`PING_MISSES` failures in a row end the worker too.

``REMOTE_MCP_CLIENT=sdk`` in the worker's environment (the entry's ``env:``) hosts the server
through the SDK's client instead (:mod:`worker.kinds.remote_sdk`): the benchmarks' baseline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Protocol

import httpx2

from worker.kinds.base import LoadFailed, Notify, ServerKind, Session, Unavailable
from worker.kinds.remote_auth import (
    PING_MISSES,
    PING_TIMEOUT,
    TIMEOUT,
    Credentials,
    LoginNeeded,
    RemoteAuth,
    RemoteError,
    RemoteSpec,
    display,
)
from worker.log import say
from worker.mcp.ask import Asking, no_call, unrelated
from worker.mcp.http_peer import HttpPeer, HttpStatus, Lost, describe
from worker.mcp.lean import LeanClient
from worker.mcp.publish import Catalog
from worker.protocol import CONNECTION_LOST, BootSpec
from worker.rpc import RpcError
from worker.tls import tls_for

__all__ = [
    "CLIENT_ENV",
    "Credentials",
    "RemoteAuth",
    "RemoteError",
    "RemoteKind",
    "RemoteServer",
    "RemoteSpec",
    "display",
    "load",
]

CLIENT_ENV = "REMOTE_MCP_CLIENT"
"""``sdk``: host the server through the MCP SDK's client (the benchmarks' baseline)."""


class RemoteServer(LeanClient):
    """One remote MCP server and the session to it; see the module docstring."""

    forwards = True

    def __init__(self, spec: RemoteSpec, notify: Callable[..., None]) -> None:
        self.spec = spec
        self.where = display(spec.url)
        self.label = f"remote MCP server {spec.name}"
        self.credentials = Credentials(
            spec.auth, spec.url, spec.headers, spec.name, self._login_needed
        )
        super().__init__(notify)
        self.http: HttpPeer = self.peer  # type: ignore[assignment]  # _new_peer made it
        self._pinging: asyncio.Task[None] | None = None
        self._missed = 0

    def _new_peer(self) -> HttpPeer:
        return HttpPeer(
            self.spec.url,
            self.where,
            self._client,
            self._on_notification,
            self._lost,
            self.label,
        )

    def _client(self) -> httpx2.AsyncClient:
        headers = dict(self.spec.headers)
        return httpx2.AsyncClient(
            headers=headers, timeout=TIMEOUT, auth=self.credentials, verify=tls_for(self.spec.url)
        )

    @property
    def metadata(self) -> dict[str, Any]:
        auth = self.spec.auth.type if self.spec.auth is not None else "none"
        return {"url": self.where, "auth": auth, **super().metadata}

    # -- the transport (the peer's) -------------------------------------------------------

    async def _connect(self) -> None:
        """Nothing to open: the first POST (``initialize``) connects."""

    def _write(self, data: bytes) -> None:  # pragma: no cover - the HttpPeer posts messages
        raise AssertionError("a remote server is not spoken to in lines")

    def _negotiated(self, version: str) -> None:
        self.http.protocol_version = version

    async def _disconnect(self) -> None:
        await self.http.close()
        how = self.how_ended or "was stopped"
        self.peer.fail_all(RpcError(CONNECTION_LOST, f"the {self.label} {how}"))

    def _lost(self, error: BaseException) -> None:
        """A request could not be sent: the session is over (unless still in the handshake,
        whose own failure says why)."""
        if self.info is None or self._closing:
            return
        how = f"was lost: {self.explain(error)}"
        if self._server_ended(how):
            say(f"the session to the {self.label} ended: {self.explain(error)}")
            self.peer.fail_all(RpcError(CONNECTION_LOST, f"the {self.label} {how}"))

    def _asking_call(self, method: str) -> Asking | RpcError:
        """Exact: the call whose POST's event stream carried the server's request (SEP-2260)."""
        stream = self.http.origin
        if stream is None:  # the GET stream: only a roots/list after a client's roots changed
            return self._roots_after_change(method) or unrelated(method)
        asking = self.peer.tag(stream)
        if not isinstance(asking, Asking):  # spctl's own request (a list, a ping)
            return no_call(method)
        return asking

    def _login_needed(self, error: LoginNeeded) -> None:
        """A refresh failed while the session ran: it is over (the next start says why)."""
        if (
            self.info is not None
            and not self._closing
            and self._server_ended(f"needs a new login: {error}")
        ):
            say(f"the session to the {self.label} ended: {error}")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Catalog:
        """Get a token (oauth2), connect, handshake, fetch the catalog; RemoteError if not."""
        try:
            if self.spec.auth is not None and self.spec.auth.type == "oauth2":
                await self.credentials.token()
            return await super().start()
        except LoginNeeded as e:
            raise LoginNeeded(f"{self.label}: {e}") from None
        except RemoteError as e:
            raise RemoteError(f"{self.label}: {e}") from None
        except Exception as e:
            raise RemoteError(f"{self.label}: {self.explain(e)}") from None

    def explain(self, error: BaseException) -> str:
        """Why talking to the server failed, in words that name the URL and no secret."""
        if isinstance(error, RemoteError | Lost):
            return str(error) if isinstance(error, RemoteError) else error.message
        if isinstance(error, HttpStatus):
            if error.status[:3] in ("401", "403"):
                return f"{error.status} from {self.where}: check auth"
            if error.message == f"the server answered {error.status}":
                return f"{error.status} from {self.where}"  # no more to say than the status
            return f"{error.status} from {self.where}: {error.message}"
        if isinstance(error, httpx2.TransportError):
            return describe(error, self.where)
        if isinstance(error, RpcError):
            return f"{self.where} answered with an MCP error: {error.message}"
        detail = str(error) or type(error).__name__
        return f"{type(error).__name__} from {self.where}: {detail}"

    async def close(self) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
        await super().close()

    # -- health ---------------------------------------------------------------------------

    def health_ping(self) -> None:
        """The supervisor pinged the worker: ping the server too (unless a ping is out)."""
        if self._pinging is None and not self._closing and self.info is not None:
            self._pinging = self.loop.create_task(self._ping())

    async def _ping(self) -> None:
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self.peer.request("ping")
            self._missed = 0
        except Exception as e:
            if self.exited.done():
                return  # the session is over: its end says why
            self._missed += 1
            why = "no answer" if isinstance(e, TimeoutError) else self.explain(e)
            say(f"ping to {self.where} failed ({self._missed}/{PING_MISSES}): {why}")
            if self._missed >= PING_MISSES and not self._closing and not self.exited.done():
                self._server_ended(f"at {self.where} failed {self._missed} pings in a row: {why}")
        finally:
            self._pinging = None


class Remote(Session, Protocol):
    """A remote server's session (:class:`RemoteServer` or the SDK's baseline)."""

    def health_ping(self) -> None: ...


class RemoteKind(ServerKind):
    """Kind ``remote``: a server that cannot be reached at start is :class:`Unavailable` (exit
    1: the restart policy applies), not a load error; each health ping pings it too."""

    server: Remote

    async def start(self) -> Catalog | None:
        try:
            return await self.server.start()
        except LoginNeeded as e:  # a restart cannot help: a load error (then failed)
            raise LoadFailed(str(e)) from Unavailable(str(e))
        except RemoteError as e:
            raise Unavailable(str(e)) from None

    def on_ping(self) -> None:
        self.server.health_ping()


async def load(spec: BootSpec, notify: Notify) -> RemoteKind:
    """Check the URL's auth and headers (a bad one is a load error); nothing is sent yet."""
    assert spec.url is not None  # BootSpec.parse checked it
    auth = RemoteAuth.parse(spec.auth) if spec.auth else None
    remote = RemoteSpec(spec.name, spec.url, auth, spec.headers)
    server: Remote
    if os.environ.get(CLIENT_ENV) == "sdk":
        from worker.kinds.remote_sdk import SdkRemoteServer

        server = SdkRemoteServer(remote, notify)
    else:
        server = RemoteServer(remote, notify)
    return RemoteKind("remote", server)
