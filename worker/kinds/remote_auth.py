"""Credentials for remote extensions (``type: remote``): the entry's ``auth`` and an httpx2 auth.

Shared by remote MCP servers (:mod:`worker.kinds.remote`, and its SDK baseline
:mod:`worker.kinds.remote_sdk`) and remote modules (:mod:`worker.kinds.remote_module`); it
imports httpx2 only, never the MCP SDK. :class:`RemoteSpec` is what a remote MCP server's
worker is told (URL, auth, headers).
:class:`Credentials` (an ``httpx2.Auth``) puts the credential on every request: ``bearer`` →
``Authorization: Bearer <token>``; ``apikey`` → ``<header>: <key>``; ``oauth2`` → an access
token from the client-credentials grant (a form POST of ``grant_type``, ``client_id``,
``client_secret`` and ``scope`` to ``tokenUrl``), sent as a bearer token. The token is checked
before every request and fetched again when less than a tenth of its ``expires_in`` (at most
:data:`RENEW_MARGIN`) is left, and once more when the server answers 401 (the request is then
sent again, once). Without ``expires_in`` only a 401 renews it. Messages name URLs through
:func:`display` (no user info, no query) and never a secret.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from worker.log import say

__all__ = [
    "PING_MISSES",
    "PING_TIMEOUT",
    "RENEW_MARGIN",
    "TIMEOUT",
    "Credentials",
    "RemoteAuth",
    "RemoteError",
    "RemoteSpec",
    "display",
    "fetch_token",
    "status_text",
]

TOKEN_TIMEOUT = 30.0
RENEW_MARGIN = 60.0
"""An access token is renewed this long (or a tenth of its lifetime) before it expires."""
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
TIMEOUT = httpx2.Timeout(30.0, connect=10.0, read=300.0)  # read: SSE streams stay open
"""The HTTP timeouts of a remote MCP server's requests."""
PING_TIMEOUT = 10.0
PING_MISSES = 2
"""A remote MCP server's worker ends after this many failed pings in a row."""


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
    """Which remote MCP server, how to authenticate, and the extra headers."""

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


def status_text(response: httpx2.Response) -> str:
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
        raise RemoteError(f"token request to {where} failed: {status_text(response)}{code}{hint}")
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
        self.status = status_text(response)
        if response.status_code == 401 and self.auth is not None and self.auth.type == "oauth2":
            say(f"401 from {display(str(request.url))}: fetching a new access token")
            await self._apply(request, stale=token)
            response = yield request
            self.status = status_text(response)
