"""The sdk kind: an MCP SDK server object exported by the extension package, served in-process.

Theory of operation. A ``path:`` server entry is booted as kind ``handler``; when its module
has no ``create_handler`` but a module-level ``mcp``, ``server`` or ``app`` whose class comes
from the SDK (:func:`worker.loader.sdk_attribute`, which imports nothing), the host
hands it here instead. :func:`find_server` checks it really is an :class:`MCPServer` (the SDK's
high-level, FastMCP-style server) or a low-level :class:`Server`. :class:`SdkServer` then runs
it in the worker's own loop through the SDK's in-memory transport, with an SDK client session
on the other end — :class:`worker.mcp.client.McpClient` (the ``stdio`` kind's
:class:`worker.mcp.lean.LeanClient` does the same without the SDK), so the catalog, ``mcp``
forwarding, cancellation, progress, ``list_changed`` and MCP error codes behave alike. The
server's elicitation, sampling and roots requests go to the client of the call whose handler
sent them (the SDK's ``related_request_id`` cell, known exactly here).
A 2026-07-28 client's call (its envelope's version in ``meta``) goes to the server on the
SDK's 2026-07-28 per-request path instead (:attr:`McpClient.modern`, a direct dispatcher
beside the 2025-11-25 session, sharing the one lifespan): its ``input_required`` results and
their retries pass through as they are. A tool that answers ``input_required`` by hand is
served on that path to a 2025-11-25 client too, the worker answering its rounds by asking
that client (:meth:`McpClient._input_loop`).
The server's lifespan runs when the session starts and ends when it closes.
If the server's side fails (its lifespan raises, say), :attr:`SdkServer.exited` resolves and
the host ends the worker (non-zero), as when a stdio server process dies.

The module's ``config`` is not passed to an SDK server (it has no factory to receive it): such
a server reads its settings from the environment (the entry's ``env``) or its own files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import Any

import anyio
from mcp.client._memory import SERVER_SHUTDOWN_GRACE
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import returns_input_required
from mcp.server.runner import modern_on_request, serve_dual_era_loop
from mcp.shared.direct_dispatcher import create_direct_dispatcher_pair
from mcp.shared.exceptions import MCPError
from mcp.shared.memory import create_client_server_memory_streams
from mcp_types import METHOD_NOT_FOUND

from worker.kinds.base import Notify, ServerKind
from worker.loader import SDK_ATTRIBUTES, SDK_EXPECTED, LoadError
from worker.mcp.client import McpClient, Streams
from worker.protocol import BootSpec

__all__ = ["SdkServer", "find_server", "load_sdk"]

SdkObject = MCPServer[Any] | Server[Any]


def find_server(module: ModuleType, where: str) -> tuple[str, SdkObject]:
    """The module's SDK server object and the attribute holding it. Raises LoadError."""
    for name in SDK_ATTRIBUTES:
        obj = getattr(module, name, None)
        if isinstance(obj, MCPServer | Server):
            return name, obj
    found = ", ".join(
        f"{name} ({type(getattr(module, name)).__name__})"
        for name in SDK_ATTRIBUTES
        if getattr(module, name, None) is not None
    )
    raise LoadError(f"no MCP SDK server object in {where}: expected {SDK_EXPECTED}, found {found}")


def load_sdk(spec: BootSpec, module: ModuleType, notify: Notify) -> ServerKind:
    """Kind ``sdk``: the package's SDK server object, served in-process. Raises LoadError."""
    attribute, obj = find_server(module, spec.path)
    return ServerKind("sdk", SdkServer(obj, f"{module.__name__}.{attribute}", notify))


class SdkServer(McpClient):
    """An SDK server object served in-process; see the module docstring."""

    label = "SDK server"
    forwards = True

    def __init__(self, server: SdkObject, source: str, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.server = server
        self.source = source

    @property
    def metadata(self) -> dict[str, Any]:
        return {"object": self.source, **super().metadata}

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        return self._serve()

    @asynccontextmanager
    async def _serve(self) -> AsyncIterator[Streams]:
        """The server's lifespan (entered once), its 2025-11-25 session over in-memory streams
        (as the SDK's InMemoryTransport) and its 2026-07-28 per-request path beside it
        (:attr:`modern`, for modern clients' calls), sharing that lifespan."""
        server = self.server._lowlevel_server if isinstance(self.server, MCPServer) else self.server
        async with (
            server.lifespan(server) as state,
            create_client_server_memory_streams() as (client_streams, server_streams),
        ):
            (client_read, client_write), (server_read, server_write) = (
                client_streams,
                server_streams,
            )
            done = anyio.Event()

            async def legacy() -> None:
                try:
                    # raise_exceptions=False: a handler's exception is an MCP error for the
                    # caller, not the end of the server.
                    await serve_dual_era_loop(
                        server,
                        server_read,
                        server_write,
                        lifespan_state=state,
                        init_options=server.create_initialization_options(),
                        raise_exceptions=False,
                    )
                finally:
                    done.set()

            ours, theirs = create_direct_dispatcher_pair(raise_handler_exceptions=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(legacy)
                await tg.start(theirs.run, modern_on_request(server, state), _ignore)
                await tg.start(ours.run, _no_requests, _ignore)
                self.modern = ours
                try:
                    yield client_read, client_write
                finally:
                    self.modern = None
                    ours.close()
                    theirs.close()
                    await client_write.aclose()
                    await server_write.aclose()
                    with anyio.move_on_after(SERVER_SHUTDOWN_GRACE):
                        await done.wait()
                    if not done.is_set():
                        tg.cancel_scope.cancel()

    def _modern_only(self, method: str, params: dict[str, Any]) -> bool:
        """A tool that answers ``input_required`` by hand (its return annotation says so) is
        served on the 2026-07-28 path even to a 2025-11-25 client, the worker answering its
        rounds (a resolver tool or one that calls ``ctx.elicit`` serves the old era itself)."""
        if method != "tools/call" or not isinstance(self.server, MCPServer):
            return False
        manager = getattr(self.server, "_tool_manager", None)
        tool = manager.get_tool(params.get("name")) if manager is not None else None
        return tool is not None and returns_input_required(tool.fn)

    def _session_ended(self, error: BaseException | None) -> None:
        if self.exited.done():
            return
        if error is None:
            self.exited.set_result("stopped")
        else:
            self.exited.set_result(f"failed: {type(error).__name__}: {error}")


async def _ignore(dctx: Any, method: str, params: Mapping[str, Any] | None) -> None:
    """Notifications on the 2026-07-28 path: none is expected (progress has its callback)."""


async def _no_requests(dctx: Any, method: str, params: Mapping[str, Any] | None) -> Any:
    """A 2026-07-28 server sends no requests (it answers input_required instead)."""
    raise MCPError(METHOD_NOT_FOUND, f"Method not found: {method}")
