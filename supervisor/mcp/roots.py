"""A client's ``notifications/roots/list_changed``: which servers hear it, and how their
``roots/list`` afterwards reaches that client.

Theory of operation. A 2025-11-25 client that declared the ``roots`` capability tells its
server when its roots change; behind spctl "its server" is a set of hosted servers. On
``/mcp/<server>`` (and ``/servers/<server>/mcp``) it is that one; on ``/mcp`` it is those this
session has called so far (:class:`Called`: a server it never used has no business with its
roots, and a session's first call to a server starts no conversation about the past), in both
cases only those the client's token reaches (:meth:`Client.reaches`). A client that declared
no ``roots`` capability has no roots to change: its notification goes nowhere (logged).

Each target gets ``roots_changed`` through the core (:meth:`CoreLink.roots_changed`); the
server may then ask ``roots/list`` outside any call, which comes back to :func:`standalone_asker`
(within :data:`worker.protocol.ROOTS_WINDOW`). No call's stream is open for it, so it goes on the
session's standalone GET stream. The SDK silently drops a message for the GET stream when none
is open (the transport's ``_request_streams`` holds :data:`GET_STREAM_KEY` while one is), so the
asker looks first and answers the server with a clear error when there is none, or when the
session is gone (the session manager no longer holds its transport). ``spctl mcp`` (stdio, no
HTTP request) always has its back channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import GET_STREAM_KEY, MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST
from pydantic import ConfigDict, ValidationError

from supervisor.mcp.core_link import AskFn
from supervisor.rules.clients import Client
from worker.mcp.ask import ROOTS_CHANGED_METHOD
from worker.rpc import RpcError

__all__ = ["Called", "declared_roots", "standalone_asker", "targets"]

Ctx = ServerRequestContext[Any, Any]
Transports = Callable[[str], Any]
"""The live transport of a session id (the session manager's), or None once it has ended."""


class _Answer(types.Result):
    model_config = ConfigDict(**{**types.Result.model_config, "extra": "allow"})


class Called:
    """The servers each ``/mcp`` session has called, for its roots/list_changed."""

    def __init__(self) -> None:
        self._by: dict[Connection, set[str]] = {}

    def add(self, connection: Any, server: str) -> None:
        if not isinstance(connection, Connection):
            return
        servers = self._by.get(connection)
        if servers is None:
            servers = self._by[connection] = set()
            connection.exit_stack.callback(self._by.pop, connection, None)
        servers.add(server)

    def of(self, connection: Any) -> frozenset[str]:
        return frozenset(self._by.get(connection, ()))


def declared_roots(ctx: Ctx) -> bool:
    """Whether the session's client declared the ``roots`` capability."""
    declared = ctx.session.client_capabilities
    return declared is not None and declared.roots is not None


def targets(scope: str | None, called: Iterable[str], client: Client | None) -> list[str]:
    """The servers a roots/list_changed on ``scope``'s endpoint goes to (module docstring)."""
    servers = [scope] if scope is not None else sorted(called)
    return [s for s in servers if client is None or client.reaches(s)]


def _session_id(ctx: Ctx) -> str | None:
    headers = getattr(ctx.request, "headers", None)
    value = headers.get(MCP_SESSION_ID_HEADER) if headers is not None else None
    return value if isinstance(value, str) else None


def standalone_asker(ctx: Ctx, transports: Transports) -> AskFn:
    """How a server's ``roots/list`` after this notification reaches the session's client:
    on its standalone GET stream, checked open first (module docstring)."""
    session = ctx.session
    session_id = _session_id(ctx)
    http = ctx.request is not None

    async def ask(method: str, params: Any) -> Any:
        if method != "roots/list":
            raise RpcError(
                INVALID_REQUEST,
                f"spctl cannot forward {method}: no client call is in flight to ask (after the "
                f"client's {ROOTS_CHANGED_METHOD} only its roots/list goes to it)",
            )
        if http:
            transport = transports(session_id) if session_id is not None else None
            if transport is None:
                raise RpcError(
                    INVALID_REQUEST,
                    "spctl cannot forward roots/list: the client's session that sent "
                    f"{ROOTS_CHANGED_METHOD} has ended",
                )
            if GET_STREAM_KEY not in getattr(transport, "_request_streams", {}):
                raise RpcError(
                    INVALID_REQUEST,
                    "spctl cannot forward roots/list: the client has no standalone stream (GET) "
                    "open, the only one a request outside any call can go on; ask it during a "
                    "call instead",
                )
        try:
            result = await session.send_request(types.ListRootsRequest(), _Answer)
        except NoBackChannelError:  # an MCPError too: first
            raise RpcError(
                INVALID_REQUEST, "the client's session cannot carry roots/list"
            ) from None
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.data) from None
        except ValidationError as exc:
            raise RpcError(INTERNAL_ERROR, f"the client's answer to roots/list: {exc}") from None
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    return ask
