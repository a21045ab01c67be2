"""The front's door: what every HTTP request must pass before any MCP parsing.

:class:`Guard` checks, in this order, each answered at once: Host, Origin and Authorization
must each come at most once → 400 (two ``Origin`` headers, one loopback and one not, must not
let whichever is read last decide); Host must name this server
(DNS rebinding: a page of ``evil.example.com`` resolving to 127.0.0.1 sends
``Host: evil.example.com``) → 421; an Origin, if present, must be a loopback one → 403; with a
token, an ``Authorization: Bearer`` equal to it (constant-time compare) → 401.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Guard", "allowed_hosts", "parse_listen", "reject"]

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
        open_paths: frozenset[str] = frozenset(),
    ) -> None:
        """``open_paths``: GETs of these need no token (the status page's shell: it holds no
        data; Host and Origin are checked still)."""
        self.app = app
        self.hosts = hosts
        self.token = token
        self.open_paths = open_paths

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
            self.token is not None
            and not _token_ok(auth, self.token)
            and not (scope["method"] in ("GET", "HEAD") and scope["path"] in self.open_paths)
        ):
            why = "Missing bearer token" if auth is None else "Invalid bearer token"
            problem = reject(401, why, {"WWW-Authenticate": 'Bearer realm="spctl"'})
        await (problem or self.app)(scope, receive, send)


def _token_ok(auth: bytes | None, token: bytes) -> bool:
    if auth is None:
        return False
    scheme, _, given = auth.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
