"""Credentials for remote extensions (``type: remote``): the entry's ``auth`` and an httpx2 auth.

Shared by remote MCP servers (:mod:`worker.kinds.remote`, and its SDK baseline
:mod:`worker.kinds.remote_sdk`) and remote modules (:mod:`worker.kinds.remote_module`); it
imports httpx2 only, never the MCP SDK. :class:`RemoteSpec` is what a remote MCP server's
worker is told (URL, auth, headers).
:class:`Credentials` (an ``httpx2.Auth``) puts the credential on every request: ``bearer`` →
``Authorization: Bearer <token>``; ``apikey`` → ``<header>: <key>``; ``oauth2`` → an access
token sent as a bearer token. With ``grant: client_credentials`` (the default) it comes from
that grant, POSTed to ``tokenUrl`` or, without one, to the token endpoint that
:func:`worker.kinds.oauth.discover` finds (RFC 9728 + RFC 8414), with ``resource`` (RFC 8707)
and the client authenticated by ``client_secret_post`` or ``client_secret_basic``. With
``grant: authorization_code`` it is the user's token that ``spctl auth login`` stored in the
extension's state directory (``tokenFile`` in the boot spec), renewed with its refresh token
and written back; a refresh the server refuses (or no stored token) is :class:`LoginNeeded`.
The token is checked before every request and renewed when less than a tenth of its
lifetime (at most :data:`RENEW_MARGIN`) is left, and once more when the server answers 401
(the request is then sent again, once). Without ``expires_in`` only a 401 renews it. Messages
name URLs through :func:`display` (no user info, no query) and never a secret or a token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from worker.kinds.oauth import (
    METHODS,
    Endpoints,
    OAuthError,
    StoredTokens,
    TokenAnswer,
    TokenFile,
    choose_method,
    discover,
    display,
    request_token,
)
from worker.log import say

__all__ = [
    "GRANTS",
    "PING_MISSES",
    "PING_TIMEOUT",
    "RENEW_MARGIN",
    "TIMEOUT",
    "Credentials",
    "LoginNeeded",
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
TIMEOUT = httpx2.Timeout(30.0, connect=10.0, read=300.0)  # read: SSE streams stay open
"""The HTTP timeouts of a remote MCP server's requests."""
PING_TIMEOUT = 10.0
PING_MISSES = 2
"""A remote MCP server's worker ends after this many failed pings in a row."""
GRANTS = ("client_credentials", "authorization_code")


class RemoteError(Exception):
    """The remote server could not be reached or used; the message is safe to show."""


class LoginNeeded(RemoteError):
    """The user's tokens are missing or refused: only ``spctl auth login`` can help."""


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
    token_auth_method: str = ""  # client_secret_basic | client_secret_post | "" (chosen)
    grant: str = "client_credentials"  # or authorization_code
    token_file: str = ""  # authorization_code: where spctl auth login keeps the tokens
    resource: str | None = None  # RFC 8707: None → the server's URL (or the metadata's); "" → none

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RemoteAuth:
        """The boot spec's ``auth`` map. Raises ValueError naming the bad field."""
        kind = raw.get("type")
        need: dict[str, tuple[str, ...]] = {"bearer": ("token",), "apikey": ("key",)}
        need["oauth2"] = ("clientId",)
        if kind not in need:
            raise ValueError(f"auth type must be bearer, apikey or oauth2, got {kind!r}")
        fields = (
            "token", "key", "header", "clientId", "clientSecret", "tokenUrl",
            "tokenAuthMethod", "grant", "tokenFile", "resource",
        )  # fmt: skip
        for name in fields:
            if not isinstance(raw.get(name, ""), str):
                raise ValueError(f"auth field {name!r} must be a string")
        grant = raw.get("grant") or "client_credentials"
        if grant not in GRANTS:
            raise ValueError(f"auth field 'grant' must be one of {', '.join(GRANTS)}")
        if kind == "oauth2" and grant == "client_credentials":
            need["oauth2"] = ("clientId", "clientSecret")
        if kind == "oauth2" and grant == "authorization_code":
            need["oauth2"] = ("clientId", "tokenFile")
        for name in need[kind]:
            if not raw.get(name):
                raise ValueError(f"auth field {name!r} is required for {kind}")
        method = raw.get("tokenAuthMethod", "")
        if method and method not in METHODS:
            raise ValueError(f"auth field 'tokenAuthMethod' must be one of {', '.join(METHODS)}")
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
            token_auth_method=method,
            grant=grant,
            token_file=raw.get("tokenFile", ""),
            resource=raw.get("resource"),
        )


@dataclass(frozen=True)
class RemoteSpec:
    """Which remote MCP server, how to authenticate, and the extra headers."""

    name: str
    url: str
    auth: RemoteAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry secrets


def status_text(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


async def fetch_token(auth: RemoteAuth, endpoint: str, method: str, resource: str) -> TokenAnswer:
    """An access token from the client-credentials grant at ``endpoint``."""
    form = {"grant_type": "client_credentials"}
    if resource:
        form["resource"] = resource
    if auth.scopes:
        form["scope"] = " ".join(auth.scopes)
    try:
        return await request_token(
            endpoint,
            form,
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            method=method,
        )
    except OAuthError as e:
        raise RemoteError(str(e)) from None


class Credentials(httpx2.Auth):
    """Puts the entry's credential on every request; see the module docstring.

    ``url``: the server's (discovery starts there; the ``resource`` tokens are asked for);
    ``headers``: the entry's, sent with discovery's probe of the server; ``name``: the
    extension's (in the "run spctl auth login NAME" of :class:`LoginNeeded`);
    ``on_login_needed``: called when a refresh fails while the session runs."""

    def __init__(
        self,
        auth: RemoteAuth | None,
        url: str = "",
        headers: Mapping[str, str] | None = None,
        name: str = "",
        on_login_needed: Callable[[LoginNeeded], None] | None = None,
    ) -> None:
        self.auth = auth
        self.url = url
        self.headers = dict(headers or {})
        self.name = name
        self.on_login_needed = on_login_needed
        self.status: str | None = None
        """The last HTTP status of the server (``"401 Unauthorized"``), for messages."""
        self._token: str | None = None
        self._renew_at = math.inf
        self._lock = asyncio.Lock()
        self._endpoints: Endpoints | None = None
        self._file = TokenFile(Path(auth.token_file)) if auth and auth.token_file else None
        self._stored: StoredTokens | None = None
        self._stamp: tuple[int, int, int] | None = None

    async def endpoint(self) -> tuple[str, str, str]:
        """The token endpoint, the client's auth method there and the resource to ask for:
        ``tokenUrl`` if given, else discovered (once)."""
        auth = self.auth
        assert auth is not None
        resource = self.url if auth.resource is None else auth.resource
        if auth.token_url:
            method = auth.token_auth_method or "client_secret_post"
            return auth.token_url, method, resource
        if self._endpoints is None:
            try:
                async with httpx2.AsyncClient(timeout=TOKEN_TIMEOUT) as client:
                    self._endpoints = await discover(client, self.url, headers=self.headers)
            except OAuthError as e:
                raise RemoteError(str(e)) from None
            say(
                f"discovered the token endpoint {display(self._endpoints.token_endpoint)} "
                f"of {display(self._endpoints.issuer)}"
            )
        found = self._endpoints
        try:
            method = choose_method(auth.token_auth_method, found.methods, True)
        except OAuthError as e:
            raise RemoteError(f"{display(found.issuer)}: {e}") from None
        return found.token_endpoint, method, found.resource if auth.resource is None else resource

    async def token(self, stale: str | None = None) -> str:
        """The oauth2 access token; a new one if there is none, it is about to expire, or it
        is ``stale`` (the server refused it) and nobody has renewed it meanwhile."""
        assert self.auth is not None
        async with self._lock:
            if self.auth.grant == "authorization_code":
                return await self._user_token(stale)
            now = time.monotonic()
            if self._token is None or self._token == stale or now >= self._renew_at:
                endpoint, method, resource = await self.endpoint()
                answer = await fetch_token(self.auth, endpoint, method, resource)
                self._token, lifetime = answer.access_token, answer.expires_in
                if lifetime is None:
                    self._renew_at = math.inf
                else:  # counted from before the request: on the safe side
                    self._renew_at = now + lifetime - min(RENEW_MARGIN, lifetime / 10)
            return self._token

    def _login(self, why: str) -> LoginNeeded:
        return LoginNeeded(f"{why}: run spctl auth login {self.name}")

    async def _user_token(self, stale: str | None) -> str:
        """The stored user token (re-read when ``spctl auth login`` replaced the file),
        refreshed and written back when it is about to expire or was refused."""
        assert self.auth is not None
        assert self._file is not None
        stamp = self._file.stamp()
        if stamp is None:
            raise self._login(f"no OAuth tokens for {self.name} (no {self._file.path})")
        if stamp != self._stamp or self._stored is None:
            try:
                self._stored = self._file.load()
            except OAuthError as e:
                raise self._login(str(e)) from None
            self._stamp = stamp
            if self._stored is None:
                raise self._login(f"no OAuth tokens for {self.name} (no {self._file.path})")
        stored = self._stored
        now = time.time()
        if stored.access_token != stale and (
            stored.expires_at is None
            or now
            < stored.expires_at - min(RENEW_MARGIN, (stored.expires_at - stored.obtained_at) / 10)
        ):
            return stored.access_token
        if not stored.refresh_token:
            raise self._login(
                f"the access token of {self.name} expired and there is no refresh token"
            )
        endpoint = self.auth.token_url or stored.token_endpoint
        method = self.auth.token_auth_method or stored.method
        form = {"grant_type": "refresh_token", "refresh_token": stored.refresh_token}
        if stored.resource:  # what the login asked for ("" when told to send none)
            form["resource"] = stored.resource
        try:
            answer = await request_token(
                endpoint,
                form,
                client_id=self.auth.client_id or stored.client_id,
                client_secret=self.auth.client_secret,
                method=method if self.auth.client_secret else "none",
                what="token refresh",
            )
        except OAuthError as e:
            if e.status is None or e.status >= 500:
                raise RemoteError(str(e)) from None  # the server's trouble: a restart may help
            raise self._login(str(e)) from None
        renewed = stored.with_answer(answer, time.time())
        try:
            self._file.save(renewed)
        except OSError as e:  # the new token still works in this session
            say(f"cannot write {self._file.path}: {e.strerror or e}")
        self._stored, self._stamp = renewed, self._file.stamp()
        say(f"refreshed the access token of {self.name} at {display(endpoint)}")
        return renewed.access_token

    async def _apply(self, request: httpx2.Request, stale: str | None = None) -> str | None:
        auth = self.auth
        if auth is None:
            return None
        if auth.type == "apikey":
            request.headers[auth.header] = auth.key
            return None
        if auth.type == "bearer":
            token = auth.token
        else:
            try:
                token = await self.token(stale)
            except LoginNeeded as e:
                if self.on_login_needed is not None:
                    self.on_login_needed(e)
                raise
        request.headers["Authorization"] = f"Bearer {token}"
        return token

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._apply(request)
        response = yield request
        self.status = status_text(response)
        if response.status_code == 401 and self.auth is not None and self.auth.type == "oauth2":
            say(f"401 from {display(str(request.url))}: renewing the access token")
            await self._apply(request, stale=token)
            response = yield request
            self.status = status_text(response)
