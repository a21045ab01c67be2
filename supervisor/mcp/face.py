"""One MCP endpoint of the front: the SDK's low-level Server for a scope, forwarding to the core.

Theory of operation: a scope is ``None`` (``/mcp``, every server's entries, tools and prompts
named ``server__name``) or a server name (``/mcp/<server>``, its own names). Each scope gets
its own SDK ``Server`` and ``StreamableHTTPSessionManager``, so a session opened on one URL
can never be used on another and list-change announcements reach exactly the clients whose
listing changed. The SDK does the protocol (both eras, sessions, SSE, version headers, result
validation); this module only answers from the current :class:`Router` and forwards calls.

On the HTTP front each forwarded request (tools/call, resources/read, prompts/get,
completion/complete) is measured into :class:`Operations` (``/metrics``); ``spctl mcp`` passes
none and measures nothing.

The per-call path is kept short: the raw wire params are forwarded (no model dumps), results
go back as the worker's plain dicts, and the SDK's per-request tracing middleware (a no-op
without an exporter, but not free) is left out.

Change announcements: a 2026-07-28 client gets them on its ``subscriptions/listen`` stream
(the SDK's bus); a 2025-era session gets ``notifications/*/list_changed`` on its standalone
stream. The SDK keeps no public handle on a session's connection, so the one place that
needs it (:meth:`Face._on_initialized`) reads the session's ``_connection``; without it,
legacy sessions simply don't hear of changes.

Resource subscriptions: a 2025-era session's ``resources/subscribe`` and a 2026-07-28
listen stream's ``resourceSubscriptions`` are routed like a read (the URI's server) and held
by the :class:`CoreLink` for that session or stream until it unsubscribes or ends. An update
(:meth:`Face.resource_updated`) goes to the legacy sessions subscribed to it and onto the
SDK's bus, whose listen streams deliver it to those that asked for that URI.

Per-client tokens: the request's :class:`Client` (put in the ASGI scope by the guard, read back
from the SDK's ``ctx.request``; none on ``spctl mcp`` and without tokens) narrows every list to
what it may reach, and a call, read, prompt or subscription outside it is answered by the same
path as a name that does not exist (``-32602`` unknown tool/prompt, ``-32002`` resource). Only
the request body decides (the SDK's parsed params), never mirrored ``Mcp-*`` headers. Each
forwarded request carries the client's name to the core as ``meta["client"]`` (a ``client``
member of the caller's own ``_meta`` is dropped, so it cannot be forged) and is logged with it.

A client's ``notifications/roots/list_changed`` goes to the servers it concerns
(:mod:`supervisor.mcp.roots`): this scope's server, or on ``/mcp`` those the session called.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import mcp_types as types
import structlog
from anyio.abc import TaskStatus
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from pydantic import ConfigDict, ValidationError
from starlette.types import Receive, Scope, Send

from supervisor import __version__
from supervisor.mcp.core_link import AskFn, CoreLink
from supervisor.mcp.guard import CLIENT, reject
from supervisor.mcp.limits import FrontLimits
from supervisor.mcp.metrics import OTHER, Operations
from supervisor.mcp.roots import Called, declared_roots, standalone_asker, targets
from supervisor.mcp.sessions import SessionManager, Sessions, opens_session
from supervisor.rules.clients import Client, read_only_tool
from supervisor.rules.router import (
    SEPARATOR,
    ListKind,
    Route,
    Router,
    RouterError,
    UnknownPrompt,
    UnknownResource,
    UnknownServer,
    UnknownTool,
)
from worker.channel import ChannelClosed
from worker.mcp.ask import CAPABILITY, ELICITATION_COMPLETE, ROOTS_CHANGED_METHOD
from worker.protocol import APPLICATION_ERROR, ASK_META
from worker.rpc import RpcError

__all__ = ["KINDS", "Face", "changed_kinds", "mcp_error"]

log = structlog.get_logger("spctl.front")

Ctx = ServerRequestContext[Any, Any]
KINDS: tuple[ListKind, ...] = ("tools", "prompts", "resources", "resourceTemplates")
_EMPTY = {kind: Router().fingerprint(None, kind) for kind in KINDS}
_ANNOUNCE_TIMEOUT = 5.0  # per legacy session; a stuck stream must not hold up the others
_STALE: dict[CacheableMethod, CacheHint] = {
    "tools/list": CacheHint(),
    "prompts/list": CacheHint(),
    "resources/list": CacheHint(),
    "resources/templates/list": CacheHint(),
    "resources/read": CacheHint(),
}
ASKED_CAPABILITIES = frozenset(CAPABILITY.values())
_SERVER_REQUESTS: dict[
    str, type[types.ElicitRequest | types.CreateMessageRequest | types.ListRootsRequest]
] = {
    "elicitation/create": types.ElicitRequest,
    "sampling/createMessage": types.CreateMessageRequest,
    "roots/list": types.ListRootsRequest,
}
_NOTIFY_ALL = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


def client_of(ctx: Ctx) -> Client | None:
    """The client of the request being handled (see :data:`supervisor.mcp.guard.CLIENT`)."""
    scope = getattr(ctx.request, "scope", None)
    client = scope.get(CLIENT) if isinstance(scope, dict) else None
    return client if isinstance(client, Client) else None


def _asker(ctx: Ctx, ended: list[bool]) -> tuple[AskFn | None, dict[str, Any]]:
    """How to ask the client of this request something on the request's own stream (a
    server's elicitation, sampling, roots), and what it declared it can answer; no way when
    the request's stream cannot carry a request (a 2026-07-28 client, a JSON response).
    A server's ``notifications/elicitation/complete`` goes the same way while the request is
    in flight, and on the session's standalone stream once it has ended (``ended[0]``)."""
    session = ctx.session
    if ctx.request_id is None or not session.can_send_request:
        return None, {}
    declared = session.client_capabilities
    capabilities: dict[str, Any] = {}
    if declared is not None:
        dumped = declared.model_dump(by_alias=True, mode="json", exclude_none=True)
        capabilities = {k: dumped[k] for k in ASKED_CAPABILITIES if k in dumped}
    related = ServerMessageMetadata(related_request_id=ctx.request_id)

    async def ask(method: str, params: Any) -> Any:
        if method == ELICITATION_COMPLETE:
            try:
                note = types.ElicitCompleteNotification.model_validate(
                    {"method": method, "params": params}
                )
            except ValidationError as exc:
                raise RpcError(INVALID_PARAMS, f"malformed {method}: {exc}") from None
            await session.send_notification(note, None if ended[0] else ctx.request_id)
            return None
        model = _SERVER_REQUESTS.get(method)
        if model is None:
            raise RpcError(INVALID_REQUEST, f"spctl does not forward {method} to clients")
        try:
            request = model.model_validate(
                {"method": method, "params": params} if params is not None else {"method": method}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise RpcError(INVALID_PARAMS, f"malformed {method} request: {problems}") from None
        try:
            result = await session.send_request(request, _ClientAnswer, metadata=related)
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.data) from None
        except NoBackChannelError:
            raise RpcError(INVALID_REQUEST, f"the client's stream cannot carry {method}") from None
        except ValidationError as exc:
            raise RpcError(INTERNAL_ERROR, f"the client's answer to {method}: {exc}") from None
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    return ask, capabilities


class _ClientAnswer(types.Result):
    """A client's answer to a server's request, as the client sent it (the SDK checked it)."""

    model_config = ConfigDict(**{**types.Result.model_config, "extra": "allow"})


def _narrowed(ctx: Ctx) -> Client | None:
    """The request's client when it may not see everything."""
    client = client_of(ctx)
    return None if client is None or client.everything else client


def changed_kinds(scope: str | None, old: Router, new: Router) -> frozenset[ListKind]:
    """The listings of ``scope`` that differ between two routers (an absent server: empty)."""

    def fingerprint(router: Router, kind: ListKind) -> str:
        try:
            return router.fingerprint(scope, kind)
        except UnknownServer:
            return _EMPTY[kind]

    return frozenset(k for k in KINDS if fingerprint(old, k) != fingerprint(new, k))


def mcp_error(exc: RpcError) -> MCPError:
    """The MCP error a client sees for an error from the core (or the lost link to it).

    MCP codes and the core's own (-32010 unknown server, -32011 refused, -32001 timeout: all in
    JSON-RPC's implementation-defined band) pass through with their message; a crash inside
    the core becomes an internal error.
    """
    if isinstance(exc, ChannelClosed):
        return MCPError(INTERNAL_ERROR, f"the spctl supervisor is unreachable ({exc.message})")
    code = INTERNAL_ERROR if exc.code == APPLICATION_ERROR else exc.code
    data = exc.data
    if data is not None:
        try:
            json.dumps(data)
        except (TypeError, ValueError):
            data = None  # msgpack can carry what JSON cannot (bytes): keep code and message
    return MCPError(code, exc.message, data)


class _FaceServer(Server[Any]):
    """The SDK server, announcing list changes to 2025-era clients too (they are sent)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or _NOTIFY_ALL, experimental_capabilities, extensions
        )


class Face:
    """The MCP endpoint for ``scope``. ``await tg.start(face.run)``, then serve ``face.asgi``."""

    def __init__(
        self,
        scope: str | None,
        link: CoreLink,
        *,
        max_body: int,
        sessions: Sessions | None = None,
        operations: Operations | None = None,
    ) -> None:
        """``operations``: where forwarded calls are measured (the HTTP front's /metrics)."""
        self.scope = scope
        self.link = link
        self.operations = operations
        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)
        self._legacy: set[Connection] = set()
        self._subscribed: dict[Connection, set[tuple[str, str]]] = {}  # legacy sessions
        self._schemas: tuple[Router, dict[str, Any]] | None = None
        self._called = Called()  # on /mcp: the servers each session called (its roots' reach)
        self.server = _FaceServer(
            "spctl" if scope is None else f"spctl/{scope}",
            version=__version__,
            # ttlMs/cacheScope are required on cacheable 2026-07-28 results: "stale at once",
            # since a catalog can change any time (clients hear of it by list_changed).
            cache_hints=_STALE,
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen_and_subscribe,
        )
        self.server.middleware = []
        self.server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self._on_initialized
        )
        self.server.add_notification_handler(
            ROOTS_CHANGED_METHOD, types.NotificationParams, self._on_roots_changed
        )
        if sessions is None:  # spctl mcp: stdio has no HTTP sessions
            defaults = FrontLimits()
            sessions = Sessions(defaults.max_sessions, defaults.session_idle_timeout)
        self.sessions = sessions
        self.manager = SessionManager(self.server, sessions, max_body=max_body)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request; a new 2025-era session while every one of the front's
        ``--max-sessions`` is busy gets a 503 saying so (see :mod:`supervisor.mcp.sessions`)."""
        if self.sessions.full() and opens_session(scope):
            message = (
                f"too many MCP sessions: all {self.sessions.cap} the spctl front keeps (its "
                "--max-sessions) are in use; retry later, or end a session (DELETE)"
            )
            await reject(503, message, {"Retry-After": "5"})(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the session manager until cancelled."""
        async with self.manager.run():
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._listen.close()

    # -- listings -------------------------------------------------------------------------

    def _page(
        self,
        lister: Callable[[str | None, str | None], tuple[list[dict[str, Any]], str | None]],
        key: str,
        params: types.PaginatedRequestParams | None,
        client: Client | None = None,
    ) -> dict[str, Any]:
        cursor = params.cursor if params is not None else None
        try:
            items, next_cursor = lister(self.scope, cursor)
        except UnknownServer:
            if cursor is not None:
                raise MCPError(INVALID_PARAMS, "invalid cursor: the listing has changed") from None
            # not running now (an empty, complete page); a list_changed follows its return
            return {key: [], "resultType": "complete"}
        except RouterError as exc:
            raise MCPError(exc.code, str(exc)) from None
        if client is not None:  # a page may come out short, even empty: nextCursor goes on
            items = [item for item in items if self._admits(client, key, item)]
        page: dict[str, Any] = {key: items, "resultType": "complete"}
        if next_cursor:
            page["nextCursor"] = next_cursor
        return page

    async def _list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        return self._page(self.link.router.list_tools, "tools", params, _narrowed(ctx))

    async def _list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        return self._page(self.link.router.list_prompts, "prompts", params, _narrowed(ctx))

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        lister = self.link.router.list_resources
        return self._page(lister, "resources", params, _narrowed(ctx))

    async def _list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        lister = self.link.router.list_resource_templates
        return self._page(lister, "resourceTemplates", params, _narrowed(ctx))

    def _admits(self, client: Client, key: str, item: Mapping[str, Any]) -> bool:
        """Whether ``client`` may see ``item`` of the listing ``key`` in this scope."""
        router = self.link.router
        try:
            if key in ("tools", "prompts"):
                name = item.get("name")
                if not isinstance(name, str):
                    return False
                server, own = (self.scope, name) if self.scope else name.split(SEPARATOR, 1)
                if key == "prompts":
                    return client.admits(server, own)
                return client.admits_tool(server, item, own)
            member = "uri" if key == "resources" else "uriTemplate"
            uri = item.get(member)
            if not isinstance(uri, str):
                return False
            if self.scope is not None:
                return client.admits(self.scope, uri)
            resolve = router.resolve_resource if key == "resources" else router.resolve_template
            return client.admits(resolve(None, uri).server, uri)
        except (RouterError, ValueError):
            return False

    def _may(self, client: Client, kind: str, route: Route) -> bool:
        """Whether ``client`` may use the ``kind`` (tool, prompt, resource) at ``route``."""
        if not client.admits(route.server, route.name):
            return False
        if kind != "tool" or not client.read_only:
            return True
        try:
            tools = self.link.router.catalog(route.server).tools
        except RouterError:
            return False  # not running: its annotations are unknown
        return any(t.get("name") == route.name and read_only_tool(t) for t in tools)

    def _input_schema(self, name: str) -> Any:
        """For the SDK's ``Mcp-Param-*`` header check; indexed once per routing table."""
        router = self.link.router
        if self._schemas is None or self._schemas[0] is not router:
            schemas: dict[str, Any] = {}
            cursor: str | None = None
            try:
                while True:
                    page, cursor = router.list_tools(self.scope, cursor, page_size=1000)
                    schemas.update((t["name"], t.get("inputSchema")) for t in page)
                    if cursor is None:
                        break
            except RouterError:
                pass
            self._schemas = (router, schemas)
        return self._schemas[1].get(name)

    # -- calls ----------------------------------------------------------------------------

    def _resolve(
        self,
        resolve: Callable[[str | None, str], Route],
        name: str,
        client: Client | None,
        kind: str,
    ) -> tuple[Route, bool]:
        """The route of ``name`` (a ``kind``: tool, prompt, resource) and whether the current
        catalog lists it; for a ``client`` that may not use it, what a name that does not
        exist gets. Raises MCPError."""
        try:
            try:
                route, known = resolve(self.scope, name), True
            except UnknownServer:
                assert self.scope is not None
                # not running now: the core says why (or starts it)
                route, known = Route(self.scope, name), False
            if client is not None and not self._may(client, kind, route):
                raise {"tool": UnknownTool, "prompt": UnknownPrompt}.get(kind, UnknownResource)(
                    name, self.scope
                )
            return route, known
        except UnknownTool:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {name}") from None
        except UnknownPrompt:
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name}") from None
        except UnknownResource:
            raise MCPError(
                UnknownResource.code, f"Resource not found: {name}", {"uri": name}
            ) from None

    async def _forward(
        self, ctx: Ctx, route: Route, method: str, key: str, within: str | None = None
    ) -> Any:
        """Send the request's own params to ``route.server`` with ``key`` (of the ``within``
        member, when given) renamed to the server's name for it."""
        raw: Mapping[str, Any] = ctx.params or {}
        params = {k: v for k, v in raw.items() if k != "_meta"}
        if within is None:
            params[key] = route.name
        else:
            params[within] = {**params[within], key: route.name}
        meta = raw.get("_meta")
        if not isinstance(meta, Mapping):
            meta = None
        elif "client" in meta or ASK_META in meta:  # only ours are believed
            meta = {k: v for k, v in meta.items() if k not in ("client", ASK_META)}
        client = client_of(ctx)
        if client is not None:
            meta = {**(meta or {}), "client": client.name}
            log.info(
                "call", client=client.name, server=route.server, method=method, name=route.name
            )
        if self.scope is None:
            self._called.add(getattr(ctx.session, "_connection", None), route.server)
        progress = ctx.session.report_progress if meta and "progressToken" in meta else None
        ended = [False]
        ask, capabilities = _asker(ctx, ended)
        try:
            result = await self.link.call(
                route.server, method, params, meta, progress, ask, capabilities
            )
        except RpcError as exc:
            raise mcp_error(exc) from None
        finally:
            ended[0] = True
        if not isinstance(result, dict):
            raise MCPError(INTERNAL_ERROR, f"{route.server}: malformed answer to {method}")
        result.setdefault("resultType", "complete")  # required from 2026-07-28; dropped before
        return result

    async def _operation(
        self,
        ctx: Ctx,
        resolve: Callable[[str | None, str], Route],
        name: str,
        method: str,
        key: str,
        within: str | None = None,
    ) -> Any:
        """Route ``name`` and forward the request; measured when the face has ``operations``
        (labels: the tool only when the catalog lists it, else ``other``)."""
        ops = self.operations
        kind = "tool" if method == "tools/call" else "prompt" if key == "name" else "resource"
        client = _narrowed(ctx)
        if ops is None:
            route = self._resolve(resolve, name, client, kind)[0]
            return await self._forward(ctx, route, method, key, within)
        started = time.perf_counter()
        ops.begin(method)
        tool = OTHER if method == "tools/call" else ""
        extension = self.scope or ""
        error = ""
        try:
            route, known = self._resolve(resolve, name, client, kind)
            extension = route.server
            if known and method == "tools/call":
                tool = route.name
            result = await self._forward(ctx, route, method, key, within)
            if result.get("isError") is True:
                error = "tool_error"
            return result
        except MCPError as exc:
            error = str(exc.code)
            raise
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            error = "cancelled" if cancelled else type(exc).__qualname__
            raise
        finally:
            ops.end(method, tool, error, extension, time.perf_counter() - started)

    async def _call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> Any:
        resolve = self.link.router.resolve_tool
        return await self._operation(ctx, resolve, params.name, "tools/call", "name")

    async def _get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> Any:
        resolve = self.link.router.resolve_prompt
        return await self._operation(ctx, resolve, params.name, "prompts/get", "name")

    async def _read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> Any:
        resolve = self.link.router.resolve_resource
        return await self._operation(ctx, resolve, params.uri, "resources/read", "uri")

    async def _complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> Any:
        """``completion/complete``: to the server of the prompt or resource template named
        by ``ref`` (a server without completions answers with its own error)."""
        ref = params.ref
        router, method = self.link.router, "completion/complete"
        if isinstance(ref, types.PromptReference):
            resolve = router.resolve_prompt
            return await self._operation(ctx, resolve, ref.name, method, "name", "ref")
        return await self._operation(ctx, router.resolve_template, ref.uri, method, "uri", "ref")

    # -- resource subscriptions -----------------------------------------------------------

    async def _subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> Any:
        connection = getattr(ctx.session, "_connection", None)  # see the module docstring
        if not isinstance(connection, Connection):
            raise MCPError(INTERNAL_ERROR, "resources/subscribe needs a session")
        resolve = self.link.router.resolve_resource
        route = self._resolve(resolve, params.uri, _narrowed(ctx), "resource")[0]
        try:
            await self.link.subscribe(connection, route.server, params.uri)
        except RpcError as exc:
            raise mcp_error(exc) from None
        if connection not in self._subscribed:
            self._subscribed[connection] = set()
            connection.exit_stack.push_async_callback(self._session_ended, connection)
        self._subscribed[connection].add((route.server, params.uri))
        return {}

    async def _unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> Any:
        connection = getattr(ctx.session, "_connection", None)
        held = self._subscribed.get(connection) if isinstance(connection, Connection) else None
        for key in [k for k in held or () if k[1] == params.uri]:
            assert held is not None
            held.discard(key)
            await self.link.unsubscribe(connection, *key)
        return {}

    async def _session_ended(self, connection: Connection) -> None:
        self._subscribed.pop(connection, None)
        with anyio.CancelScope(shield=True):
            await self.link.drop(connection)

    async def _listen_and_subscribe(
        self, ctx: Ctx, params: types.SubscriptionsListenRequestParams
    ) -> Any:
        """The SDK's listen stream, with its resource subscriptions held while it lasts."""
        stream = object()  # this stream's key in the link's subscriptions
        client = _narrowed(ctx)
        try:
            for uri in params.notifications.resource_subscriptions or ():
                try:
                    route = self.link.router.resolve_resource(self.scope, uri)
                    if client is not None and not client.admits(route.server, uri):
                        raise UnknownResource(uri, self.scope)
                    await self.link.subscribe(stream, route.server, uri)
                except (RouterError, RpcError) as exc:
                    log.info("listen: resource not subscribed", uri=uri, error=str(exc))
            return await self._listen(ctx, params)
        finally:
            with anyio.CancelScope(shield=True):
                await self.link.drop(stream)

    async def resource_updated(self, server: str, uri: str) -> None:
        """``uri`` of ``server`` changed: tell this scope's clients that subscribed to it."""
        if self.scope is not None and self.scope != server:
            return
        await self.bus.publish(ResourceUpdated(uri=uri))
        for connection, held in list(self._subscribed.items()):
            if (server, uri) in held:
                with anyio.move_on_after(_ANNOUNCE_TIMEOUT):
                    await connection.send_resource_updated(uri)

    # -- list changes ---------------------------------------------------------------------

    async def _on_initialized(self, ctx: Ctx, params: types.NotificationParams) -> None:
        connection = getattr(ctx.session, "_connection", None)  # see the module docstring
        if isinstance(connection, Connection) and connection not in self._legacy:
            self._legacy.add(connection)
            connection.exit_stack.callback(self._legacy.discard, connection)

    async def _on_roots_changed(self, ctx: Ctx, params: types.NotificationParams) -> None:
        """The client's roots changed: tell the servers it concerns (supervisor.mcp.roots)."""
        if not declared_roots(ctx):
            log.info(
                "roots/list_changed not forwarded: the client declared no roots capability",
                scope=self.scope,
            )
            return
        connection = getattr(ctx.session, "_connection", None)  # see the module docstring
        servers = targets(self.scope, self._called.of(connection), client_of(ctx))
        ask = standalone_asker(ctx, self.manager._server_instances.get)
        for server in servers:
            try:
                told = await self.link.roots_changed(server, ask)
            except RpcError as exc:
                log.info("roots/list_changed not forwarded", server=server, error=exc.message)
                continue
            log.debug("roots/list_changed", server=server, told=told)

    async def announce(self, kinds: Iterable[ListKind]) -> None:
        """Tell this scope's clients that these listings changed."""
        kinds = frozenset(kinds)
        events: list[ServerEvent] = []
        if "tools" in kinds:
            events.append(ToolsListChanged())
        if "prompts" in kinds:
            events.append(PromptsListChanged())
        if kinds & {"resources", "resourceTemplates"}:
            events.append(ResourcesListChanged())
        for event in events:
            await self.bus.publish(event)
        if self._legacy and events:
            async with anyio.create_task_group() as tg:
                for connection in list(self._legacy):
                    tg.start_soon(_tell, connection, events)
        log.debug("list changed", scope=self.scope, kinds=sorted(kinds))


async def _tell(connection: Connection, events: list[ServerEvent]) -> None:
    with anyio.move_on_after(_ANNOUNCE_TIMEOUT):
        for event in events:
            if isinstance(event, ToolsListChanged):
                await connection.send_tool_list_changed()
            elif isinstance(event, PromptsListChanged):
                await connection.send_prompt_list_changed()
            else:
                await connection.send_resource_list_changed()
