"""The one interface every kind of extension implements for :class:`worker.host.Host`.

A kind module (:mod:`worker.kinds.daemon`, ``handler``, ``sdk``, ``stdio``, ``remote``,
``remote_module``) has an ``async def load(spec, notify) -> Kind``: it imports or checks what
the boot spec names (any exception is a *load error*). The host then drives the :class:`Kind`:

1. :meth:`Kind.start` starts it and returns the catalog of an MCP server (None for a module).
   An exception is a run-time error (``error``, exit 1); :class:`LoadFailed` raised from the
   cause makes it a load error instead (``load_error``, exit 3); :class:`Unavailable` carries a
   message to show as is (a remote that cannot be reached: the restart policy applies).
2. :attr:`Kind.handlers` (the ``mcp`` or ``service`` requests it serves) are added to the
   channel, and the host says ``ready`` with :attr:`Kind.kind` and :attr:`Kind.metadata`.
3. :meth:`Kind.wait` serves until the kind ends on its own and returns the :class:`Verdict`
   (or raises: a run-time error). A kind that only ends on request never returns.
4. :meth:`Kind.on_ping` runs on each health ping (sync: it may start a task, never delay the
   answer); :meth:`Kind.close` stops the extension (on ``shutdown``, or for a verdict that
   asks for it), best effort, whatever state :meth:`Kind.start` reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker.mcp.publish import Catalog
from worker.protocol import ERROR, EXIT_ERROR, MCP, ROOTS_CHANGED

__all__ = [
    "Catalog",
    "Kind",
    "LoadFailed",
    "Notify",
    "ServerKind",
    "Session",
    "Unavailable",
    "Verdict",
]

Notify = Callable[..., None]
"""The channel's ``notify(method, *params)``."""


class LoadFailed(Exception):
    """Raised ``from`` the cause by :meth:`Kind.start`: report it as a load error."""


class Unavailable(Exception):
    """What the extension needs is not there (a remote server); the message is shown as is."""


@dataclass(frozen=True)
class Verdict:
    """How a kind ended on its own: the exit code, a notification to send first, and whether
    the extension is to be closed (best effort, in a bounded time) before the worker exits."""

    code: int
    notice: tuple[str, dict[str, Any]] | None = None
    close: bool = False

    @classmethod
    def gone(cls, what: str) -> Verdict:
        """The server or service the kind talks to ended: an ``error`` and exit 1."""
        return cls(EXIT_ERROR, (ERROR, {"message": what, "traceback": ""}))


class Kind(Protocol):
    """One hosted extension; see the module docstring."""

    @property
    def kind(self) -> str:
        """The kind ``ready`` reports (a ``handler`` package may be an ``sdk`` server)."""
        ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What ``ready`` reports about the extension; read after :meth:`start`."""
        ...

    @property
    def handlers(self) -> Mapping[str, Callable[..., Any]]:
        """The requests it serves to the supervisor; read after :meth:`start`."""
        ...

    async def start(self) -> Catalog | None: ...

    async def wait(self) -> Verdict: ...

    def on_ping(self) -> None: ...

    async def close(self) -> None: ...


class Session(Protocol):
    """A client session to an MCP server (:class:`worker.mcp.lean.LeanClient`,
    :class:`worker.mcp.client.McpClient`)."""

    label: str
    exited: asyncio.Future[str]

    @property
    def metadata(self) -> dict[str, Any]: ...

    async def start(self) -> Catalog: ...

    async def mcp(
        self, method: str, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Any: ...

    def arm(self) -> None: ...

    async def close(self) -> None: ...


class ServerKind:
    """Kinds ``stdio``, ``sdk`` and ``remote``: an MCP server behind a client :class:`Session`,
    served until it ends (then ``error`` and exit 1). A failed start is a load error."""

    def __init__(self, kind: str, server: Session) -> None:
        self.kind = kind
        self.server = server
        self.handlers: Mapping[str, Callable[..., Any]] = {MCP: server.mcp}
        roots_changed = getattr(server, "roots_changed", None)
        if roots_changed is not None:  # a client's roots/list_changed (worker.mcp.ask)
            self.handlers = {MCP: server.mcp, ROOTS_CHANGED: roots_changed}

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.server.metadata

    async def start(self) -> Catalog | None:
        try:
            return await self.server.start()
        except Exception as e:
            raise LoadFailed from e

    async def wait(self) -> Verdict:
        self.server.arm()  # the supervisor has the first catalog: send changes from now on
        how = await self.server.exited
        return Verdict.gone(f"the {self.server.label} {how}")

    def on_ping(self) -> None:
        pass

    async def close(self) -> None:
        await self.server.close()
