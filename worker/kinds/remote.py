"""The remote kind: an MCP server at an http(s) URL (``type: remote``), over Streamable HTTP.

Theory of operation. :class:`RemoteServer` is an :class:`worker.kinds.client.McpClient` whose
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
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from worker.kinds.client import Catalog, McpClient, Streams, log

__all__ = ["Credentials", "RemoteAuth", "RemoteError", "RemoteServer", "RemoteSpec", "display"]

TIMEOUT = httpx2.Timeout(30.0, connect=10.0, read=300.0)  # read: SSE streams stay open
TOKEN_TIMEOUT = 30.0
RENEW_MARGIN = 60.0
"""An access token is renewed this long (or a tenth of its lifetime) before it expires."""
PING_TIMEOUT = 10.0
PING_MISSES = 2
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")


class RemoteError(Exception):
    """The remote server could not be reached or used; the message is safe to show."""


@dataclass(frozen=True)
class RemoteAuth:
    """The entry's ``auth`` as the worker gets it (secrets revealed: kept out of ``repr``)."""

    type: str  # bearer | apikey | oauth2
    token: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    header: str = "X-API-Key"
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    token_url: str = ""
    scopes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RemoteAuth:
        """The boot spec's ``auth`` map. Raises ValueError naming the bad field."""
        kind = raw.get("type")
        need = {"bearer": ("token",), "apikey": ("key",), "oauth2": ("clientId", "clientSecret")}
        if kind not in need:
            raise ValueError(f"auth type must be bearer, apikey or oauth2, got {kind!r}")
        fields = ("token", "key", "header", "clientId", "clientSecret", "tokenUrl")
        for name in fields:
            if not isinstance(raw.get(name, ""), str):
                raise ValueError(f"auth field {name!r} must be a string")
        for name in need[kind]:
            if not raw.get(name):
                raise ValueError(f"auth field {name!r} is required for {kind}")
        if kind == "oauth2" and not raw.get("tokenUrl"):
            raise ValueError("auth field 'tokenUrl' is required for oauth2")
        scopes = raw.get("scopes") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("auth field 'scopes' must be a list of strings")
        return cls(
            type=kind,
            token=raw.get("token", ""),
            key=raw.get("key", ""),
            header=raw.get("header") or "X-API-Key",
            client_id=raw.get("clientId", ""),
            client_secret=raw.get("clientSecret", ""),
            token_url=raw.get("tokenUrl", ""),
            scopes=tuple(scopes),
        )


@dataclass(frozen=True)
class RemoteSpec:
    """Which server, how to authenticate, and the extra headers."""

    name: str
    url: str
    auth: RemoteAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry secrets


def display(url: str) -> str:
    """``url`` fit for messages: no user info, no query, no fragment (they may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _status(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


async def fetch_token(auth: RemoteAuth) -> tuple[str, float | None]:
    """An access token from the client-credentials grant, and its lifetime (if given)."""
    where = display(auth.token_url)
    form = {
        "grant_type": "client_credentials",
        "client_id": auth.client_id,
        "client_secret": auth.client_secret,
    }
    if auth.scopes:
        form["scope"] = " ".join(auth.scopes)
    try:
        async with httpx2.AsyncClient(timeout=TOKEN_TIMEOUT) as client:
            response = await client.post(
                auth.token_url, data=form, headers={"Accept": "application/json"}
            )
    except httpx2.HTTPError as e:
        raise RemoteError(f"token request to {where} failed: {type(e).__name__}: {e}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if response.status_code != 200:
        code = body.get("error")  # an OAuth error code such as invalid_client: never a secret
        code = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""
        hint = ""
        if response.status_code in (400, 401):
            hint = ": check auth.clientId and auth.clientSecret"
        raise RemoteError(f"token request to {where} failed: {_status(response)}{code}{hint}")
    token, kind = body.get("access_token"), body.get("token_type", "bearer")
    if not isinstance(token, str) or not token:
        raise RemoteError(f"token request to {where}: no access_token in the answer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise RemoteError(f"token request to {where}: token_type {kind!r} is not bearer")
    expires = body.get("expires_in")
    if isinstance(expires, str) and expires.isdigit():
        expires = int(expires)
    if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0:
        return token, None
    return token, float(expires)


class Credentials(httpx2.Auth):
    """Puts the entry's credential on every request; see the module docstring."""

    def __init__(self, auth: RemoteAuth | None) -> None:
        self.auth = auth
        self.status: str | None = None
        """The last HTTP status of the server (``"401 Unauthorized"``), for messages."""
        self.tokens = 0  # oauth2: how many access tokens were fetched
        self._token: str | None = None
        self._renew_at = math.inf
        self._lock = asyncio.Lock()

    async def token(self, stale: str | None = None) -> str:
        """The oauth2 access token; a new one if there is none, it is about to expire, or it
        is ``stale`` (the server refused it) and nobody has renewed it meanwhile."""
        assert self.auth is not None
        async with self._lock:
            now = time.monotonic()
            if self._token is None or self._token == stale or now >= self._renew_at:
                self._token, lifetime = await fetch_token(self.auth)
                self.tokens += 1
                if lifetime is None:
                    self._renew_at = math.inf
                else:  # counted from before the request: on the safe side
                    self._renew_at = now + lifetime - min(RENEW_MARGIN, lifetime / 10)
            return self._token

    async def _apply(self, request: httpx2.Request, stale: str | None = None) -> str | None:
        auth = self.auth
        if auth is None:
            return None
        if auth.type == "apikey":
            request.headers[auth.header] = auth.key
            return None
        token = auth.token if auth.type == "bearer" else await self.token(stale)
        request.headers["Authorization"] = f"Bearer {token}"
        return token

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._apply(request)
        response = yield request
        self.status = _status(response)
        if response.status_code == 401 and self.auth is not None and self.auth.type == "oauth2":
            log(f"401 from {display(str(request.url))}: fetching a new access token")
            await self._apply(request, stale=token)
            response = yield request
            self.status = _status(response)


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
            log(f"ping to {self.where} failed ({self._missed}/{PING_MISSES}): {why}")
            if self._missed >= PING_MISSES and not self._closing and not self.exited.done():
                self.exited.set_result(
                    f"at {self.where} failed {self._missed} pings in a row: {why}"
                )
        finally:
            self._pinging = None
