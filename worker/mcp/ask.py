"""Requests from a hosted MCP server to the MCP client of a call: elicitation, sampling, roots.

Theory of operation. A 2025-11-25 server may ask its client something while it serves a
request: ``elicitation/create`` (ask the user), ``sampling/createMessage`` (ask the model),
``roots/list``. The worker declares to its server that it can forward these
(:data:`OFFERED`, in ``initialize``), so servers that list tools only for capable clients list
them. Whether a *given* call's client can answer is in the call's meta (:data:`ASK_META`,
``{"token", "capabilities"}``, put there by the face and re-tokened by the core); a call
without it has no client that can be asked. :class:`Asking` holds that for one call while it
is in flight: :meth:`Asking.refusal` says why a request cannot go to its client (never a silent
drop: the server gets a JSON-RPC error naming the cause), :meth:`Asking.ask` sends it up the
channel (``ask`` [token, method, params], :func:`set_asker`) and returns the client's result.
When the call ends first (answered, cancelled, timed out), :meth:`Asking.end` cancels what
it still waits for and the server is told so; a late answer of the client goes nowhere.

URL-mode elicitation (``mode: "url"``, an ``elicitationId``): the user finishes out of band and
the server then sends ``notifications/elicitation/complete`` with that id. :meth:`Asking.ask`
remembers which call's client got each URL-mode request (:data:`COMPLETE_WINDOW` seconds, also
after the call ended); :func:`completed` sends the server's notification up the same ``ask``
channel request to that client (answered ``None``; the core and the front keep a call's
token for telling as long), and drops one whose id no client was asked for (logged).

A client's ``notifications/roots/list_changed`` (:data:`worker.protocol.ROOTS_CHANGED`
[token]) reaches the worker with a token of that client's; the kind tells its server, and a
``roots/list`` the server then sends outside any call goes to that client for
:data:`ROOTS_WINDOW` seconds (:func:`roots_asking` is the stand-in call for it; the core and the
front keep the token reaching the client as long: :class:`RootsWindow`).

Which call a server's request belongs to is the kind's business: the ``sdk`` kind knows it
exactly (the in-process server's request carries the caller's context), and so does the
``remote`` kind (a Streamable HTTP server asks on the event stream that answers the call's
POST; a request on the standalone GET stream belongs to no call and is refused:
:func:`unrelated`); a stdio server's line says nothing about it, so :mod:`worker.kinds.stdio`
routes it to the only call in flight and refuses it (:func:`ambiguous`) when there are
several.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from worker.log import say
from worker.protocol import ASK_META, INVALID_REQUEST, METHOD_NOT_FOUND, ROOTS_WINDOW
from worker.rpc import RpcError

__all__ = [
    "CAPABILITY",
    "COMPLETE_WINDOW",
    "ELICITATION_COMPLETE",
    "OFFERED",
    "ROOTS_CHANGED_METHOD",
    "ROOTS_WINDOW",
    "Asker",
    "Asking",
    "Lingering",
    "RootsWindow",
    "ambiguous",
    "completed",
    "no_call",
    "roots_asking",
    "set_asker",
    "unrelated",
]

CAPABILITY: Mapping[str, str] = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
"""The server requests that go to a client, and the client capability each needs."""
OFFERED: Mapping[str, Any] = {
    "elicitation": {"form": {}, "url": {}},
    "sampling": {},
    "roots": {},
}
"""What the worker declares to its server in ``initialize``: everything it can forward (each
call's own client may still lack it: then that call's request is refused)."""

ELICITATION_COMPLETE = "notifications/elicitation/complete"
"""A server's word that a URL-mode elicitation finished (its ``elicitationId``)."""
COMPLETE_WINDOW = 600.0
"""How long after a URL-mode ``elicitation/create`` its completion still reaches the client
(an out-of-band flow, a login say, may outlast the call that asked)."""
ROOTS_CHANGED_METHOD = "notifications/roots/list_changed"
"""A client's word that its roots changed (the server may then ask ``roots/list``)."""
_url_asked: dict[str, tuple[int, float]] = {}  # elicitationId → (token, monotonic expiry)
_telling: set[asyncio.Task[Any]] = set()

Asker = Callable[[int, str, Any], Awaitable[Any]]
"""Sends ``ask`` [token, method, params] to the supervisor; the client's result."""
_asker: Asker | None = None


def set_asker(asker: Asker | None) -> None:
    """The host's way up the channel (``worker.host``)."""
    global _asker
    _asker = asker


def _remember_url(token: int, params: Any) -> None:
    """A URL-mode elicitation/create goes to the client of ``token``: remember its id."""
    if not isinstance(params, Mapping) or params.get("mode") != "url":
        return
    elicitation = params.get("elicitationId")
    if isinstance(elicitation, str):
        now = time.monotonic()
        for key in [k for k, (_, expiry) in _url_asked.items() if expiry <= now]:
            del _url_asked[key]
        _url_asked[elicitation] = (token, now + COMPLETE_WINDOW)


def completed(params: Any) -> None:
    """The server's ``notifications/elicitation/complete``: to the client that was asked the
    URL-mode elicitation of that id (see the module docstring); logged and dropped otherwise."""
    elicitation = params.get("elicitationId") if isinstance(params, Mapping) else None
    entry = _url_asked.get(elicitation) if isinstance(elicitation, str) else None
    if entry is None or entry[1] <= time.monotonic() or _asker is None:
        say(
            f"dropped the server's {ELICITATION_COMPLETE} for elicitationId {elicitation!r}: "
            "no client was asked a URL-mode elicitation of that id (or it was more than "
            f"{COMPLETE_WINDOW:g}s ago)"
        )
        return
    task = asyncio.ensure_future(_tell(_asker, entry[0], dict(params)))
    _telling.add(task)
    task.add_done_callback(_telling.discard)


async def _tell(asker: Asker, token: int, params: dict[str, Any]) -> None:
    try:
        await asker(token, ELICITATION_COMPLETE, params)
    except Exception as e:  # the client is gone: nobody to tell
        say(f"the server's {ELICITATION_COMPLETE} reached no client: {e}")


_T = TypeVar("_T")


class Lingering(Generic[_T]):
    """The callers of ended calls that sent a URL-mode ``elicitation/create``: reachable for
    that elicitation's ``notifications/elicitation/complete`` :data:`COMPLETE_WINDOW` seconds
    more (the core's ``Calls`` and the front's ``CoreLink``, each under its own tokens). Only
    those calls are kept, so a call that asked no such thing costs nothing after it ended."""

    def __init__(self) -> None:
        self._url: set[int] = set()  # tokens in flight that sent a URL-mode elicitation
        self._kept: dict[int, tuple[_T, float]] = {}  # token → (caller, expiry), oldest first

    def asked(self, token: int, method: Any, params: Any) -> None:
        """A request went to the caller of ``token`` (in flight)."""
        if (
            method == "elicitation/create"
            and isinstance(params, Mapping)
            and params.get("mode") == "url"
        ):
            self._url.add(token)

    def ended(self, token: int, caller: _T) -> None:
        """The call of ``token`` ended; ``caller`` is who it asked."""
        now = time.monotonic()
        self._expire(now)
        if token in self._url:
            self._url.discard(token)
            self._kept[token] = (caller, now + COMPLETE_WINDOW)

    def reach(self, token: Any, method: Any) -> _T | None:
        """The caller an ended call's ``method`` still goes to, if any."""
        if method != ELICITATION_COMPLETE or type(token) is not int:
            return None
        self._expire(time.monotonic())
        entry = self._kept.get(token)
        return entry[0] if entry is not None else None

    def _expire(self, now: float) -> None:
        # One window for all: insertion order is expiry order.
        while self._kept:
            token, (_, expiry) = next(iter(self._kept.items()))
            if expiry > now:
                break
            del self._kept[token]


class RootsWindow(Generic[_T]):
    """The clients that sent ``notifications/roots/list_changed`` lately, by token: each reaches
    its caller for a ``roots/list`` :data:`ROOTS_WINDOW` seconds (the core's ``Calls`` and the
    front's ``CoreLink``, each under its own tokens). At most ``cap`` are kept: a client that
    floods notifications makes the oldest go first, never the memory grow."""

    def __init__(self, window: float = ROOTS_WINDOW, cap: int = 1024) -> None:
        self.window = window
        self.cap = cap
        self._kept: dict[int, tuple[_T, float]] = {}  # token → (caller, expiry), oldest first

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, token: int, caller: _T) -> None:
        now = time.monotonic()
        self._expire(now)
        while len(self._kept) >= self.cap:
            del self._kept[next(iter(self._kept))]
        self._kept[token] = (caller, now + self.window)

    def reach(self, token: Any, method: Any) -> _T | None:
        """The caller a ``roots/list`` for ``token`` goes to, if it is still in the window."""
        if method != "roots/list" or type(token) is not int:
            return None
        self._expire(time.monotonic())
        entry = self._kept.get(token)
        return entry[0] if entry is not None else None

    def _expire(self, now: float) -> None:
        while self._kept:  # one window for all: insertion order is expiry order
            token, (_, expiry) = next(iter(self._kept.items()))
            if expiry > now:
                break
            del self._kept[token]


def roots_asking(token: Any, window: float = ROOTS_WINDOW) -> Asking | None:
    """The stand-in call a server's ``roots/list`` after a client's
    ``notifications/roots/list_changed`` (``roots_changed`` [token]) goes to: that client, for
    ``window`` seconds (then :meth:`Asking.end`); None for a token that is not one."""
    if type(token) is not int:
        return None
    asking = Asking(ROOTS_CHANGED_METHOD, token, {"roots": {}}, roots_only=True)
    asyncio.get_running_loop().call_later(window, asking.end)
    return asking


def _refused(message: str) -> RpcError:
    return RpcError(INVALID_REQUEST, message)


def no_call(method: str) -> RpcError:
    """A server's request that came while no client call was in flight (a list, say)."""
    return _refused(
        f"spctl cannot forward {method}: no client call is in flight to ask (a server may ask "
        "its client only while serving that client's request; spctl fetches lists itself)"
    )


def ambiguous(method: str, calls: int) -> RpcError:
    """A stdio server's request while several requests to it are in flight."""
    return _refused(
        f"spctl cannot forward {method}: {calls} requests to this stdio server are in flight "
        "and a stdio message does not say which one it belongs to; retry when the server "
        "serves one call at a time"
    )


def unrelated(method: str) -> RpcError:
    """A remote server's request on its standalone GET stream: it belongs to no call."""
    return _refused(
        f"spctl cannot forward {method}: it came on the server's standalone GET stream, which "
        "belongs to no client call; a server must ask on the response stream of the request "
        "it serves (SEP-2260)"
    )


@dataclass(eq=False)
class Asking:
    """One client call in flight, and whether (and what) its client may be asked."""

    method: str  # the call's own method (tools/call …), for messages
    token: int | None  # None: nobody to ask
    capabilities: Mapping[str, Any]
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    ended: bool = False
    roots_only: bool = False  # a client's roots/list_changed: nothing but roots/list for it

    @classmethod
    def of(cls, method: str, meta: Mapping[str, Any] | None) -> Asking:
        ask = meta.get(ASK_META) if meta else None
        token = ask.get("token") if isinstance(ask, Mapping) else None
        caps = ask.get("capabilities") if isinstance(ask, Mapping) else None
        if type(token) is not int:
            return cls(method, None, {})
        return cls(method, token, caps if isinstance(caps, Mapping) else {})

    def refusal(self, method: str, params: Any) -> RpcError | None:
        """Why ``method`` cannot go to this call's client; None when it can."""
        capability = CAPABILITY.get(method)
        if capability is None:
            return RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if self.roots_only and method != "roots/list":
            return _refused(
                f"spctl cannot forward {method}: no client call is in flight to ask (after the "
                f"client's {ROOTS_CHANGED_METHOD} only its roots/list goes to it)"
            )
        if self.ended and self.roots_only:
            return _refused(
                f"spctl cannot forward {method}: the client's {ROOTS_CHANGED_METHOD} was more "
                f"than {ROOTS_WINDOW:g}s ago and no client call is in flight to ask"
            )
        if self.ended:
            return _refused(f"spctl cannot forward {method}: the {self.method} call has ended")
        if self.token is None or _asker is None:
            return _refused(
                f"spctl cannot forward {method}: the client of this {self.method} call cannot "
                "be asked (it has no back channel: a 2026-07-28 client, `spctl call`, or a "
                "client that is not MCP)"
            )
        return self.capability_refusal(method, params)

    def capability_refusal(self, method: str, params: Any) -> RpcError | None:
        """Why the client's declared capabilities do not cover ``method``; None if they do."""
        capability = CAPABILITY[method]
        declared = self.capabilities.get(capability)
        if not isinstance(declared, Mapping):
            return _refused(
                f"the client of this {self.method} call did not declare the {capability} "
                f"capability: spctl cannot forward {method} to it"
            )
        mode = params.get("mode") if isinstance(params, Mapping) else None
        if capability == "elicitation" and mode == "url" and "url" not in declared:
            return _refused(
                "the client of this call did not declare URL-mode elicitation "
                "(capabilities.elicitation.url): spctl cannot forward it"
            )
        return None

    async def ask(self, method: str, params: Any) -> Any:
        """The client's result for ``method``. Raises RpcError: a refusal, the client's error,
        or that the call ended before the client answered."""
        refusal = self.refusal(method, params)
        if refusal is not None:
            raise refusal
        assert _asker is not None
        assert self.token is not None
        if method == "elicitation/create":
            _remember_url(self.token, params)
        task = asyncio.ensure_future(_asker(self.token, method, params))
        self.tasks.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self.tasks.discard(task)
            if not task.done():  # we were cancelled ourselves: so is the question
                task.cancel()
        if task.cancelled():
            raise _refused(
                f"the {self.method} call ended before its client answered {method}: the "
                "answer would go nowhere"
            )
        return task.result()

    def end(self) -> None:
        """The call is over: what is still asked is cancelled (the server is told so)."""
        self.ended = True
        for task in list(self.tasks):
            task.cancel()
