"""The live status page at ``/`` on the front (off with ``--no-status-page``).

Three static files of the package (``static/index.html``, ``page.js``, ``page.css``: no build
step, no CDN) and two JSON endpoints, each answered from what the core says at that moment:

- ``GET /api/status``: the core's ``status`` and ``history`` in one answer, and whether the
  request carried the action token (``"actions": true``: the page enables its buttons);
- ``POST /api/extensions/<name>/<start|stop|restart>``: the control verb of that name, only
  with ``Authorization: Bearer <action token>`` (never a cookie) → else 401.

The page shell (``/`` and ``/static/…``) holds no data and passes the front's guard without a
token (:attr:`OPEN_PATHS`); everything else keeps the guard. The action token is the
``--token-file`` one when given; otherwise a random one made at start and written 0600 to
``--page-token`` (the core passes ``<state dir>/page-token``; :func:`action_token`; a front
started by hand without it has a read-only page), which ``spctl page`` reads to print the
page's URL as ``http://HOST:PORT/#token=…`` (a fragment: never sent to a server).
"""

from __future__ import annotations

import re
import secrets
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supervisor.atomic import write_atomic
from supervisor.mcp.core_link import CoreLink
from supervisor.mcp.guard import bearer_ok
from worker.protocol import UNKNOWN_EXTENSION
from worker.rpc import RpcError

__all__ = ["OPEN_PATHS", "StatusPage", "action_token"]

_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
}
OPEN_PATHS = frozenset(_FILES)
_ACTIONS = ("start", "stop", "restart")
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_READ_TIMEOUT = 2.0
_ACTION_TIMEOUT = 120.0  # a restart waits for the stop (up to the entry's stop timeout) and start
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def action_token(path: Path | None, given: bytes | None) -> bytes:
    """The token the page's actions need: ``given`` (the ``--token-file`` one), else a new
    random one written 0600 to ``path`` (temp file + rename). Without a path (a front started
    by hand without ``--page-token``) nobody can know it: the page is read-only. Raises
    OSError."""
    if given is not None:
        if path is not None:
            path.unlink(missing_ok=True)  # one of an earlier run without --token-file is stale
        return given
    token = secrets.token_urlsafe(32).encode()
    if path is None:
        return token
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, token + b"\n")
    return token


class StatusPage:
    def __init__(self, link: CoreLink, token: bytes) -> None:
        self.link = link
        self.token = token
        folder = resources.files("supervisor.mcp") / "static"
        self.files = {
            path: ((folder / name).read_bytes(), kind) for path, (name, kind) in _FILES.items()
        }

    def routes(self) -> list[Route]:
        routes = [Route(path, self.static, methods=["GET"]) for path in _FILES]
        routes.append(Route("/api/status", self.status, methods=["GET"]))
        routes.append(Route("/api/extensions/{name}/{action}", self.action, methods=["POST"]))
        return routes

    async def static(self, request: Request) -> Response:
        body, kind = self.files[request.url.path]
        return Response(body, media_type=kind, headers=_HEADERS)

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization")  # the guard let only one through
        return bearer_ok(None if auth is None else auth.encode("latin-1"), self.token)

    async def status(self, request: Request) -> Response:
        """The core's status and history of this moment (503 when it does not answer)."""
        try:
            status = await self.link.status(timeout=_READ_TIMEOUT)
        except (RpcError, TimeoutError) as exc:
            return _error(503, f"the spctl supervisor is unreachable ({_why(exc)})")
        try:
            history: Any = await self.link.control("history", None, timeout=_READ_TIMEOUT)
        except (RpcError, TimeoutError):
            history = None  # an older core: the page draws no sparklines
        body = {"status": status, "history": history, "actions": self._authorized(request)}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def action(self, request: Request) -> Response:
        """start/stop/restart one extension through the core's control verb of that name."""
        if not self._authorized(request):
            return _error(401, "actions need the page's bearer token", bearer=True)
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in _ACTIONS:
            return _error(404, f"no action {action!r}: one of {', '.join(_ACTIONS)}")
        if not _NAME.fullmatch(name):
            return _error(404, f"no extension named {name[:100]!r}")
        try:
            snapshot = await self.link.control(action, name, timeout=_ACTION_TIMEOUT)
        except TimeoutError:
            return _error(504, f"{action} {name}: no answer from the supervisor in time")
        except RpcError as exc:
            code = 404 if exc.code == UNKNOWN_EXTENSION else 409
            return _error(code, f"{action} {name}: {exc.message}")
        return JSONResponse({"extension": snapshot})


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RpcError) else "no answer in time"


def _error(status: int, message: str, *, bearer: bool = False) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="spctl"'} if bearer else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
