"""What extension authors import from spctl: keep it tiny and dependency-free.

A daemon module is any object with ``start``, ``stop`` and ``is_running`` (each sync or
async), and optionally ``initialize`` and ``shutdown``, returned by ``create_module(config)``
or defined as one class in the extension. Sync methods run in a thread, async ones on the
worker's event loop. The Protocols below are for type checkers only; nothing has to inherit.

An MCP server extension (kind ``handler``) is a module with ``create_handler(config)``
returning a callable ``(method, params) -> result``; ``docs/extensions/`` documents each kind
and this API. From inside a call, a handler may raise :class:`McpError` (a protocol error with
its code), report progress with :func:`report_progress`, and read the request's ``_meta`` with
:func:`request_meta`; at any time (any thread) it may say its lists changed with
:func:`tools_changed` (or :func:`resources_changed`, :func:`prompts_changed`: each refetches the
whole catalog).

Processes an extension starts should go through :func:`spawn_argv`, so they die when the
worker dies (see :mod:`worker.trampoline`)::

    subprocess.Popen(spawn_argv(["node", "server.js"]))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

# JSON-RPC / MCP error codes a handler commonly raises (INVALID_PARAMS is also MCP's
# "Unknown tool"); defined in worker.protocol.
from worker.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    RESOURCE_NOT_FOUND,
)
from worker.trampoline import trampoline_argv as spawn_argv

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "RESOURCE_NOT_FOUND",
    "DaemonModule",
    "FullDaemonModule",
    "McpError",
    "McpHandler",
    "ServiceError",
    "call_service",
    "call_service_sync",
    "catalog_changed",
    "prompts_changed",
    "report_progress",
    "request_meta",
    "resource_updated",
    "resources_changed",
    "spawn_argv",
    "tools_changed",
]


@runtime_checkable
class DaemonModule(Protocol):
    """The required part of the seed's DaemonModule."""

    def start(self) -> Awaitable[None] | None: ...

    def stop(self) -> Awaitable[None] | None: ...

    def is_running(self) -> Awaitable[bool] | bool: ...


@runtime_checkable
class FullDaemonModule(DaemonModule, Protocol):
    """A DaemonModule with the optional lifecycle hooks too."""

    def initialize(self) -> Awaitable[None] | None: ...

    def shutdown(self) -> Awaitable[None] | None: ...


# -- MCP server extensions (kind "handler") ------------------------------------------------

McpHandler = Callable[[str, dict[str, Any]], Any]
"""What ``create_handler(config)`` returns: ``(method, params) -> result``, sync or async."""


class McpError(Exception):
    """Raise from a handler to answer with an MCP protocol error ``{code, message, data}``.

    The worker passes the code through unchanged (``INVALID_PARAMS`` for an unknown tool,
    ``METHOD_NOT_FOUND`` for an unsupported method, ``RESOURCE_NOT_FOUND``…). Any other
    exception from ``tools/call`` becomes a tool result with ``isError: true``; from another
    method, an ``INTERNAL_ERROR``.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class CallContext(Protocol):
    """What the worker puts in :data:`CURRENT_CALL` for the duration of one ``mcp`` call."""

    @property
    def meta(self) -> Mapping[str, Any]: ...

    def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> bool: ...


CURRENT_CALL: ContextVar[CallContext | None] = ContextVar("spctl_current_call", default=None)
"""Set by the worker around each call; copied into the thread of a sync handler."""


class ServiceError(Exception):
    """A service call failed: ``code`` is one of :mod:`worker.protocol`'s (-32601
    METHOD_NOT_FOUND: no such service or method, -32602 INVALID_PARAMS: bad arguments, -32000
    SERVICE_ERROR: the method raised, -32011 REFUSED: the provider is not running, -32001
    TIMEOUT: no answer in time) and ``message`` says which and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


ServiceCaller = Callable[[str, Any, float | None], Coroutine[Any, Any, Any]]
_service_caller: tuple[ServiceCaller, asyncio.AbstractEventLoop] | None = None


def set_service_caller(caller: ServiceCaller | None) -> None:
    """For the worker: how :func:`call_service` reaches the supervisor (on this loop)."""
    global _service_caller
    _service_caller = None if caller is None else (caller, asyncio.get_running_loop())


async def call_service(name: str, params: Any = None, *, timeout: float | None = None) -> Any:
    """Call ``"<service>.<method>"`` of the plugin module that provides the service, through
    the supervisor; its result. ``params``: a map (keyword arguments), a list (positional) or
    None. Raises ServiceError (including outside a worker: no supervisor to ask)."""
    if _service_caller is None:
        raise ServiceError(-32603, "call_service works only inside an spctl worker")
    caller, _ = _service_caller
    return await caller(name, params, timeout)


def call_service_sync(name: str, params: Any = None, *, timeout: float | None = None) -> Any:
    """:func:`call_service` for sync code running in a thread (a sync handler or daemon
    method); never call it from the worker's event loop itself (it would wait on itself)."""
    if _service_caller is None:
        raise ServiceError(-32603, "call_service works only inside an spctl worker")
    caller, loop = _service_caller
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise ServiceError(
            -32603, "call_service_sync called on the worker's loop: await call_service"
        )
    return asyncio.run_coroutine_threadsafe(caller(name, params, timeout), loop).result()


_catalog_listener: Callable[[], None] | None = None
_resource_listener: Callable[[str], None] | None = None


def set_catalog_listener(listener: Callable[[], None] | None) -> None:
    """For the worker: the thread-safe callable :func:`catalog_changed` invokes."""
    global _catalog_listener
    _catalog_listener = listener


def set_resource_listener(listener: Callable[[str], None] | None) -> None:
    """For the worker: the thread-safe callable :func:`resource_updated` invokes."""
    global _resource_listener
    _resource_listener = listener


def resource_updated(uri: str) -> None:
    """MCP ``notifications/resources/updated``: the resource at ``uri`` changed. The clients
    subscribed to it are told (spctl keeps the subscriptions; a ``resources/subscribe`` still
    reaches the handler, which may answer or refuse it). Callable from any thread; a no-op
    outside a worker. Raises TypeError when ``uri`` is not a string."""
    if not isinstance(uri, str):
        raise TypeError(f"resource_updated: uri must be a string, not {type(uri).__name__}")
    listener = _resource_listener
    if listener is not None:
        listener(uri)


def report_progress(
    progress: float, total: float | None = None, message: str | None = None
) -> bool:
    """Report progress of the current call; False when nobody asked for it (no progressToken).

    Works from an async handler (its task) and from a sync handler (its thread, or any code
    that runs in a copy of its context). ``progress`` should increase with each report. After
    the call has ended (answered or cancelled) reports are dropped. Raises TypeError when
    ``progress``/``total`` are not numbers.
    """
    call = CURRENT_CALL.get()
    if call is None:
        return False
    return call.report_progress(progress, total, message)


def request_meta() -> Mapping[str, Any]:
    """The ``_meta`` of the current call (``progressToken``…); empty outside a call."""
    call = CURRENT_CALL.get()
    return {} if call is None else call.meta


def catalog_changed() -> None:
    """Say the tool/resource/prompt lists changed: the worker refetches them and, if they
    differ, tells the supervisor (MCP's ``list_changed``). Callable from any thread; a no-op
    outside a worker."""
    listener = _catalog_listener
    if listener is not None:
        listener()


def tools_changed() -> None:
    """MCP ``notifications/tools/list_changed``: same as :func:`catalog_changed`."""
    catalog_changed()


def resources_changed() -> None:
    """MCP ``notifications/resources/list_changed``: same as :func:`catalog_changed`."""
    catalog_changed()


def prompts_changed() -> None:
    """MCP ``notifications/prompts/list_changed``: same as :func:`catalog_changed`."""
    catalog_changed()
