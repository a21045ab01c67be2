"""What extension authors import from spctl: keep it tiny and dependency-free.

A daemon module is any object with ``start``, ``stop`` and ``is_running`` (each sync or
async), and optionally ``initialize`` and ``shutdown``, returned by ``create_module(config)``
or defined as one class in the extension. Sync methods run in a thread, async ones on the
worker's event loop. The Protocols below are for type checkers only; nothing has to inherit.

Processes an extension starts should go through :func:`spawn_argv`, so they die when the
worker dies (see :mod:`worker.trampoline`)::

    subprocess.Popen(spawn_argv(["node", "server.js"]))
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from worker.trampoline import trampoline_argv as spawn_argv

__all__ = ["DaemonModule", "FullDaemonModule", "spawn_argv"]


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
