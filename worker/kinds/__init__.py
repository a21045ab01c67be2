"""One module per kind of extension, each implementing :class:`worker.kinds.base.Kind`.

:func:`load_kind` imports only the module of the kind a worker hosts: ``sdk`` imports the MCP
SDK (and ``remote`` only for its benchmark baseline, ``REMOTE_MCP_CLIENT=sdk``), ``remote`` and
``remote_module`` httpx2; the others the standard library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from worker.kinds.base import Kind, Notify
from worker.loader import LoadError
from worker.protocol import KINDS, BootSpec

__all__ = ["load_kind"]


async def _daemon(spec: BootSpec, notify: Notify) -> Kind:  # kinds daemon and plugin
    from worker.kinds import daemon

    return await daemon.load(spec, notify)


async def _handler(spec: BootSpec, notify: Notify) -> Kind:  # or sdk: see its load()
    from worker.kinds import handler

    return await handler.load(spec, notify)


async def _stdio(spec: BootSpec, notify: Notify) -> Kind:
    from worker.kinds import stdio

    return await stdio.load(spec, notify)


async def _remote(spec: BootSpec, notify: Notify) -> Kind:
    from worker.kinds import remote

    return await remote.load(spec, notify)


async def _remote_module(spec: BootSpec, notify: Notify) -> Kind:
    from worker.kinds import remote_module

    return await remote_module.load(spec, notify)


_LOADERS: dict[str, Callable[[BootSpec, Notify], Awaitable[Kind]]] = {
    "daemon": _daemon,
    "plugin": _daemon,
    "handler": _handler,
    "stdio": _stdio,
    "remote": _remote,
    "remote_module": _remote_module,
}


async def load_kind(spec: BootSpec, notify: Notify) -> Kind:
    """The kind the boot spec names, loaded. Raises LoadError or what loading raises."""
    loader = _LOADERS.get(spec.kind)
    if loader is None:
        raise LoadError(f"unsupported extension kind {spec.kind!r} (supported: {', '.join(KINDS)})")
    return await loader(spec, notify)
