"""The front's door: what every HTTP request must pass before any MCP parsing.

:class:`Guard` checks, in this order, each answered at once: Host, Origin and Authorization
must each come at most once → 400 (two ``Origin`` headers, one loopback and one not, must not
let whichever is read last decide); Host must name this server
(DNS rebinding: a page of ``evil.example.com`` resolving to 127.0.0.1 sends
``Host: evil.example.com``) → 421; an Origin, if present, must be a loopback one → 403; with a
token, an ``Authorization: Bearer`` equal to it (constant-time compare) → 401.

With per-client tokens (:class:`ClientTokens`: the ``--token-file`` token and the clients file)
the bearer token must be some client's; that :class:`Client` is put in the ASGI scope under
:data:`CLIENT` for the faces, which show and forward only what it may reach.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.mcp.client_tokens import ClientTokens

__all__ = ["CLIENT", "Guard", "allowed_hosts", "bearer_ok", "parse_listen", "reject"]

CLIENT = "spctl.client"  # the ASGI scope key of the request's supervisor.rules.clients.Client

_LOOPBACK_ORIGIN = re.compile(rb"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CHECKED = (b"host", b"origin", b"authorization")  # each at most once


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6) → (host, port). Raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[bytes]:
    """Host header values this server answers to: loopback names with the port, the bound
    address itself (unless a wildcard), and any given explicitly."""
    names = {f"{name}:{port}" for name in _LOOPBACK_NAMES}
    if host not in ("0.0.0.0", "::", ""):
        names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    names.update(extra)
    return frozenset(n.lower().encode("latin-1") for n in names)


def reject(status: int, message: str, headers: dict[str, str] | None = None) -> ASGIApp:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """Pure ASGI middleware: one of each checked header, Host allowlist, loopback Origin,
    optional bearer token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: frozenset[bytes],
        token: bytes | None,
        tokens: ClientTokens | None = None,
        open_paths: frozenset[str] = frozenset(),
        page_token: bytes | None = None,
    ) -> None:
        """``tokens``: the clients (``token`` alone: one client with full access).
        ``open_paths``: GETs of these need no token (the status page's shell: it holds no
        data; Host and Origin are checked still). ``page_token``: the status page's action
        token, which also admits requests to the page's ``/api/`` (it checks it again)."""
        self.app = app
        self.hosts = hosts
        if tokens is None and token is not None:
            tokens = ClientTokens(None, token)
        self.tokens = tokens
        self.open_paths = open_paths
        self.page_token = page_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[bytes, bytes] = {}
        repeated: bytes | None = None
        for key, value in scope["headers"]:
            if key in _CHECKED:
                if key in seen and repeated is None:
                    repeated = key
                seen[key] = value
        host, origin, auth = (seen.get(key) for key in _CHECKED)
        problem: ASGIApp | None = None
        if repeated is not None:
            name = repeated.decode().title()
            problem = reject(400, f"Duplicate {name} header: a request may carry only one")
        elif host is None or host.lower() not in self.hosts:
            shown = "" if host is None else host.decode("latin-1")[:100]
            problem = reject(421, f"Invalid Host header: {shown!r}")
        elif origin is not None and _LOOPBACK_ORIGIN.fullmatch(origin.lower()) is None:
            problem = reject(403, f"Invalid Origin header: {origin.decode('latin-1')[:100]!r}")
        elif (
            self.tokens is not None
            and not self._open(scope, auth)
            and not _admitted(self.tokens, scope, auth)
        ):
            why = "Missing bearer token" if auth is None else "Invalid bearer token"
            problem = reject(401, why, {"WWW-Authenticate": 'Bearer realm="spctl"'})
        await (problem or self.app)(scope, receive, send)

    def _open(self, scope: Scope, auth: bytes | None) -> bool:
        """The page's shell (GET), or the page's API with its action token."""
        path = scope["path"]
        if scope["method"] in ("GET", "HEAD") and path in self.open_paths:
            return True
        page = self.page_token
        return page is not None and path.startswith("/api/") and bearer_ok(auth, page)


def _admitted(tokens: ClientTokens, scope: Scope, auth: bytes | None) -> bool:
    """Whether the request may pass; its client goes into the scope (see :data:`CLIENT`)."""
    tokens.refresh()
    if not tokens.required:
        return True
    client = tokens.identify(auth)
    if client is None:
        return False
    scope[CLIENT] = client
    return True


def bearer_ok(auth: bytes | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant-time)."""
    if auth is None:
        return False
    scheme, _, given = auth.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
