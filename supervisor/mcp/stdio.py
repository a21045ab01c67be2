"""``spctl mcp [SERVER]``: the front's MCP face over stdio, for a client that launches it.

Theory of operation: a desktop client (Claude Desktop) starts ``spctl mcp`` as its MCP server
and speaks JSON-RPC lines on its stdin/stdout. This module connects to the running supervisor
over the control socket (:class:`CoreLink`, exactly as the HTTP front does), builds the same
:class:`Face` for one scope (``None``: every server, names prefixed ``server__name``; or a
server name: its own names) and runs the face's SDK server on the SDK's stdio transport
instead of an HTTP session manager. The MCP logic lives only in ``face.py``.

stdout carries MCP messages only: logs go to stderr, and while serving the SDK points fd 1 at
stderr (serving the wire from a private duplicate) so stray output cannot corrupt it.

stdin is read through a non-blocking pipe, not the SDK's default reader thread: when the
control connection ends we must stop at once, and a thread blocked in ``readline`` can
neither be cancelled nor let the interpreter exit. (A stdin that is not a pipe, e.g. a
regular file, falls back to the SDK's reader; its reads never block for long.)

The supervisor going away (``systemctl restart spctl``) does not end the session: a desktop
client would not start its server again. ``spctl mcp`` keeps serving the last known listing,
answers calls with "the spctl supervisor is unreachable", reconnects with backoff (0.1 s
doubling to 2 s) and then tells the client what changed, if anything (``list_changed``).
``--no-reconnect`` exits instead.

Exit codes (as the other verbs): 0 the client closed stdin; 1 no such MCP server, or the
supervisor went away while serving with ``--no-reconnect``; 3 no supervisor answered at start.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import cast

import anyio
import structlog
from anyio.abc import TaskGroup
from mcp.server.stdio import stdio_server

from supervisor.mcp.core_link import CoreLink
from supervisor.mcp.face import Face, changed_kinds
from supervisor.mcp.limits import DEFAULT_MAX_BODY
from supervisor.rules.router import Router
from worker.channel import ChannelClosed
from worker.rpc import RpcError

__all__ = ["EXIT_GONE", "EXIT_NOT_RUNNING", "EXIT_UNKNOWN_SERVER", "serve_stdio"]

log = structlog.get_logger("spctl.mcp")

EXIT_UNKNOWN_SERVER = 1
EXIT_GONE = 1
EXIT_NOT_RUNNING = 3
_MAX_LINE = 64 * 1024 * 1024  # one JSON-RPC message; past this the client is cut off
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0


def _say(message: str) -> None:
    print(f"spctl mcp: {message}", file=sys.stderr, flush=True)


class _PipeLines:
    """stdin's lines from an asyncio pipe: cancellable, no thread (see the module docstring)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readline()
        except ValueError:  # the line overran the limit: its bytes are lost, so is the framing
            _say(f"a message over {_MAX_LINE} bytes; closing")
            raise StopAsyncIteration from None
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def _pipe_stdin() -> _PipeLines | None:
    """stdin as a pipe reader, or None when it cannot be one (a regular file)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_LINE)
    try:
        pipe = os.fdopen(os.dup(0), "rb", buffering=0)
    except OSError:  # no stdin at all: the SDK's reader meets its end at once
        return None
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except (ValueError, OSError):
        pipe.close()
        return None
    return _PipeLines(reader)


async def serve_stdio(socket_path: Path, scope: str | None, reconnect: bool = True) -> int:
    """Serve ``scope``'s MCP face on stdin/stdout until the client closes stdin; the exit code.

    Problems are told on stderr: no supervisor (3), no MCP server named ``scope`` (1), the
    supervisor gone while serving (reconnects; with ``reconnect=False``: exits 1).
    """
    link = CoreLink(socket_path)
    code = 0
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(link.run)
        except (OSError, TimeoutError) as exc:
            _say(f"no supervisor on {socket_path} ({exc}); start it with `spctl serve`")
            return EXIT_NOT_RUNNING
        except RpcError as exc:  # a core without the MCP control API, or one refusing it
            _say(f"the supervisor on {socket_path} refused: {exc.message}")
            return EXIT_NOT_RUNNING
        try:
            known = scope is None or await link.is_server(scope)
        except ChannelClosed as exc:
            _say(f"the supervisor went away ({exc.message})")
            known, code = False, EXIT_GONE
        if not known:
            if code == 0:
                _say(f"no MCP server named {scope!r} (see `spctl status`)")
                code = EXIT_UNKNOWN_SERVER
            link.close()
            tg.cancel_scope.cancel()
            return code

        face = Face(scope, link, max_body=DEFAULT_MAX_BODY)

        def on_change(old: Router, new: Router) -> None:
            kinds = changed_kinds(scope, old, new)
            if kinds:
                tg.start_soon(face.announce, kinds)

        link.on_change = on_change

        def on_resource_updated(server: str, uri: str) -> None:
            tg.start_soon(face.resource_updated, server, uri)

        link.on_resource_updated = on_resource_updated
        stdin = await _pipe_stdin()
        done = False
        with anyio.CancelScope() as serving:

            async def watch_link() -> None:
                nonlocal code
                while True:
                    reason = await link.wait_closed()
                    if done:
                        return
                    if not reconnect:
                        _say(f"the supervisor went away ({reason}); exiting")
                        code = EXIT_GONE
                        serving.cancel()
                        return
                    _say(f"the supervisor went away ({reason}); reconnecting")
                    await _relink(link, socket_path, tg)
                    _say(f"reconnected to the supervisor on {socket_path}")

            tg.start_soon(watch_link)
            # The transport only iterates stdin's lines, which is all a pipe reader offers.
            async with stdio_server(stdin=cast("anyio.AsyncFile[str] | None", stdin)) as (
                read,
                write,
            ):
                log.info("serving MCP on stdio", scope=scope, servers=len(link.router.servers))
                options = face.server.create_initialization_options()
                await face.server.run(read, write, options)
        done = True
        link.close()
        tg.cancel_scope.cancel()
    return code


async def _relink(link: CoreLink, socket_path: Path, tg: TaskGroup) -> None:
    """Run the link again until it connects (its table is then current again)."""
    delay = RECONNECT_FIRST
    while True:
        try:
            await tg.start(link.run)
            return
        except (OSError, TimeoutError, RpcError) as exc:
            log.debug("reconnect failed", socket=str(socket_path), error=str(exc))
        await anyio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX)
