"""The handler kind: an MCP server written as ``create_handler(config)`` → ``(method, params)``.

Theory of operation. :func:`load_handler` finds ``create_handler`` (sync or async) and the
module's ``metadata``; a missing factory, a factory that returns no callable or bad metadata is
a :class:`LoadError`. :class:`McpServer` then fetches the catalog by calling the handler with
the four list methods (:mod:`worker.kinds.handler_data`, which also turns shorthand results
into MCP results) and serves the supervisor's ``mcp(method, params, meta)`` requests.

Each ``mcp`` request runs in the task the channel gives it: an async handler is awaited there,
so the channel's ``$cancel`` raises CancelledError inside it; a sync handler runs in a thread
(``asyncio.to_thread``) that cannot be interrupted, so a cancelled sync call runs on and its
result is discarded. A :class:`CallContext` in :data:`worker.api.CURRENT_CALL` (copied into
the thread) carries the progress token; ``report_progress`` from any thread reaches the loop
through ``call_soon_threadsafe``, so reports keep their order and precede the answer.
``catalog_changed()`` marks the catalog dirty; one refetch task at a time runs until it is
clean and sends ``catalog`` only when the lists differ from what the supervisor last saw.

As a :class:`~worker.kinds.base.Kind`, :class:`HandlerKind` runs the module's ``initialize``,
fetches the catalog and serves ``mcp`` until ``shutdown``, which cancels the calls in flight
and then runs the module's ``shutdown``. A package with no ``create_handler`` but an SDK
server object (:func:`sdk_attribute`) is handed to :mod:`worker.kinds.sdk` by :func:`load`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from worker import api
from worker.kinds.base import Kind, Notify, Verdict
from worker.kinds.daemon import call_hook
from worker.kinds.handler_data import fetch_catalog, normalise, text_block
from worker.loader import (
    SDK_EXPECTED,
    LoadError,
    Metadata,
    check_metadata,
    import_extension,
    sdk_attribute,
)
from worker.log import say
from worker.mcp.publish import Catalog, CatalogPublisher, check_mcp_args
from worker.protocol import EXIT_OK, INTERNAL_ERROR, MCP, PROGRESS, RESOURCE_UPDATED, BootSpec
from worker.rpc import RpcError

__all__ = [
    "CALL_THREADS",
    "CallContext",
    "Handler",
    "HandlerKind",
    "McpServer",
    "fetch_catalog",
    "load",
    "load_handler",
    "normalise",
    "use_call_threads",
]

CALL_THREADS = 32
"""Threads for sync calls: a cancelled sync call keeps its thread until it returns."""
CLOSE_TIMEOUT = 2.0
"""How long ``shutdown`` waits for cancelled calls to unwind before the module's shutdown()."""


def use_call_threads(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``to_thread`` more threads than asyncio's default (cpus + 4) for slow sync tools."""
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="spctl-call")
    )


@dataclass(frozen=True)
class Handler:
    """A loaded handler callable, its module (for the hooks) and validated metadata."""

    fn: Callable[[str, dict[str, Any]], Any]
    module: ModuleType
    metadata: Metadata
    is_async: bool

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One call: awaited on the loop (async) or run in a thread (sync); a sync handler
        that returns an awaitable has it awaited on the loop."""
        if self.is_async:
            result = self.fn(method, params)
        else:
            result = await asyncio.to_thread(self.fn, method, params)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def hook(self, name: str) -> None:
        """Run the module's optional ``initialize``/``shutdown`` (sync or async)."""
        fn = getattr(self.module, name, None)
        if callable(fn):
            await call_hook(fn)

    @property
    def capabilities(self) -> list[str]:
        caps = self.metadata.get("capabilities")
        return [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else []


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
    )


def _metadata(name: str, module: ModuleType, where: str) -> Metadata:
    declared = getattr(module, "metadata", None)
    if declared is None:
        return {"name": name}
    meta = check_metadata(declared, where)
    for key in ("name", "version", "description"):
        if key in meta and not isinstance(meta[key], str):
            raise LoadError(f"bad metadata in {where}: {key!r} must be a string")
    caps = meta.get("capabilities")
    if caps is not None and not (isinstance(caps, list) and all(isinstance(c, str) for c in caps)):
        raise LoadError(f"bad metadata in {where}: 'capabilities' must be a list of strings")
    return meta


async def load_handler(
    name: str, module: ModuleType, config: Mapping[str, Any], where: str
) -> Handler:
    """Call the module's ``create_handler(config)`` and check what it returns.

    Raises LoadError (no factory, a non-callable result, bad metadata); lets the factory's own
    exceptions propagate (the caller reports both as a load error).
    """
    factory = getattr(module, "create_handler", None)
    if not callable(factory):
        raise LoadError(
            f"no create_handler(config) found in {where}, nor an MCP SDK server object"
            f" ({SDK_EXPECTED})"
        )
    meta = _metadata(name, module, where)
    fn = factory(config)
    if inspect.isawaitable(fn):
        fn = await fn
    if not callable(fn):
        raise LoadError(
            f"create_handler() in {where} returned {type(fn).__name__!r}, which is not callable"
        )
    return Handler(fn=fn, module=module, metadata=meta, is_async=_is_async(fn))


# -- serving --------------------------------------------------------------------------------


class CallContext:
    """One ``mcp`` call's context (see :class:`worker.api.CallContext`)."""

    __slots__ = ("_server", "done", "meta", "token")

    def __init__(self, server: McpServer, meta: Mapping[str, Any]) -> None:
        token = meta.get("progressToken")
        self.meta = meta
        self.token = token if isinstance(token, str | int) and not isinstance(token, bool) else None
        self.done = False
        self._server = server

    def report_progress(self, progress: float, total: float | None, message: str | None) -> bool:
        for value in (progress, total if total is not None else 0):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"progress and total must be numbers, not {value!r}")
        if self.token is None or self.done:
            return False
        text = None if message is None else str(message)
        server = self._server
        if threading.get_ident() == server.loop_thread:
            self._deliver(progress, total, text)
            return True
        try:
            server.loop.call_soon_threadsafe(self._deliver, progress, total, text)
        except RuntimeError:  # the loop is closed: the worker is ending
            return False
        return True

    def _deliver(self, progress: float, total: float | None, message: str | None) -> None:
        if not self.done:  # a report from a thread that arrives after the answer is dropped
            self._server.notify(PROGRESS, self.token, progress, total, message)


class McpServer(CatalogPublisher):
    """Serves ``mcp`` requests for one handler and keeps the supervisor's catalog current."""

    def __init__(self, handler: Handler, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.handler = handler
        self.loop_thread = threading.get_ident()
        self._calls: set[asyncio.Task[Any]] = set()

    async def fetch_catalog(self) -> Catalog:
        return await fetch_catalog(self.handler)

    async def start(self) -> Catalog:
        """Listen for catalog changes and fetch the catalog that ``ready`` carries."""
        api.set_catalog_listener(self._changed_threadsafe)
        api.set_resource_listener(self._updated_threadsafe)
        self._dirty = False
        self._catalog = await self.fetch_catalog()
        return self._catalog

    async def close(self) -> None:
        """Refuse new calls, stop refetching, cancel calls in flight and let them unwind."""
        self._closing = True
        api.set_catalog_listener(None)
        api.set_resource_listener(None)
        tasks = [t for t in (self._refetch, *self._calls) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)

    def _updated_threadsafe(self, uri: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is ending
            self.loop.call_soon_threadsafe(self.notify, RESOURCE_UPDATED, uri)

    def _changed_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is ending
            self.loop.call_soon_threadsafe(self._changed)

    async def mcp(
        self, method: str, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Any:
        """The ``mcp`` request: one MCP call. Raises RpcError with the MCP error code."""
        check_mcp_args(method, params, meta)
        if self._closing:
            raise RpcError(INTERNAL_ERROR, "the server is shutting down")
        params = {} if params is None else params
        call = CallContext(self, meta or {})
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        reset = api.CURRENT_CALL.set(call)
        try:
            result = await self.handler.call(method, params)
        except api.McpError as e:
            raise RpcError(e.code, e.message, e.data) from None
        except asyncio.CancelledError:
            if self._closing:  # answer with an MCP code, not the channel's CANCELLED
                raise RpcError(INTERNAL_ERROR, "the server is shutting down") from None
            raise
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            say(f"{method} raised {text}")
            traceback.print_exception(e, file=sys.stderr)
            if method == "tools/call":  # MCP: a tool's failure is a result the model can see
                return {"content": [text_block(text)], "isError": True}
            raise RpcError(INTERNAL_ERROR, text) from None
        finally:
            call.done = True
            api.CURRENT_CALL.reset(reset)
            self._calls.discard(task)
        return normalise(method, params, result)


class HandlerKind:
    """Kind ``handler`` (see the module docstring)."""

    kind = "handler"

    def __init__(self, handler: Handler, notify: Notify) -> None:
        self.handler = handler
        self.metadata: Mapping[str, Any] = handler.metadata
        self.handlers: Mapping[str, Callable[..., Any]] = {}
        self.server: McpServer | None = None
        self._notify = notify

    async def start(self) -> Catalog:
        await self.handler.hook("initialize")
        self.server = server = McpServer(self.handler, self._notify)
        self.handlers = {MCP: server.mcp}
        return await server.start()

    async def wait(self) -> Verdict:
        assert self.server is not None
        self.server.arm()
        await asyncio.get_running_loop().create_future()  # serve `mcp` until `shutdown`
        return Verdict(EXIT_OK)  # not reached: shutdown cancels the host's lifecycle

    def on_ping(self) -> None:
        pass

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()  # calls in flight unwind before the module shuts down
        try:
            await self.handler.hook("shutdown")
        except Exception as e:
            say(f"shutdown() raised (ignored): {type(e).__name__}: {e}")
            traceback.print_exception(e, file=sys.stderr)


async def load(spec: BootSpec, notify: Notify) -> Kind:
    """Import the package; an SDK server object makes it kind ``sdk``, else its handler."""
    use_call_threads(asyncio.get_running_loop())
    module = import_extension(spec)
    if sdk_attribute(module) is not None:
        from worker.kinds.sdk import load_sdk  # only this kind pays for the MCP SDK

        return load_sdk(spec, module, notify)
    return HandlerKind(await load_handler(spec.name, module, spec.config, spec.path), notify)
