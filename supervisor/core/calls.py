"""One runner's call path: client requests to its worker (mcp, service, ping).

Each call goes to the worker that is up when it starts, within the extension's ``timeout``
(or what is left of it: :meth:`Calls.budget`), and fails at once, naming the extension, when
there is no worker or it dies meanwhile. Calls count as activity for a lazy server's
``idleTimeout`` (:meth:`Calls.idle_watch`).

Progress: clients fan in here (the HTTP front, ``spctl mcp``, each numbering its tokens from
1), so the core gives every call that wants progress a token of its own towards the worker and
maps each report back to the caller's token and callback.

Questions (a server's elicitation/create, sampling/createMessage, roots/list for the client of
a call, :data:`worker.protocol.ASK`): the same way, a call whose caller can be asked
(``meta["ask"]`` and ``on_ask``) gets a core token towards the worker; the worker's ``ask``
[token, method, params] goes to that caller, under its own token, and the answer back. A
question for a token that is no longer in flight (the call ended) is refused, never held.
A server's ``notifications/elicitation/complete`` comes the same way (an ``ask`` whose method
is that notification, :data:`worker.mcp.ask.ELICITATION_COMPLETE`) and may come after its
call ended: the token of a call that sent a URL-mode elicitation keeps reaching its caller for
that one method :data:`worker.mcp.ask.COMPLETE_WINDOW` seconds more
(:class:`worker.mcp.ask.Lingering`; other calls are forgotten when they end).

A client's ``notifications/roots/list_changed`` (:meth:`Calls.roots_changed`, from the
front's ``roots_changed`` verb) goes to the worker as ``roots_changed`` [core token]; that
token reaches the caller's ``on_ask`` for a ``roots/list`` :data:`worker.protocol.ROOTS_WINDOW`
seconds (:class:`worker.mcp.ask.RootsWindow`), so the server's out-of-call ``roots/list`` is
answered by the client that said its roots changed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from supervisor.core.incarnation import Incarnation
from supervisor.rules.exits import describe, from_waitid
from worker.channel import Channel, ChannelClosed
from worker.mcp.ask import Lingering, RootsWindow
from worker.protocol import ASK_META, INVALID_REQUEST, MCP, PING, ROOTS_CHANGED, SERVICE
from worker.rpc import RpcError

__all__ = ["Ask", "CallTimeout", "Calls", "CommandFailed", "Progress", "WorkerGone"]


class CommandFailed(Exception):
    """An operator command could not reach its goal; the message says why."""


class CallTimeout(CommandFailed):
    """An MCP call got no answer within the extension's ``timeout``."""


class WorkerGone(CommandFailed):
    """The call was not sent: the worker's channel was already closed (it died and the runner
    has not processed its exit yet). Nothing reached it, so the call may go to the next one."""

    def __init__(self, message: str, inc: Incarnation) -> None:
        super().__init__(message)
        self.inc = inc


Progress = Callable[[list[Any]], None]
"""Gets a progress report ``[token, progress, total, message]`` under the caller's token."""
Ask = Callable[[list[Any]], Awaitable[Any]]
"""Asks the caller ``[token, method, params]`` under the caller's token; the client's result."""


class Calls:
    """``current()`` says which worker is up now and the state (for "not running (…)")."""

    def __init__(
        self, name: str, timeout: float, current: Callable[[], tuple[Incarnation | None, str]]
    ) -> None:
        self.name = name
        self.timeout = timeout  # the extension's per-call timeout (the runner's update sets it)
        self.current = current
        self.in_flight = 0
        self.last_activity = time.monotonic()
        self._progress: dict[int, tuple[Any, Progress]] = {}  # core token → caller's
        self._asks: dict[int, tuple[Any, Ask]] = {}  # core token → caller's
        self._ended: Lingering[tuple[Any, Ask]] = Lingering()  # … a URL elicitation's
        self._roots: RootsWindow[tuple[Any, Ask]] = RootsWindow()  # … a roots/list_changed's
        self._tokens = itertools.count(1)

    @property
    def progress_in_flight(self) -> int:
        """Calls waiting for progress reports now."""
        return len(self._progress)

    def _channel(self) -> tuple[Incarnation, Channel]:
        inc, state = self.current()
        if inc is None or not inc.ready or inc.channel is None:
            raise CommandFailed(f"{self.name} is not running ({state})")
        return inc, inc.channel

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the worker over its channel; seconds. Not a client's call: no
        activity, no budget. Raises CommandFailed at once when the worker is not running or
        dies while the ping is in flight."""
        _, channel = self._channel()
        t0 = time.monotonic()
        try:
            await channel.request(PING, timeout=timeout)
        except ChannelClosed as exc:
            why = f"{self.name}: worker went away during the call ({exc.message})"
            raise CommandFailed(why) from None
        except TimeoutError:
            raise CommandFailed(f"{self.name}: no answer within {timeout:g}s") from None
        return time.monotonic() - t0

    async def mcp(
        self,
        method: str,
        params: dict[str, Any],
        meta: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
        deadline: float | None = None,
        on_ask: Ask | None = None,
    ) -> Any:
        """One MCP request to this server's worker, within the extension's ``timeout`` (or
        until ``deadline``, monotonic, when the caller already spent some of it waiting);
        progress reports go to ``on_progress`` under the caller's own token, the server's
        questions to ``on_ask`` (without it, ``meta["ask"]`` is dropped: nobody to ask).
        Raises as :meth:`call`; the worker's RpcError (MCP error codes) passes through."""
        meta = dict(meta) if meta else {}
        ours: list[int] = []
        token = meta.pop("progressToken", None)
        if token is not None and on_progress is not None:  # nobody to tell: no reports
            ours.append(progress := next(self._tokens))
            self._progress[progress] = (token, on_progress)
            meta["progressToken"] = progress
        ask = meta.pop(ASK_META, None)
        if isinstance(ask, dict) and ask.get("token") is not None and on_ask is not None:
            ours.append(asking := next(self._tokens))
            self._asks[asking] = (ask["token"], on_ask)
            meta[ASK_META] = {**ask, "token": asking}
        try:
            return await self.call(deadline, MCP, method, params, meta)
        finally:
            for t in ours:
                self._progress.pop(t, None)
                entry = self._asks.pop(t, None)
                if entry is not None:
                    self._ended.ended(t, entry)

    async def ask(self, token: Any, method: Any, params: Any = None) -> Any:
        """A worker's ``ask``: to the caller of the call that owns the token, as the caller's.
        Raises RpcError when that call is over (or never was)."""
        entry = self._asks.get(token) if type(token) is int else None
        if entry is None:
            entry = self._ended.reach(token, method) or self._roots.reach(token, method)
        else:
            self._ended.asked(token, method, params)
        if entry is None:
            raise RpcError(
                INVALID_REQUEST,
                f"{self.name}: the call that {method} belongs to is no longer in flight",
            )
        caller_token, ask = entry
        return await ask([caller_token, method, params])

    def roots_changed(self, token: Any, on_ask: Ask) -> bool:
        """A client's ``notifications/roots/list_changed``, its ``ask`` token ``token``: to the
        worker (a notification: nothing waits). False when no worker is up to tell (a stopped
        server asks for the roots when it next starts a session anyway)."""
        inc, _ = self.current()
        channel = inc.channel if inc is not None and inc.ready else None
        if channel is None or channel.closed:
            return False
        ours = next(self._tokens)
        self._roots.add(ours, (token, on_ask))
        try:
            channel.notify(ROOTS_CHANGED, ours)
        except ChannelClosed:
            return False
        return True

    async def service(self, name: str, params: Any, deadline: float | None = None) -> Any:
        """One ``"<service>.<method>"`` call to a plugin's worker, as :meth:`mcp`."""
        return await self.call(deadline, SERVICE, name, params)

    def progress(self, params: list[Any]) -> None:
        """A worker's ``progress`` [token, …]: to the call that owns the token, as the caller's."""
        entry = self._progress.get(params[0]) if params and type(params[0]) is int else None
        if entry is not None:
            caller_token, push = entry
            push([caller_token, *params[1:]])

    async def call(self, deadline: float | None, *request: Any) -> Any:
        """A request a client made: activity for ``idleTimeout``, the extension's ``timeout``.
        Raises CommandFailed at once when the worker is not running or dies during the call
        (naming the extension and, when known within 0.5 s, how the worker ended), or
        CallTimeout; WorkerGone when the worker is already gone and nothing was sent."""
        inc, channel = self._channel()
        if channel.closed:
            why = f"{self.name}: worker went away before the call ({channel.close_reason})"
            raise WorkerGone(why, inc)
        self.in_flight += 1
        try:
            return await channel.request(*request, timeout=self.budget(deadline))
        except ChannelClosed as exc:
            why = exc.message
            if inc.proc is not None:
                with anyio.move_on_after(0.5):
                    result = await inc.proc.wait()
                    why = describe(from_waitid(result.si_code, result.si_status, cause=inc.cause))
            raise CommandFailed(f"{self.name}: worker went away during the call ({why})") from None
        except TimeoutError:
            raise CallTimeout(f"{self.name}: no answer within timeout {self.timeout:g}s") from None
        finally:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def budget(self, deadline: float | None) -> float:
        """Seconds a call may take: the extension's ``timeout``, or what is left of it."""
        if deadline is None:
            return self.timeout
        return max(0.001, deadline - time.monotonic())

    async def idle_watch(
        self, scope: anyio.CancelScope, idle: float, on_idle: Callable[[], None]
    ) -> None:
        """A lazy server with ``idleTimeout`` stops after that long without calls (``on_idle``);
        the next call starts it again. Ends with ``scope`` (the worker's)."""
        with scope:
            while True:
                quiet = time.monotonic() - self.last_activity
                if self.in_flight == 0 and quiet >= idle:
                    on_idle()
                    return
                await anyio.sleep(max(0.05, idle - quiet if self.in_flight == 0 else idle))
