"""The MCP front's link to the supervisor core: one msgpack-rpc Channel on the control socket.

Theory of operation: the front owns no catalogs. It asks the core to push ``catalogs``
[version] notifications (``mcp_watch``) *before* it fetches them (``mcp_catalogs``), so no
change can fall between the two. A notification only marks the table dirty; one refresher task
re-fetches, so a burst of changes costs one or two fetches, never one each. Every fetch becomes
a new immutable :class:`Router`, swapped in whole (unchanged servers keep their validated
tables); ``on_change(old, new)`` then lets the faces tell their clients what changed.

Resource subscriptions: the link holds every subscription of the front's clients
(:class:`Subscriptions`) and sends the core one ``resources/subscribe`` per ``(server, uri)``
(and the unsubscribe when its last client leaves), again after a reconnect; the core's
``resource_updated`` [server, uri] goes to ``on_resource_updated``.

A call is ``mcp(server, method, params, meta)`` on the same Channel; the core forwards it to the
server's worker. Progress tokens are replaced by ones unique to this link, because two MCP
clients may well both pick token ``1`` for calls in flight at once; the core pushes ``progress``
[token, progress, total, message] back on this connection and the link routes each to the one
call that asked. The same goes for a server's questions to the client of a call (elicitation,
sampling, roots): a call given ``on_ask`` carries ``meta["ask"]`` with a token of this link's
and the client's ``capabilities``; the core's ``ask`` [token, method, params] request is
answered by that call's ``on_ask`` (which asks the client on the call's own stream), and a
token no longer in flight is refused (but for a server's ``notifications/elicitation/complete``,
which reaches the ``on_ask`` of a call that sent a URL-mode elicitation for
:data:`worker.mcp.ask.COMPLETE_WINDOW` seconds after the call ended: the face then sends it on
the session's standalone stream). A client's ``notifications/roots/list_changed`` is
:meth:`CoreLink.roots_changed`: the core's ``roots_changed`` verb with a token of this link's
that reaches the client's ``on_ask`` for a ``roots/list``
:data:`worker.protocol.ROOTS_WINDOW` seconds (:class:`worker.mcp.ask.RootsWindow`). Cancelling the
awaiting task makes the Channel send ``$cancel``, which the core turns into a cancel of the
worker's handler.

When the control connection ends, :meth:`run` returns the reason. The HTTP front is the core's
child and is restarted with it, so it ends there. ``spctl mcp`` (launched by a desktop client,
which would not relaunch it) calls :meth:`run` again until it reconnects: each run is a new
connection, the last routing table is kept meanwhile (calls fail at once with "unreachable"),
and the first fetch of the new core announces only what really changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Awaitable, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from supervisor.rules.advertised import catalog_of
from supervisor.rules.router import Catalog, Router
from supervisor.rules.subscriptions import Subscriptions
from worker.channel import Channel, ChannelClosed
from worker.mcp.ask import Lingering, RootsWindow
from worker.protocol import ASK, ASK_META, INVALID_REQUEST, ROOTS_CHANGED
from worker.rpc import RpcError

__all__ = ["AskFn", "CoreLink", "ProgressFn", "catalog_of"]

log = structlog.get_logger("spctl.front")

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
"""Forwards one progress report (progress, total, message) to the MCP client that asked."""
AskFn = Callable[[str, Any], Awaitable[Any]]
"""Asks the MCP client of a call ``(method, params)``: its result; raises RpcError."""

_FETCH_TIMEOUT = 30.0
_RETRY_DELAY = 1.0  # after a failed catalog fetch; the core answers these from memory
_END = object()


class CoreLink:
    """The front's client of the core. Use: ``await tg.start(link.run)``, then :meth:`call`.

    ``router`` is always the latest table (empty until the first fetch); ``on_change(old,
    new)`` is called synchronously after each swap that changed anything.
    """

    def __init__(
        self,
        socket_path: Path,
        *,
        on_change: Callable[[Router, Router], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.on_change = on_change
        self.on_resource_updated: Callable[[str, str], None] | None = None
        self.subs = Subscriptions()
        self.router = Router()
        self.version = -1
        self._advertised: dict[str, Mapping[str, Any]] = {}
        self._channel = self._new_channel()
        self._runs = 0
        self._dirty = asyncio.Event()
        self._progress: dict[int, asyncio.Queue[Any]] = {}
        self._asks: dict[int, AskFn] = {}
        self._ended: Lingering[AskFn] = Lingering()  # ended, for a URL elicitation's completion
        self._roots: RootsWindow[AskFn] = RootsWindow()  # clients whose roots changed
        self._tokens = itertools.count(1)

    def _new_channel(self) -> Channel:
        return Channel(
            {"ping": lambda: "pong", ASK: self._ask},
            name="front",
            on_notification=self._on_notification,
        )

    async def _ask(self, token: Any, method: Any, params: Any = None) -> Any:
        """The core relays a server's question for the call that holds ``token``."""
        ask = self._asks.get(token) if type(token) is int else None
        if ask is None:
            ask = self._ended.reach(token, method) or self._roots.reach(token, method)
        else:
            self._ended.asked(token, method, params)
        if ask is None or not isinstance(method, str):
            raise RpcError(
                INVALID_REQUEST,
                f"the call that {method} belongs to has ended (and no client's roots/list_changed"
                " it could answer is recent)",
            )
        return await ask(method, params)

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def close(self, reason: str = "front shutting down") -> None:
        self._channel.close(reason)

    async def wait_closed(self) -> str:
        """Wait until the control connection has ended; return why."""
        return await self._channel.wait_closed()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> str:
        """Connect, subscribe, fetch the first table, report started; keep the table current
        until the connection ends. Returns why it ended.

        Raises OSError when the socket cannot be reached, RpcError/TimeoutError when the core
        refuses the subscription or the first fetch (nothing is started then). May be called
        again once it has returned: a new connection (to a restarted core, say).
        """
        if self._runs:
            self._channel.close("reconnecting")
            self._channel = self._new_channel()
            self._dirty.clear()
        self._runs += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, str(self.socket_path))
            await self._channel.connect(sock)
        except BaseException:
            sock.close()
            raise
        try:
            await self._channel.request("mcp_watch", timeout=_FETCH_TIMEOUT)
            await self._refresh()
            for server, uri in self.subs.wanted():  # a new core: it hears them all again
                try:
                    await self._upstream(server, "resources/subscribe", uri)
                except RpcError as exc:
                    if isinstance(exc, ChannelClosed):
                        raise
                    log.info("resubscribe refused", server=server, uri=uri, error=exc.message)
        except BaseException:
            self._channel.close("no catalogs")
            raise
        task_status.started()
        refresher = asyncio.ensure_future(self._refresher())
        try:
            return await self._channel.wait_closed()
        finally:
            refresher.cancel()

    async def call(
        self,
        server: str,
        method: str,
        params: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
        on_progress: ProgressFn | None = None,
        on_ask: AskFn | None = None,
        capabilities: Mapping[str, Any] | None = None,
    ) -> Any:
        """One MCP request to ``server``'s worker through the core; its result dict.

        When ``meta`` carries a ``progressToken`` and ``on_progress`` is given, the core's
        reports are passed to it in order, all before this returns. With ``on_ask``, the
        server's questions for the client (who declared ``capabilities``) go to it.

        Raises RpcError (the core's or the worker's error), ChannelClosed (no core).
        """
        meta = dict(meta or {})
        asking = None
        if on_ask is not None:
            asking = next(self._tokens)
            self._asks[asking] = on_ask
            meta[ASK_META] = {"token": asking, "capabilities": dict(capabilities or {})}
        try:
            return await self._call(server, method, params, meta, on_progress)
        finally:
            if asking is not None:
                self._ended.ended(asking, self._asks.pop(asking))

    async def roots_changed(self, server: str, on_ask: AskFn) -> bool:
        """A client's ``notifications/roots/list_changed`` for ``server``; its ``roots/list``
        goes to ``on_ask`` (see the module docstring). Whether a worker was up to hear it.

        Raises RpcError (the core's: no such server), ChannelClosed (no core)."""
        token = next(self._tokens)
        self._roots.add(token, on_ask)
        told = await self._channel.request(ROOTS_CHANGED, server, token, timeout=_FETCH_TIMEOUT)
        return told is True

    async def _call(
        self,
        server: str,
        method: str,
        params: Mapping[str, Any],
        meta: dict[str, Any],
        on_progress: ProgressFn | None,
    ) -> Any:
        token = meta.get("progressToken")
        if token is None or on_progress is None:
            return await self._channel.request("mcp", server, method, params, meta)
        ours = next(self._tokens)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._progress[ours] = queue
        outcome: list[Any] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_forward_progress, queue, on_progress)
                try:
                    meta = {**meta, "progressToken": ours}
                    outcome.append(await self._channel.request("mcp", server, method, params, meta))
                except (RpcError, ChannelClosed) as exc:
                    outcome.append(exc)
                finally:
                    # Reports that came before the answer are queued already (the channel
                    # handles frames in order): the forwarder sends them, then stops.
                    queue.put_nowait(_END)
        finally:
            del self._progress[ours]
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def subscribe(self, client: Hashable, server: str, uri: str) -> None:
        """``client`` wants ``resources/updated`` for ``uri`` of ``server``.

        Raises RpcError (the core refused: no such server), ChannelClosed (no core)."""
        if self.subs.add(client, server, uri):
            try:
                await self._upstream(server, "resources/subscribe", uri)
            except BaseException:
                self.subs.remove(client, server, uri)
                raise

    async def unsubscribe(self, client: Hashable, server: str, uri: str) -> None:
        if self.subs.remove(client, server, uri):
            with contextlib.suppress(RpcError):  # ChannelClosed too: the core forgot it anyway
                await self._upstream(server, "resources/unsubscribe", uri)

    async def drop(self, client: Hashable) -> None:
        """``client`` went away: forget its subscriptions."""
        for server, uri in self.subs.drop(client):
            with contextlib.suppress(RpcError):
                await self._upstream(server, "resources/unsubscribe", uri)

    async def _upstream(self, server: str, method: str, uri: str) -> None:
        await self._channel.request("mcp", server, method, {"uri": uri}, {}, timeout=_FETCH_TIMEOUT)

    async def status(self, timeout: float = _FETCH_TIMEOUT) -> dict[str, Any]:
        """The core's ``status`` answer (what ``spctl status --json`` shows).

        Raises RpcError (ChannelClosed when there is no core), TimeoutError.
        """
        status = await self._channel.request("status", timeout=timeout)
        if not isinstance(status, dict):
            raise RpcError(-32603, f"malformed status answer: {type(status).__name__}")
        return status

    async def control(self, method: str, *params: Any, timeout: float = _FETCH_TIMEOUT) -> Any:
        """Any other control verb (``history``, ``restart`` …: the status page's). Raises
        RpcError (ChannelClosed when there is no core), TimeoutError."""
        return await self._channel.request(method, *params, timeout=timeout)

    async def ping(self, timeout: float) -> None:
        """One round trip to the core. Raises RpcError (ChannelClosed), TimeoutError."""
        await self._channel.request("ping", timeout=timeout)

    async def is_server(self, name: str) -> bool:
        """Whether the core runs an MCP server extension of that name, in any state (one
        without a catalog now, because it is stopped or failed, still has its endpoint).

        Raises ChannelClosed when there is no core.
        """
        if name in self.router.servers:
            return True
        try:
            status = await self._channel.request("status", name, timeout=_FETCH_TIMEOUT)
        except (RpcError, TimeoutError) as exc:
            if isinstance(exc, ChannelClosed):
                raise
            return False
        extensions = status.get("extensions") if isinstance(status, dict) else None
        return any(
            isinstance(e, dict) and e.get("name") == name and e.get("kind") == "server"
            for e in extensions or ()
        )

    # -- catalogs -------------------------------------------------------------------------

    def _on_notification(self, method: str, params: list[Any]) -> None:
        if method == "progress" and params:
            queue = self._progress.get(params[0]) if isinstance(params[0], int) else None
            if queue is not None:
                queue.put_nowait(params[1:4])
        elif method == "resource_updated" and len(params) >= 2:
            server, uri = params[0], params[1]
            if isinstance(server, str) and isinstance(uri, str) and self.on_resource_updated:
                self.on_resource_updated(server, uri)
        elif method == "catalogs":
            version = params[0] if params and isinstance(params[0], int) else None
            if version is None or version != self.version:
                self._dirty.set()

    async def _refresher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._refresh()
            except ChannelClosed:
                return
            except (RpcError, TimeoutError) as exc:
                log.warning("catalog refresh failed; retrying", error=str(exc))
                self._dirty.set()
                await asyncio.sleep(_RETRY_DELAY)
            except Exception:  # a bug must not freeze the table for the front's lifetime
                log.exception("catalog refresh crashed")

    async def _refresh(self) -> None:
        data = await self._channel.request("mcp_catalogs", timeout=_FETCH_TIMEOUT)
        servers = data.get("servers") if isinstance(data, dict) else None
        if not isinstance(servers, dict):
            raise RpcError(-32603, f"malformed mcp_catalogs answer: {type(data).__name__}")
        version = data.get("version")
        self.version = version if isinstance(version, int) else self.version
        old = router = self.router
        gone = self._advertised.keys() - servers.keys()
        changed: dict[str, Catalog] = {}
        for name, advertised in servers.items():
            if not isinstance(advertised, Mapping) or self._advertised.get(name) == advertised:
                continue
            try:
                changed[name] = catalog_of(name, advertised)
            except (ValueError, TypeError) as exc:
                log.warning("catalog refused", extension=name, error=str(exc))
                continue
            self._advertised[name] = advertised
        for name in gone:
            del self._advertised[name]
        if len(changed) + len(gone) > 1:
            # Each with_catalog re-merges the whole aggregate: past one change, one build is
            # cheaper than a chain of them.
            kept = {c.server: c for c in (router.catalog(s) for s in router.servers)}
            kept.update(changed)
            router = Router(c for name, c in kept.items() if name not in gone)
        else:
            for name in gone:
                router = router.without(name)
            for catalog in changed.values():
                router = router.with_catalog(catalog)
        if router is not old:
            self.router = router
            if self.on_change is not None:
                self.on_change(old, router)


async def _forward_progress(queue: asyncio.Queue[Any], on_progress: ProgressFn) -> None:
    while (item := await queue.get()) is not _END:
        progress, total, message = [*item, None, None, None][:3]
        if not isinstance(progress, int | float):
            continue  # a malformed report is dropped, never fatal to the call
        try:
            await on_progress(
                progress,
                total if isinstance(total, int | float) else None,
                message if isinstance(message, str) else None,
            )
        except Exception:  # the client's stream went away: the call itself goes on
            log.debug("progress report dropped", exc_info=True)
