"""The MCP front: Streamable HTTP on ``/mcp`` and ``/mcp/<server>``, forwarding to the core.

``/servers/<server>/mcp`` (mcp-proxy's path, for clients that require one ending in ``/mcp``)
is the same endpoint as ``/mcp/<server>``: the same face, sessions and guard.

``python -m supervisor.mcp.front --socket PATH --listen 127.0.0.1:8765 [--token-file F]
[--clients-file F]
[--max-body BYTES] [--allow-host HOST:PORT …] [--max-connections N] [--header-timeout S]
[--keepalive-timeout S] [--max-sessions N] [--session-idle-timeout S] [--no-metrics]
[--no-status-page]``

Theory of operation: the front is its own process (the SDK's import and per-call CPU stay out
of the core). It connects to the core's control socket (:class:`CoreLink`), then serves HTTP
with uvicorn on a socket it bound itself, so "listening" is printed only once connections are
accepted (into the backlog) and the real port is known (``--listen 127.0.0.1:0``). When the
control connection ends the front exits (1): it is the core's child and comes back with it.

Besides MCP it serves ``/metrics`` (:mod:`supervisor.mcp.metrics`), ``/healthz`` and
``/readyz``, each answered from what the core says at that moment, none kept in the front,
and the live status page at ``/`` (:mod:`supervisor.mcp.page`; off with ``--no-status-page``).

Every request passes :class:`Guard` first (:mod:`supervisor.mcp.guard`: Host → 421, Origin →
403, bearer token with ``--token-file`` or a client's of ``--clients-file`` → 401), before any
MCP parsing. A client of the clients file sees and calls only what its ``allow`` globs reach
(:mod:`supervisor.rules.clients`): another server's ``/mcp/<server>`` is 404 to it. Bodies over
``--max-body`` get 413 from the SDK's limit.

The limits of :class:`FrontLimits` hold against a hostile local client: a cap on connections
and a header-read timeout (:mod:`supervisor.mcp.http_conn`, the protocol uvicorn runs),
uvicorn's keep-alive timeout, and one cap on 2025-era sessions across all URLs
(:mod:`supervisor.mcp.sessions`).

With ``--supervised`` (how ``spctl serve`` starts it) the front is also the worker end of an
fd-3 channel to the core (:mod:`supervisor.mcp.supervised`): it says ``ready`` with its URL,
answers health pings and ``shutdown``, and exits when that channel closes.

Exit codes: 0 stopped by a signal or ``shutdown``, 1 the core went away, 2 usage, 3 no core at
start.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.mcp.client_tokens import ClientTokens
from supervisor.mcp.core_link import CoreLink
from supervisor.mcp.face import Face, changed_kinds
from supervisor.mcp.guard import CLIENT, Guard, allowed_hosts, parse_listen, reject
from supervisor.mcp.http_conn import HTTP_IMPLEMENTATIONS, limited_protocol
from supervisor.mcp.limits import DEFAULT_MAX_BODY, FrontLimits
from supervisor.mcp.metrics import CONTENT_TYPE, Metrics
from supervisor.mcp.page import OPEN_PATHS, StatusPage, action_token
from supervisor.mcp.sessions import Sessions
from supervisor.mcp.supervised import SupervisorChannel, attach
from supervisor.rules.readiness import not_ready
from supervisor.rules.router import Router, RouterError
from worker.channel import ChannelClosed
from worker.rpc import RpcError

__all__ = ["Front", "main"]

log = structlog.get_logger("spctl.front")

_SERVER_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PROBE_TIMEOUT = 2.0  # a core that takes longer to answer is not healthy


class _Endpoint:
    """The ASGI endpoint of one route (a class: starlette treats functions as request handlers)."""

    def __init__(self, front: Front, aggregate: bool) -> None:
        self.front = front
        self.aggregate = aggregate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = None if self.aggregate else scope["path_params"]["server"]
        client = scope.get(CLIENT)
        if name is not None and client is not None and not client.reaches(name):
            await reject(404, f"no MCP server named {name!r}")(scope, receive, send)
            return  # as for a server that does not exist: a client learns nothing beyond its own
        try:
            face = await self.front.face(name)
        except ChannelClosed as exc:
            await reject(503, f"the spctl supervisor is unreachable ({exc.message})")(
                scope, receive, send
            )
            return
        if face is None:
            await reject(404, f"no MCP server named {name!r}")(scope, receive, send)
            return
        await face.asgi(scope, receive, send)


class Front:
    """The faces by scope, created on first use, and the app that routes to them."""

    def __init__(
        self,
        link: CoreLink,
        tg: TaskGroup,
        *,
        max_body: int,
        limits: FrontLimits | None = None,
        metrics: bool = True,
        page: StatusPage | None = None,
    ) -> None:
        """``metrics``: serve /metrics and measure the operations (off: benchmarks' baseline);
        ``page``: the status page at ``/`` (None: none)."""
        self.link = link
        self.tg = tg
        self.max_body = max_body
        limits = limits or FrontLimits()
        self.sessions = Sessions(limits.max_sessions, limits.session_idle_timeout)  # all faces'
        self.faces: dict[str | None, Face] = {}
        self._starting: dict[str | None, anyio.Event] = {}
        self.metrics = Metrics() if metrics else None
        self.page = page
        link.on_change = self.on_change
        link.on_resource_updated = self.on_resource_updated

    def app(
        self, hosts: frozenset[bytes], token: bytes | None, tokens: ClientTokens | None = None
    ) -> ASGIApp:
        routes = [
            Route("/mcp", _Endpoint(self, aggregate=True)),
            Route("/mcp/{server}", _Endpoint(self, aggregate=False)),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/servers/{server}/mcp", _Endpoint(self, aggregate=False)),  # the same face
        ]
        if self.metrics is not None:
            routes.append(Route("/metrics", self.scrape, methods=["GET"]))
        page = self.page
        if page is not None:
            routes += page.routes()
        return Guard(
            Starlette(routes=routes),
            hosts=hosts,
            token=token,
            tokens=tokens,
            open_paths=OPEN_PATHS if page is not None else frozenset(),
            page_token=page.token if page is not None else None,
        )

    # -- observability: each answer is read from the core at request time ----------------

    async def scrape(self, request: Request) -> Response:
        """``/metrics``: the core's numbers of this moment and the front's own."""
        assert self.metrics is not None  # routed only then
        try:
            status = await self.link.status(timeout=_PROBE_TIMEOUT)
        except (RpcError, TimeoutError) as exc:
            return _unavailable(exc)
        return Response(self.metrics.render(status), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        """``/healthz``: 200 when the front answers and the core answers it, else 503."""
        try:
            await self.link.ping(_PROBE_TIMEOUT)
        except (RpcError, TimeoutError) as exc:
            return _unavailable(exc)
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``/readyz``: 200 when every enabled non-lazy extension is running; otherwise 503
        with who is not and why (:func:`supervisor.rules.readiness.not_ready`)."""
        try:
            status = await self.link.status(timeout=_PROBE_TIMEOUT)
        except (RpcError, TimeoutError) as exc:
            return _unavailable(exc)
        waiting = not_ready(status.get("extensions") or ())
        body = {"status": "not ready" if waiting else "ready", "not_ready": waiting}
        return JSONResponse(body, status_code=503 if waiting else 200)

    async def face(self, scope: str | None) -> Face | None:
        """The face of ``scope``, started on first use; None when the core has no MCP server of
        that name. Raises ChannelClosed when the core is gone."""
        face = self.faces.get(scope)
        if face is not None:
            return face
        starting = self._starting.get(scope)
        if starting is not None:
            await starting.wait()
            return self.faces.get(scope)
        self._starting[scope] = event = anyio.Event()
        try:
            if scope is not None and not (
                _SERVER_NAME.fullmatch(scope) and await self.link.is_server(scope)
            ):
                return None
            face = Face(
                scope,
                self.link,
                max_body=self.max_body,
                sessions=self.sessions,
                operations=None if self.metrics is None else self.metrics.operations,
            )
            await self.tg.start(face.run)
            self.faces[scope] = face
        finally:
            del self._starting[scope]
            event.set()
        return face

    def on_resource_updated(self, server: str, uri: str) -> None:
        for face in list(self.faces.values()):
            self.tg.start_soon(face.resource_updated, server, uri)

    def on_change(self, old: Router, new: Router) -> None:
        if self.metrics is not None:
            self.metrics.operations.retain(partial(_lists_tool, new))
        for scope, face in list(self.faces.items()):
            kinds = changed_kinds(scope, old, new)
            if kinds:
                self.tg.start_soon(face.announce, kinds)


def _lists_tool(router: Router, server: str, tool: str) -> bool:
    try:
        router.resolve_tool(server, tool)  # its own name, as /mcp/<server> lists it
    except RouterError:
        return False
    return True


def _unavailable(exc: BaseException) -> Response:
    why = exc.message if isinstance(exc, RpcError) else "no answer in time"
    body = {"status": "unavailable", "reason": f"the spctl supervisor is unreachable ({why})"}
    return JSONResponse(body, status_code=503)


def _read_token(path: Path) -> bytes:
    token = path.read_bytes().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("token file is readable by others", path=str(path))
    return token


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # accepted ones inherit ours; with proto 0, Nagle + delayed ACK cost ~40 ms per response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _raise_nofile(limits: FrontLimits) -> None:
    """Raise the soft RLIMIT_NOFILE (systemd's default is 1024) so the connection caps, not
    the descriptors, are what bounds connections."""
    want = limits.hard_connections + 256  # the front's own files, sockets to the core
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("open-file limit below the connection cap", nofile=soft, wanted=want)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(args: argparse.Namespace, supervised: SupervisorChannel | None = None) -> int:
    import uvicorn

    from supervisor.mcp.quiet_server import QuietServer

    host, port = parse_listen(args.listen)
    token = _read_token(args.token_file) if args.token_file else None
    tokens = ClientTokens(args.clients_file, token) if args.clients_file else None
    link = CoreLink(args.socket)
    code = 0
    server: uvicorn.Server | None = None

    def shutdown() -> None:  # the core's `shutdown` request
        if server is not None:
            server.should_exit = True

    if supervised is not None:
        supervised.on_shutdown = shutdown
        await supervised.connect()
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(link.run)
        except (OSError, TimeoutError) as exc:
            print(f"spctl front: no supervisor on {args.socket}: {exc}", file=sys.stderr)
            return 3
        except RpcError as exc:  # a core without the MCP control API, or one refusing it
            print(f"spctl front: the supervisor refused: {exc}", file=sys.stderr)
            return 3
        try:
            sock = _bind(host, port)
        except OSError as exc:
            print(f"spctl front: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            link.close()
            return 1
        port = sock.getsockname()[1]
        if not _is_loopback(host):
            auth = token is not None or (tokens is not None and tokens.required)
            log.warning("listening beyond loopback", host=host, token=auth)
        limits = _limits(args)
        _raise_nofile(limits)
        page = None
        if not args.no_status_page:
            try:
                page = StatusPage(link, action_token(args.page_token, token))
                if args.page_token is None and token is None:
                    log.info("status page read-only: no --page-token and no --token-file")
            except OSError as exc:  # the page is a convenience: MCP is served without it
                log.error("no status page: cannot write its token", error=str(exc))
        front = Front(
            link,
            tg,
            max_body=args.max_body,
            limits=limits,
            metrics=not args.no_metrics,
            page=page,
        )
        await front.face(None)
        hosts = allowed_hosts(host, port, args.allow_host)
        config = uvicorn.Config(
            front.app(hosts, token, tokens),
            http=limited_protocol(limits, args.http),
            ws="none",  # no WebSocket upgrade: it would leave the limits of http_conn behind
            lifespan="off",
            access_log=False,
            server_header=False,
            log_level="warning",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]  # a float is fine
        )
        server = QuietServer(config)  # no 10 Hz tick while idle

        async def exit_when(closed: Callable[[], Awaitable[str]], what: str) -> None:
            nonlocal code
            reason = await closed()
            if not server.should_exit:
                log.error(f"{what} lost; exiting", reason=reason)
                code = 1
                server.should_exit = True

        tg.start_soon(exit_when, link.wait_closed, "control connection")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/mcp"
        log.info("listening", url=url, servers=len(link.router.servers))
        print(f"listening on {url}", flush=True)
        if supervised is not None:
            try:
                await supervised.ready(url)
            except RpcError as exc:  # refused, or the channel closed: the core is gone
                print(f"spctl front: the supervisor refused ready: {exc}", file=sys.stderr)
                link.close()
                tg.cancel_scope.cancel()
                return 1
            tg.start_soon(exit_when, supervised.wait_closed, "supervisor channel")
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
        # handler it found; let that be a no-op so we finish cleanly (exit 0), not die by it.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        await server.serve(sockets=[sock])
        link.close()
        if supervised is not None:
            supervised.close()
        tg.cancel_scope.cancel()
    return code


def _limits(args: argparse.Namespace) -> FrontLimits:
    """The --max-connections … --session-idle-timeout flags. Raises ValueError."""
    return FrontLimits(
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        max_sessions=args.max_sessions,
        session_idle_timeout=args.session_idle_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.mcp.front",
        description="Serve spctl's MCP servers over Streamable HTTP on /mcp and /mcp/<server>.",
    )
    parser.add_argument("--socket", type=Path, required=True, help="the core's control socket")
    parser.add_argument(
        "--listen", default="127.0.0.1:8765", help="HOST:PORT (default %(default)s)"
    )
    parser.add_argument("--token-file", type=Path, help="require this bearer token")
    parser.add_argument(
        "--clients-file",
        type=Path,
        help="per-client tokens (supervisor.rules.clients); re-read when it changes",
    )
    parser.add_argument(
        "--max-body", type=int, default=DEFAULT_MAX_BODY, help="request body cap in bytes"
    )
    parser.add_argument(
        "--allow-host", action="append", default=[], help="another accepted Host header value"
    )
    defaults = FrontLimits()
    limit_flags: list[tuple[str, type, str]] = [
        ("--max-connections", int, "connections served at once; more get 503"),
        ("--header-timeout", float, "seconds a client has to send a request's head"),
        ("--keepalive-timeout", float, "seconds an idle connection is kept between requests"),
        ("--max-sessions", int, "2025-era sessions across all URLs; then the oldest idle goes"),
        ("--session-idle-timeout", float, "seconds an idle 2025-era session is kept"),
    ]
    for flag, kind, text in limit_flags:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument(
        "--no-metrics",
        action="store_true",
        help="no /metrics and no per-call measurement (a baseline for benchmarks)",
    )
    parser.add_argument(
        "--no-status-page", action="store_true", help="no live status page at / (nor /api/…)"
    )
    parser.add_argument(
        "--page-token",
        type=Path,
        help="where to write the page's action token without --token-file "
        "(spctl serve passes <state dir>/page-token; without it the page is read-only)",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop (default %(default)s; measured in tests/bench/bench_front.py)",
    )
    parser.add_argument(
        "--http",
        choices=list(HTTP_IMPLEMENTATIONS),
        default=HTTP_IMPLEMENTATIONS[0],
        help="the HTTP/1.1 parser: httptools (C) or h11 (pure Python); default %(default)s",
    )
    parser.add_argument(
        "--supervised",
        action="store_true",
        help="started by spctl serve: fd 3 is the channel to the core (ready, ping, shutdown)",
    )
    args = parser.parse_args(argv)
    try:
        parse_listen(args.listen)
        if args.max_body <= 0:
            raise ValueError("--max-body must be positive")
        _limits(args)
        if args.token_file:
            _read_token(args.token_file)
        if args.clients_file:
            ClientTokens(args.clients_file)  # a bad file stops the front here, with its reason
        supervised = attach() if args.supervised else None
    except (ValueError, OSError, RuntimeError) as exc:
        parser.error(str(exc))
    from supervisor.logs import configure

    configure(json=None)
    return anyio.run(serve, args, supervised, backend_options=loop_options(args.loop))


def loop_options(choice: str) -> dict[str, Any]:
    """anyio's asyncio backend options for ``--loop``."""
    return {"use_uvloop": True} if choice == "uvloop" else {}


if __name__ == "__main__":
    sys.exit(main())
