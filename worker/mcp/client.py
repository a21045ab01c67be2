"""The SDK client side of the ``sdk`` kind (and of the remote kind's SDK baseline): one MCP
server, one session.

Theory of operation. :class:`McpClient` is everything about an MCP server that does not
depend on how its messages travel; a subclass supplies :meth:`McpClient._transport` (an async
context manager yielding the SDK's read and write streams) and says when the server has ended
(:attr:`McpClient.exited`). One runner task owns everything anyio: the transport and the SDK
:class:`ClientSession`, entered and left in that one task; it does the legacy ``initialize``
handshake (2025-11-25 era: what published servers speak) and the catalog is fetched (every
page). ``mcp`` requests arrive in the channel's tasks and go through the session: a cancelled
request makes the SDK send ``notifications/cancelled``; progress for a call comes back through
the SDK's per-request callback and goes out as the worker's ``progress`` with the caller's
token; a ``*/list_changed`` notification refetches the catalog and sends ``catalog`` when it
differs. Results are plain dicts: the SDK's result models dumped by alias, without None and
without fields the server did not send (so a 2025 consumer never sees defaults of later
revisions). MCP errors keep their code, message and data.

A subclass that sets :attr:`McpClient.forwards` (the ``sdk`` kind) gives the session
elicitation, sampling and roots callbacks, so the server sees those capabilities, and each
request of the server goes to the client of the call it belongs to (:mod:`worker.mcp.ask`).
Which call that is is known exactly: the call sets :data:`CALL` (a context variable) and the
SDK's in-memory streams carry the sender's context to the other side and back (its
``_context_streams``), so the callback runs in the context of the call whose handler asked.
A client's ``notifications/roots/list_changed`` (the worker's ``roots_changed`` [token]) is sent
to the server the same way, in a context whose :data:`CALL` is a stand-in call for that client
(:func:`worker.mcp.ask.roots_asking`, :data:`worker.protocol.ROOTS_WINDOW` seconds): the SDK
runs the server's notification handler in the sender's context, so a ``roots/list`` the server
sends from it goes to that client.
A catalog refetch clears it (it may be started from a notification the server sent while
serving a call): a list is never a client's call.

A kind that also reaches its server on the 2026-07-28 per-request path sets
:attr:`McpClient.modern`; a call whose ``meta`` carries a 2026-07-28 client's envelope goes
there, with that envelope, and its result (``input_required`` included) comes back as the
server sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any

import mcp_types as types
from mcp import ClientSession
from mcp.client._transport import TransportStreams
from mcp.client.session import ClientRequestContext
from mcp.shared.dispatcher import CallOptions, Dispatcher, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.log import say
from worker.mcp.ask import Asking, completed, no_call, roots_asking
from worker.mcp.publish import Catalog, CatalogPublisher, check_mcp_args
from worker.protocol import INTERNAL_ERROR, INVALID_PARAMS, PROGRESS, RESOURCE_UPDATED
from worker.rpc import RpcError

__all__ = ["CALL", "Catalog", "McpClient", "Streams", "dump"]

CALL: ContextVar[Asking | None] = ContextVar("spctl_call", default=None)
"""The client call being served in this context (see the module docstring)."""

Streams = TransportStreams
MAX_PAGES = 1000
MAX_INPUT_ROUNDS = 10
"""How many ``input_required`` rounds the worker answers for a 2025-11-25 client (the SDK's)."""
STOP_GRACE = 2.0
"""How long the session may take to end on close before its task is cancelled."""
# list method, catalog key, capability attribute of ServerCapabilities
LISTS = (
    ("tools/list", "tools", "tools"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resourceTemplates", "resources"),
    ("prompts/list", "prompts", "prompts"),
)
RESULTS: dict[str, type[BaseModel]] = {
    "tools/call": types.CallToolResult,
    "tools/list": types.ListToolsResult,
    "resources/list": types.ListResourcesResult,
    "resources/templates/list": types.ListResourceTemplatesResult,
    "resources/read": types.ReadResourceResult,
    "prompts/list": types.ListPromptsResult,
    "prompts/get": types.GetPromptResult,
    "completion/complete": types.CompleteResult,
}


_ENVELOPE = "io.modelcontextprotocol/"
"""The prefix of a 2026-07-28 request's envelope keys in ``_meta``."""


class AnyResult(types.Result):
    """The result of a method the SDK has no model for: whatever the server sent."""

    model_config = ConfigDict(**{**types.Result.model_config, "extra": "allow"})


_CHANGED = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)


def dump(model: BaseModel) -> Any:
    """An SDK model as plain JSON data: by alias, no None, only fields that were set."""
    return model.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")


class McpClient(CatalogPublisher):
    """An MCP server reached through the SDK's client session; see the module docstring."""

    label = "MCP server"
    """How messages name the server ("the stdio server exited …")."""
    forwards = False
    """Whether the server's elicitation/sampling/roots requests go to the call's client."""

    def __init__(self, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.exited: asyncio.Future[str] = self.loop.create_future()
        self.session: ClientSession | None = None
        self.info: types.InitializeResult | None = None
        self.modern: Dispatcher[Any] | None = None
        """The server's 2026-07-28 per-request path, when the kind offers one (``sdk``)."""
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.info is not None:
            meta["server"] = self.info.server_info.name
            meta["version"] = self.info.server_info.version
            meta["protocol"] = self.info.protocol_version
        return meta

    # -- what a subclass provides ---------------------------------------------------------

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        """The streams to the server, open for as long as the context is."""
        raise NotImplementedError

    def _session_ended(self, error: BaseException | None) -> None:
        """The runner is leaving (``error``: why, if it failed); nothing by default."""

    async def _reap(self) -> None:
        """After the session is closed on request: make sure the server is gone."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Catalog:
        """Connect, handshake and fetch the catalog. Raises if the server cannot get that far."""
        self._runner = self.loop.create_task(self._run())
        waiting: set[asyncio.Future[Any]] = {self._ready, self.exited}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            raise RuntimeError(f"the {self.label} {self.exited.result()} during the handshake")
        self._ready.result()  # the handshake's exception, if any
        self._catalog = await self.fetch_catalog()
        return self._catalog

    async def close(self) -> None:
        """Stop refetching and close the session; then :meth:`_reap` the server."""
        self.stop_publishing()
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._runner), STOP_GRACE)
        await self._reap()
        if self._runner is not None:
            self._runner.cancel()

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            async with (
                self._transport() as (read, write),
                ClientSession(
                    read,
                    write,
                    message_handler=self._on_message,
                    logging_callback=self._on_log,
                    **self._callbacks(),
                ) as session,
            ):
                self.info = await session.initialize()  # legacy: the 2025-11-25 era
                self.session = session
                self._ready.set_result(None)
                await self._stop.wait()
                self.session = None
        except BaseException as e:
            error = cause = _root(e)
            self.session = None
            if not self._ready.done():
                failed = cause if isinstance(cause, Exception) else RuntimeError(str(cause))
                self._ready.set_exception(failed)
            if not isinstance(e, Exception):
                raise
            if not self._closing:
                say(f"the session to the {self.label} ended: {type(cause).__name__}: {cause}")
        finally:
            self._session_ended(error)

    # -- catalog --------------------------------------------------------------------------

    async def _list(self, session: ClientSession, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            try:
                page: BaseModel
                if method == "tools/list":
                    page = await session.list_tools(params=params)
                elif method == "resources/list":
                    page = await session.list_resources(params=params)
                elif method == "resources/templates/list":
                    page = await session.list_resource_templates(params=params)
                else:
                    page = await session.list_prompts(params=params)
            except (MCPError, ValidationError) as e:
                say(f"{method} failed: {e}; keeping {len(items)} items")
                break
            items += dump(page).get(key, [])
            cursor = getattr(page, "next_cursor", None)
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
        return items

    async def fetch_catalog(self) -> Catalog:
        """The four lists, for the capabilities the server announced; a failing list is empty."""
        CALL.set(None)  # the fetching task's own context: a list is nobody's call
        catalog: Catalog = {"tools": [], "resources": [], "resourceTemplates": [], "prompts": []}
        session, info = self.session, self.info
        if session is None or info is None:
            return catalog
        for method, key, capability in LISTS:
            if getattr(info.capabilities, capability, None) is not None:
                catalog[key] = await self._list(session, method, key)
        return catalog

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, _CHANGED):
            self._changed()
        elif isinstance(message, types.ResourceUpdatedNotification):
            self.notify(RESOURCE_UPDATED, str(message.params.uri))
        elif isinstance(message, types.ElicitCompleteNotification) and self.forwards:
            completed(dump(message.params))  # to the client asked that URL-mode elicitation
        elif isinstance(message, Exception):
            say(f"{self.label} transport: {type(message).__name__}: {message}")

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        name = f" {params.logger}" if params.logger else ""
        say(f"server log [{params.level}]{name}: {params.data}")

    # -- the server's requests to the client ---------------------------------------------

    def _callbacks(self) -> dict[str, Any]:
        if not self.forwards:
            return {}
        return {
            "elicitation_callback": self._elicit,
            "sampling_callback": self._sample,
            "list_roots_callback": self._roots,
        }

    async def _elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        result = await self._ask("elicitation/create", dump(params), types.ElicitResult)
        assert isinstance(result, types.ElicitResult | types.ErrorData)
        return result

    async def _sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        model: type[BaseModel] = (
            types.CreateMessageResultWithTools if params.tools else types.CreateMessageResult
        )
        result = await self._ask("sampling/createMessage", dump(params), model)
        assert isinstance(
            result,
            types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData,
        )
        return result

    async def _roots(
        self, context: ClientRequestContext
    ) -> types.ListRootsResult | types.ErrorData:
        result = await self._ask("roots/list", None, types.ListRootsResult)
        assert isinstance(result, types.ListRootsResult | types.ErrorData)
        return result

    async def _ask(self, method: str, params: Any, model: type[BaseModel]) -> Any:
        """The client's answer to the server's ``method``, as the SDK model; ErrorData when
        it cannot be asked, refuses or answers badly."""
        asking = CALL.get()
        try:
            if asking is None:
                raise no_call(method)
            answer = await asking.ask(method, params)
            try:
                return model.model_validate(answer)
            except ValidationError as e:
                raise RpcError(INTERNAL_ERROR, f"the client's answer to {method}: {e}") from None
        except RpcError as e:
            say(f"the server's {method} was answered with an error: {e.message}")
            return types.ErrorData(code=e.code, message=e.message, data=e.data)

    # -- serving --------------------------------------------------------------------------

    def roots_changed(self, token: Any) -> Any:
        """The worker's ``roots_changed`` [token]: tell the server, in the stand-in call's
        context (see the module docstring). A coroutine (the channel runs it as a task)."""
        session = self.session
        if not self.forwards or self._closing or session is None:
            return None
        asking = roots_asking(token)
        if asking is None:
            return None

        async def tell() -> None:
            CALL.set(asking)  # this notification's task's own context
            try:
                await session.send_notification(types.RootsListChangedNotification())
            except Exception as e:  # the session ended meanwhile
                say(f"a client's roots/list_changed did not reach the server: {e}")

        return tell()

    async def mcp(
        self, method: str, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Any:
        """The ``mcp`` request: forwarded to the server. Raises RpcError with the MCP code."""
        check_mcp_args(method, params, meta)
        session = self.session
        if self._closing or session is None:
            raise RpcError(INTERNAL_ERROR, "the server is shutting down")
        if method in ("initialize", "notifications/initialized"):
            raise RpcError(INVALID_PARAMS, f"mcp: {method} is the worker's business")
        version = (meta or {}).get(PROTOCOL_VERSION_META_KEY)
        if self.modern is not None and version in MODERN_PROTOCOL_VERSIONS:
            return await self._modern_call(self.modern, method, params or {}, meta or {})
        if self.modern is not None and self._modern_only(method, params or {}):
            return await self._input_loop(self.modern, method, params or {}, meta or {})
        request = _request(method, params or {})
        token = (meta or {}).get("progressToken")
        if isinstance(token, bool) or not isinstance(token, str | int):
            token = None
        done = False

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if not done:
                self.notify(PROGRESS, token, progress, total, message)

        on_progress: ProgressFnT | None = None if token is None else report
        model = RESULTS.get(method, AnyResult)
        asking = Asking.of(method, meta)
        current = CALL.set(asking)
        try:
            result = await session.send_request(request, model, progress_callback=on_progress)
        except MCPError as e:
            raise RpcError(e.code, e.message, e.data) from None
        except ValidationError as e:
            raise RpcError(INTERNAL_ERROR, f"bad {method} result from the server: {e}") from None
        finally:
            done = True
            CALL.reset(current)
            asking.end()
        return dump(result)

    async def _modern_call(
        self, modern: Dispatcher[Any], method: str, params: dict[str, Any], meta: dict[str, Any]
    ) -> Any:
        """A 2026-07-28 client's request on the server's 2026-07-28 path: the client's own
        envelope (version, info, capabilities) and params as sent — a retry's
        ``inputResponses`` and ``requestState`` too — and the result as the server answered,
        ``input_required`` with its ``inputRequests`` and ``requestState`` included."""
        envelope = {k: v for k, v in meta.items() if k.startswith(_ENVELOPE)}
        opts: CallOptions = {}
        token = meta.get("progressToken")
        if not isinstance(token, bool) and isinstance(token, str | int):

            async def report(progress: float, total: float | None, message: str | None) -> None:
                self.notify(PROGRESS, token, progress, total, message)

            opts["on_progress"] = report
        try:
            return await modern.send_raw_request(method, {**params, "_meta": envelope}, opts)
        except MCPError as e:
            raise RpcError(e.code, e.message, e.data) from None

    def _modern_only(self, method: str, params: dict[str, Any]) -> bool:
        """Whether the server can serve this request only in 2026-07-28 (it answers
        ``input_required``, which a 2025-11-25 session cannot carry); a kind tells."""
        return False

    async def _input_loop(
        self, modern: Dispatcher[Any], method: str, params: dict[str, Any], meta: dict[str, Any]
    ) -> Any:
        """A 2025-11-25 client's request to what only a 2026-07-28 server answers: sent on
        the 2026-07-28 path with the client's capabilities, each ``input_required`` answered
        by asking the client on its call's stream, and retried, for at most
        :data:`MAX_INPUT_ROUNDS` rounds."""
        asking = Asking.of(method, meta)
        envelope: dict[str, Any] = {
            PROTOCOL_VERSION_META_KEY: MODERN_PROTOCOL_VERSIONS[-1],
            CLIENT_CAPABILITIES_META_KEY: dict(asking.capabilities),  # what the client declared
        }
        if "progressToken" in meta:
            envelope["progressToken"] = meta["progressToken"]
        sent = params
        try:
            for rounds in range(MAX_INPUT_ROUNDS + 1):
                result = await self._modern_call(modern, method, sent, envelope)
                if not isinstance(result, dict) or result.get("resultType") != "input_required":
                    return result
                if rounds == MAX_INPUT_ROUNDS:
                    break
                asked = result.get("inputRequests")
                responses = {}
                for key, request in (asked if isinstance(asked, dict) else {}).items():
                    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                        raise RpcError(INTERNAL_ERROR, f"bad input request from the server: {key}")
                    responses[key] = await asking.ask(request["method"], request.get("params"))
                sent = {**params, "inputResponses": responses}
                if result.get("requestState") is not None:
                    sent["requestState"] = result["requestState"]
        finally:
            asking.end()
        raise RpcError(
            INTERNAL_ERROR,
            f"the {self.label} still asked for input after {MAX_INPUT_ROUNDS} rounds: given up",
        )


def _root(exc: BaseException) -> BaseException:
    """The one exception a task group wrapped (anyio groups even a single failure)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _request_classes() -> dict[str, type[types.Request[Any, Any]]]:
    """method name → the SDK's request model, from the ClientRequest union."""
    out: dict[str, type[types.Request[Any, Any]]] = {}
    for arm in getattr(types.ClientRequest, "__args__", ()):
        annotation = arm.model_fields["method"].annotation
        for name in getattr(annotation, "__args__", ()):
            out[name] = arm
    return out


REQUESTS = _request_classes()


def _request(method: str, params: dict[str, Any]) -> types.Request[Any, Any]:
    """The SDK's typed request for a known method, a generic one for any other."""
    cls = REQUESTS.get(method)
    if cls is None:
        return types.Request[dict[str, Any] | None, str](method=method, params=params or None)
    try:
        request: types.Request[Any, Any] = cls.model_validate(
            {"method": method, "params": params} if params else {"method": method}
        )
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:3]
        )
        raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {problems}") from None
    return request
