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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.protocol import ASK_META, INVALID_REQUEST, METHOD_NOT_FOUND
from worker.rpc import RpcError

__all__ = [
    "CAPABILITY",
    "OFFERED",
    "Asker",
    "Asking",
    "ambiguous",
    "no_call",
    "set_asker",
    "unrelated",
]

CAPABILITY: Mapping[str, str] = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
"""The server requests that go to a client, and the client capability each needs."""
OFFERED: Mapping[str, Any] = {"elicitation": {"form": {}}, "sampling": {}, "roots": {}}
"""What the worker declares to its server in ``initialize``: everything it can forward (each
call's own client may still lack it: then that call's request is refused)."""

Asker = Callable[[int, str, Any], Awaitable[Any]]
"""Sends ``ask`` [token, method, params] to the supervisor; the client's result."""
_asker: Asker | None = None


def set_asker(asker: Asker | None) -> None:
    """The host's way up the channel (``worker.host``)."""
    global _asker
    _asker = asker


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
