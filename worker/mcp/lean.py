"""The MCP client the ``stdio`` and ``remote`` kinds forward with: handshake, catalog, ``mcp``
calls — no SDK.

Theory of operation. :class:`LeanClient` is an MCP client session over a :class:`LinePeer`
(JSON-RPC 2.0 a line, :mod:`worker.mcp.jsonrpc`; or, from ``_new_peer``, a peer that frames
otherwise: :mod:`worker.mcp.http_peer` for remote servers); a subclass supplies the transport
(``_connect``, ``_write``, ``_disconnect``) and resolves :attr:`LeanClient.exited` when the
server has ended. :meth:`LeanClient.start` does the ``initialize`` handshake of the 2025-11-25
era (what published servers speak; the version the server answers is accepted and recorded),
sends ``notifications/initialized`` and fetches the catalog: every page of each list whose
capability the server announced. ``mcp`` requests are forwarded as they come (params as
given; of the caller's ``meta`` only a ``progressToken`` counts) and the result goes back as
the plain JSON the server sent; its JSON-RPC errors keep their code, message and data. A
cancelled ``mcp`` call sends ``notifications/cancelled``; progress for a call goes out as the
worker's ``progress`` under the caller's token; ``*/list_changed`` refetches the catalog and
sends ``catalog`` when it differs (:class:`CatalogPublisher`); ``notifications/message`` is
logged. A subclass that sets :attr:`LeanClient.forwards` (the ``stdio`` and ``remote`` kinds)
declares elicitation, sampling and roots in ``initialize`` and forwards the server's requests
for them to the client of the call they belong to (:mod:`worker.mcp.ask`); each call is sent
with its :class:`Asking` as the peer's tag. Which call that is, :meth:`LeanClient._asking_call`
says: a line has no request id to tie it to a call, so it is the only call in flight, and with
several the server is answered with an error; the ``remote`` kind knows exactly (the POST
whose event stream carried the request). A 2026-07-28 client's call has no back channel: its
questions are parked and asked as ``input_required`` (:mod:`worker.mcp.park`). A client's
``notifications/roots/list_changed`` (the worker's ``roots_changed`` [token]) is sent on to the
server (a line; a POST for the ``remote`` kind), and the server's ``roots/list`` outside any
call then goes to that client for :data:`worker.protocol.ROOTS_WINDOW` seconds
(:func:`worker.mcp.ask.roots_asking`; the latest such client wins).

It does what :class:`worker.mcp.client.McpClient` does for the ``sdk`` kind, without the
SDK's models: importing the SDK costs a worker ~1.5 s of CPU and ~40 MB, and a forwarded call
needs none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from worker.log import say
from worker.mcp.ask import (
    CAPABILITY,
    ELICITATION_COMPLETE,
    OFFERED,
    ROOTS_CHANGED_METHOD,
    Asking,
    ambiguous,
    completed,
    no_call,
    roots_asking,
)
from worker.mcp.jsonrpc import LinePeer, Progress
from worker.mcp.park import INPUT_METHODS, PARK_TTL, Exchange, Parking, Seal, is_modern
from worker.mcp.publish import Catalog, CatalogPublisher, check_mcp_args, empty_catalog
from worker.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    PROGRESS,
    RESOURCE_UPDATED,
)
from worker.rpc import RpcError

__all__ = ["CLIENT_INFO", "MAX_PAGES", "PROTOCOL_VERSION", "STOP_GRACE", "LeanClient"]

PROTOCOL_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "spctl", "version": "0.1.0"}
"""Who we are in ``initialize`` (the version is spctl's: the worker never imports
``supervisor``, so it is repeated here; a unit test keeps the two equal)."""
MAX_PAGES = 1000
STOP_GRACE = 2.0
"""How long a server may take to exit once its stdin is closed, before SIGKILL."""
# list method, catalog key, capability, the field every item must have
LISTS = (
    ("tools/list", "tools", "tools", "name"),
    ("resources/list", "resources", "resources", "uri"),
    ("resources/templates/list", "resourceTemplates", "resources", "uriTemplate"),
    ("prompts/list", "prompts", "prompts", "name"),
)
CHANGED = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
    }
)
# The params of the client requests MCP defines: field → (JSON types, required). A bad call is
# refused here, as the SDK's request models did, instead of reaching the server.
_OBJ, _STR = (dict,), (str,)
PARAMS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "tools/call": {"name": (_STR, True), "arguments": (_OBJ, False)},
    "resources/read": {"uri": (_STR, True)},
    "resources/subscribe": {"uri": (_STR, True)},
    "resources/unsubscribe": {"uri": (_STR, True)},
    "prompts/get": {"name": (_STR, True), "arguments": (_OBJ, False)},
    "completion/complete": {"ref": (_OBJ, True), "argument": (_OBJ, True)},
    "logging/setLevel": {"level": (_STR, True)},
    **{method: {"cursor": (_STR, False)} for method, *_ in LISTS},
}


def check_params(method: str, params: dict[str, Any]) -> None:
    """Refuse params MCP's schema rejects for a known method; raises RpcError(INVALID_PARAMS)."""
    fields = PARAMS.get(method)
    if fields is None:
        return
    problems = []
    for name, (types, required) in fields.items():
        value = params.get(name)
        if value is None:
            if required:
                problems.append(f"{name}: Field required")
        elif not isinstance(value, types):
            problems.append(f"{name}: must be {'a string' if types is _STR else 'an object'}")
    if problems:
        raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {'; '.join(problems)}")


class LeanClient(CatalogPublisher):
    """An MCP server reached over JSON-RPC lines; see the module docstring."""

    label = "MCP server"
    """How messages name the server ("the stdio server exited …")."""
    forwards = False
    """Whether the server's elicitation/sampling/roots requests go to the call's client."""

    def __init__(self, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.exited: asyncio.Future[str] = self.loop.create_future()
        """How the server ended, for the host (whose cancelled wait may cancel it)."""
        self._gone: asyncio.Future[str] = self.loop.create_future()  # the same, ours alone
        self.peer = self._new_peer()
        self._calls: list[Asking] = []  # the client calls in flight, oldest first
        self._forwarding: set[asyncio.Task[None]] = set()
        self._exchanges: dict[int, Exchange] = {}  # parked for a 2026-07-28 client's retry
        self._seal = Seal()
        self._roots_asking: Asking | None = None  # the latest client whose roots changed
        if self.forwards:
            self.peer.on_request = self._server_request
        self.info: dict[str, Any] | None = None
        """The server's ``initialize`` result, once the handshake is done."""

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.info is not None:
            server = self.info.get("serverInfo")
            if isinstance(server, dict):
                meta["server"] = server.get("name")
                meta["version"] = server.get("version")
            meta["protocol"] = self.info.get("protocolVersion")
        return meta

    # -- what a subclass provides ---------------------------------------------------------

    def _new_peer(self) -> LinePeer:
        """The JSON-RPC peer: lines through :meth:`_write` unless a subclass frames otherwise."""
        return LinePeer(self._write, self._on_notification, self.label)

    async def _connect(self) -> None:
        """Open the transport (spawn the server)."""
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        """Queue ``data`` (whole lines) to the server; never blocks."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Ask the server to end, make sure it does, and fail what is still pending."""

    def _negotiated(self, version: str) -> None:
        """The handshake settled on ``version`` (before ``notifications/initialized``)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Catalog:
        """Connect, handshake and fetch the catalog. Raises if the server cannot get that far
        (no timeout of its own: the supervisor's start timeout ends a worker that hangs here)."""
        await self._connect()
        handshake = self.loop.create_task(self._handshake())
        waiting: set[asyncio.Future[Any]] = {handshake, self._gone}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._gone.done() and (not handshake.done() or handshake.exception() is not None):
            handshake.cancel()
            raise RuntimeError(f"the {self.label} {self._gone.result()} during the handshake")
        handshake.result()  # the handshake's exception, if any
        self._catalog = await self.fetch_catalog()
        return self._catalog

    async def close(self) -> None:
        """Stop refetching, then end the server (:meth:`_disconnect`)."""
        self.stop_publishing()
        await self._disconnect()

    @property
    def how_ended(self) -> str | None:
        """How the server ended ("exited with status 1"), None while it runs."""
        return self._gone.result() if self._gone.done() else None

    def _server_ended(self, how: str) -> bool:
        """Record the server's end (for a subclass); False if it was recorded already."""
        if self._gone.done():
            return False
        self._gone.set_result(how)
        if not self.exited.done():
            self.exited.set_result(how)
        return True

    async def _handshake(self) -> None:
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": dict(OFFERED) if self.forwards else {},
            "clientInfo": CLIENT_INFO,
        }
        result = await self.peer.request("initialize", params, cancellable=False)
        if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
            raise RuntimeError(f"bad initialize result from the {self.label}: {result!r:.300}")
        self.info = result
        self._negotiated(result["protocolVersion"])
        self.peer.notify("notifications/initialized")

    # -- catalog --------------------------------------------------------------------------

    async def fetch_catalog(self) -> Catalog:
        """The four lists, for the capabilities the server announced; a failing list keeps
        the pages it got."""
        catalog = empty_catalog()
        capabilities = self.info.get("capabilities") if self.info is not None else None
        if not isinstance(capabilities, dict):
            return catalog
        for method, key, capability, field in LISTS:
            if capabilities.get(capability) is not None:
                catalog[key] = await self._list(method, key, field)
        return catalog

    async def _list(self, method: str, key: str, field: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            try:
                page = await self.peer.request(method, {"cursor": cursor} if cursor else None)
            except RpcError as e:
                say(f"{method} failed: {e}; keeping {len(items)} items")
                break
            got = page.get(key) if isinstance(page, dict) else None
            if not isinstance(got, list):
                say(f"bad {method} result from the {self.label}; keeping {len(items)} items")
                break
            for item in got:
                if isinstance(item, dict) and isinstance(item.get(field), str):
                    # no nulls: as the SDK's dumps (exclude_none) gave the supervisor
                    items.append({k: v for k, v in item.items() if v is not None})
                else:
                    say(f"{method}: skipped an item without a {field}: {item!r:.200}")
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                break
            seen.add(cursor)
        return items

    def _on_notification(self, method: str, params: Any) -> None:
        if method in CHANGED:
            self._changed()
        elif method == "notifications/resources/updated" and isinstance(params, dict):
            uri = params.get("uri")
            if isinstance(uri, str):
                self.notify(RESOURCE_UPDATED, uri)  # to the clients subscribed to it
        elif method == ELICITATION_COMPLETE and self.forwards:
            completed(params)  # to the client asked that URL-mode elicitation
        elif method == "notifications/message" and isinstance(params, dict):
            logger = params.get("logger")
            name = f" {logger}" if logger else ""
            say(f"server log [{params.get('level')}]{name}: {params.get('data')}")

    # -- serving --------------------------------------------------------------------------

    async def mcp(
        self, method: str, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Any:
        """The ``mcp`` request: forwarded to the server. Raises RpcError with the MCP code, or
        naming how the server ended if it ends first."""
        check_mcp_args(method, params, meta)
        if self._closing or self.info is None:
            raise RpcError(INTERNAL_ERROR, "the server is shutting down")
        if method in ("initialize", "notifications/initialized"):
            raise RpcError(INVALID_PARAMS, f"mcp: {method} is the worker's business")
        check_params(method, params or {})
        report: Progress | None = None
        # Of the caller's meta only the progress token is the server's business: the rest is
        # the front's (a 2026-07-28 client's envelope, which a server that did the handshake
        # refuses). The token on the wire is the request id (as the SDK does): unique per call.
        token = meta.get("progressToken") if meta else None
        if not isinstance(token, bool) and isinstance(token, str | int):
            report = self._reporter(token)
        if self.forwards and method in INPUT_METHODS and is_modern(meta):
            assert meta is not None
            return await self._modern(method, params or {}, meta, report)
        asking = Asking.of(method, meta)
        self._calls.append(asking)
        try:
            result = await self.peer.request(method, params, report, tag=asking)
        finally:
            self._calls.remove(asking)
            asking.end()
        if not isinstance(result, dict):
            raise RpcError(
                INTERNAL_ERROR, f"bad {method} result from the {self.label}: {result!r:.200}"
            )
        return result

    def roots_changed(self, token: Any) -> None:
        """The worker's ``roots_changed`` [token]: a client's roots changed; tell the server
        (it may then ask that client ``roots/list``, see the module docstring)."""
        if not self.forwards or self._closing or self.info is None:
            return
        asking = roots_asking(token)
        if asking is None:
            return
        if self._roots_asking is not None:
            self._roots_asking.end()
        self._roots_asking = asking
        self.peer.notify(ROOTS_CHANGED_METHOD)

    def _roots_after_change(self, method: str) -> Asking | None:
        """The client a ``roots/list`` outside any call goes to, if one's roots changed."""
        return self._roots_asking if method == "roots/list" else None

    # -- a 2026-07-28 client: the server's questions are parked (worker.mcp.park) ----------

    async def _modern(
        self, method: str, params: dict[str, Any], meta: dict[str, Any], report: Progress | None
    ) -> Any:
        """A 2026-07-28 client's call, or its retry: the server's result, or its next
        question as ``input_required``."""
        name = params.get("uri" if method == "resources/read" else "name")
        who = meta.get("client")  # the front's client token name, when it has tokens
        client = who if isinstance(who, str) else ""
        if "requestState" in params or "inputResponses" in params:
            claims = self._seal.open(params.get("requestState"))
            exchange = self._exchanges.pop(claims.get("x"), None)  # type: ignore[arg-type]
            if exchange is None or (claims.get("m"), claims.get("n"), claims.get("c")) != (
                method,
                name,
                client,
            ):
                if exchange is not None:  # not this call's: it stays parked for its own
                    self._exchanges[exchange.id] = exchange
                raise RpcError(INVALID_PARAMS, "Invalid or expired requestState")
            if exchange.expiry is not None:
                exchange.expiry.cancel()
            exchange.deliver(params.get("inputResponses"))
        else:
            parking = Parking.modern(method, meta)
            call = self.loop.create_task(self.peer.request(method, params, report, tag=parking))
            exchange = Exchange(parking, call, method, str(name), client)
            self._calls.append(parking)
            call.add_done_callback(lambda _: self._exchange_over(exchange))
        try:
            outcome, done = await exchange.next()
        except BaseException:  # the client gave up (cancelled), or the call failed
            if not exchange.call.done():
                exchange.cancel()
            raise
        if done:
            if not isinstance(outcome, dict):
                raise RpcError(
                    INTERNAL_ERROR, f"bad {method} result from the {self.label}: {outcome!r:.200}"
                )
            return outcome
        key, asked, asked_params = outcome
        self._exchanges[exchange.id] = exchange
        exchange.expiry = self.loop.call_later(PARK_TTL, exchange.cancel)
        request: dict[str, Any] = {"method": asked}
        if asked_params is not None:
            request["params"] = asked_params
        return {
            "resultType": "input_required",
            "inputRequests": {key: request},
            "requestState": self._seal.close(exchange.claims(PARK_TTL)),
        }

    def _exchange_over(self, exchange: Exchange) -> None:
        with contextlib.suppress(ValueError):
            self._calls.remove(exchange.parking)
        exchange.parking.end()
        if self._exchanges.get(exchange.id) is exchange:
            del self._exchanges[exchange.id]
        if exchange.expiry is not None:
            exchange.expiry.cancel()
        if not exchange.call.cancelled():
            exchange.call.exception()  # retrieved: a failure nobody awaits is no warning

    def _server_request(self, rid: Any, method: str, params: Any) -> None:
        """The server asks its client something: to the client of the call it belongs to."""
        if method not in CAPABILITY:
            self.peer.respond(rid, error=RpcError(METHOD_NOT_FOUND, f"Method not found: {method}"))
            return
        asking = self._asking_call(method)
        refusal = asking if isinstance(asking, RpcError) else asking.refusal(method, params)
        if refusal is not None:
            say(f"refused the server's {method}: {refusal.message}")
            self.peer.respond(rid, error=refusal)
            return
        assert isinstance(asking, Asking)
        task = self.loop.create_task(self._forward(asking, rid, method, params))
        self._forwarding.add(task)
        task.add_done_callback(self._forwarding.discard)

    def _asking_call(self, method: str) -> Asking | RpcError:
        """The call the server's request (being handled now) belongs to, or why none can be
        told. A line carries no context: the only call in flight (a subclass whose transport
        tells more knows exactly)."""
        calls = self._calls
        if not calls:
            return self._roots_after_change(method) or no_call(method)
        if len(calls) > 1 or self.peer.pending > 1:
            return ambiguous(method, max(len(calls), self.peer.pending))
        return calls[0]

    async def _forward(self, asking: Asking, rid: Any, method: str, params: Any) -> None:
        try:
            result = await asking.ask(method, params)
        except RpcError as e:
            self.peer.respond(rid, error=e)
        else:
            self.peer.respond(rid, result)

    def _reporter(self, token: str | int) -> Progress:
        def report(progress: float, total: float | None, message: str | None) -> None:
            self.notify(PROGRESS, token, progress, total, message)

        return report
