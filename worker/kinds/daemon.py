"""The daemon kind: find a DaemonModule in an extension and drive its lifecycle.

An extension provides its daemon either as ``create_module(config)`` (sync or async, returning
the object) or as one class with ``start``, ``stop`` and ``is_running`` defined in the
extension (several → the one whose name ends in ``Daemon``/``Module``; still several → error).
The class is built with ``cls(config)`` when its constructor takes a positional argument, else
``cls()`` with ``.config`` set. ``initialize`` and ``shutdown`` are optional.

Each lifecycle method may be sync or async. Async ones run on the worker's event loop; sync
ones run in a thread (``asyncio.to_thread``) so the loop keeps answering pings while a slow
``start()`` works. A sync method that returns an awaitable has it awaited on the loop.

As a :class:`~worker.kinds.base.Kind` (kinds ``daemon`` and ``plugin``), :class:`DaemonKind`
runs ``initialize`` and ``start``, then polls ``is_running()`` every ``check_interval``: False
ends the worker (``exiting``, then ``stop``/``shutdown``, exit 4); raising is a run-time error.
A sync ``is_running`` is polled from a thread of its own that wakes the event loop only when
the answer is not "running" (:func:`_poll`); an async one on the loop; a plugin without one
costs no timer at all.
A plugin (:mod:`worker.kinds.services`) also serves ``service`` requests; its lifecycle methods
are all optional.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from worker.kinds.base import Notify, Verdict
from worker.kinds.services import ServiceTable
from worker.loader import LoadError, Metadata, check_metadata, import_extension
from worker.log import say
from worker.protocol import EXIT_NOT_RUNNING, EXITING, SERVICE, BootSpec

__all__ = ["REQUIRED", "Daemon", "DaemonKind", "call_hook", "load", "load_daemon"]

REQUIRED = ("start", "stop", "is_running")
_SUFFIXES = ("Daemon", "Module")


async def call_hook(fn: Callable[[], Any]) -> Any:
    """Call a sync-or-async extension callable without blocking the loop for a sync one."""
    if inspect.iscoroutinefunction(fn):
        return await fn()
    result = await asyncio.to_thread(fn)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(frozen=True)
class Daemon:
    """A loaded daemon object and its validated metadata."""

    obj: Any
    metadata: Metadata

    def has(self, method: str) -> bool:
        return callable(getattr(self.obj, method, None))

    async def call(self, method: str) -> Any:
        """Run one lifecycle method; an absent optional one is a no-op returning None."""
        fn = getattr(self.obj, method, None)
        if not callable(fn):
            return None
        return await call_hook(fn)

    async def is_running(self) -> bool:
        """``is_running()``; an object without one (a plugin) runs as long as its worker."""
        if not self.has("is_running"):
            return True
        return bool(await self.call("is_running"))


async def _poll(fn: Callable[[], Any], interval: float) -> Any:
    """Call a sync ``is_running`` every ``interval`` s in a thread of its own until it returns
    something falsy or awaitable (returned, awaited), or raises (raised here). The event loop
    is not woken for the calls that say "running": an idle daemon's worker wakes once per
    interval, in that thread, instead of the loop's timer, an executor hand-off and the
    answer's wakeup each time. Cancelling stops the thread at its next wake (a call under way
    finishes; its answer is dropped)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    stop = threading.Event()

    def settle(outcome: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(outcome)

    def run() -> None:
        while not stop.wait(interval):
            try:
                outcome = fn()
            except BaseException as e:  # a run-time error of the extension, raised in wait()
                loop.call_soon_threadsafe(settle, None, e)
                return
            if not outcome or inspect.isawaitable(outcome):
                loop.call_soon_threadsafe(settle, outcome, None)
                return

    threading.Thread(target=run, name="is_running", daemon=True).start()
    try:
        outcome = await done
    finally:
        stop.set()
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _is_daemon_like(obj: object, required: tuple[str, ...] = REQUIRED) -> bool:
    return all(callable(getattr(obj, m, None)) for m in required)


def _candidates(module: ModuleType) -> list[type]:
    """Daemon-like classes defined in the extension itself (not imported from elsewhere)."""
    own = module.__name__
    found: list[type] = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and (value.__module__ == own or value.__module__.startswith(own + "."))
            and _is_daemon_like(value)
            and not inspect.isabstract(value)
            and not getattr(value, "_is_protocol", False)
            and value not in found
        ):
            found.append(value)
    return found


def _pick_class(module: ModuleType, where: str) -> type | None:
    found = _candidates(module)
    if len(found) > 1:
        preferred = [c for c in found if c.__name__.endswith(_SUFFIXES)]
        if len(preferred) != 1:
            names = ", ".join(sorted(c.__name__ for c in (preferred or found)))
            raise LoadError(
                f"several daemon classes in {where} ({names}); "
                "define create_module(config) to choose one"
            )
        found = preferred
    return found[0] if found else None


def _instantiate(cls: type, config: Mapping[str, Any]) -> Any:
    try:
        inspect.signature(cls).bind(config)
    except (TypeError, ValueError):
        obj = cls()
        if not hasattr(obj, "config"):
            # __slots__ or a read-only property: the author opted out of .config
            with contextlib.suppress(AttributeError):
                obj.config = config
        return obj
    return cls(config)


def _metadata(name: str, module: ModuleType, obj: object, where: str) -> Metadata:
    for owner in (obj, module):
        declared = getattr(owner, "metadata", None)
        if declared is not None and not callable(declared):
            return check_metadata(declared, where)
    out: Metadata = {"name": name}
    for key in ("name", "version", "description"):
        for owner in (obj, module):
            value = getattr(owner, key, None)
            if isinstance(value, str):
                out[key] = value
                break
    return out


async def load_daemon(
    name: str,
    module: ModuleType,
    config: Mapping[str, Any],
    where: str,
    *,
    required: tuple[str, ...] = REQUIRED,
) -> Daemon:
    """Build the daemon object an extension module provides.

    Raises LoadError when there is no entry point, the entry point returns something that is
    not a daemon, or the metadata is bad; lets exceptions of the extension's own
    ``create_module``/constructor propagate (they are load errors too).
    """
    factory = getattr(module, "create_module", None)
    if callable(factory):
        obj = factory(config)
        if inspect.isawaitable(obj):
            obj = await obj
        if not _is_daemon_like(obj, required):
            missing = [m for m in required if not callable(getattr(obj, m, None))]
            raise LoadError(
                f"create_module() in {where} returned {type(obj).__name__!r}, which lacks "
                + "/".join(missing)
            )
    elif not required:  # a plugin: its object is made by create_module, with its services
        raise LoadError(
            f"no create_module(config) in {where}: a plugin module defines one, returning an "
            "object with a 'services' mapping (service name → object)"
        )
    else:
        cls = _pick_class(module, where)
        if cls is None:
            raise LoadError(
                "no create_module(config) or daemon class with start/stop/is_running "
                f"found in {where}"
            )
        obj = _instantiate(cls, config)
    return Daemon(obj=obj, metadata=_metadata(name, module, obj, where))


class DaemonKind:
    """Kinds ``daemon`` and ``plugin`` (see the module docstring)."""

    def __init__(self, spec: BootSpec, daemon: Daemon, handlers: Mapping[str, Any]) -> None:
        self.kind = spec.kind
        self.daemon = daemon
        self.metadata: Mapping[str, Any] = daemon.metadata
        self.handlers: Mapping[str, Callable[..., Any]] = handlers
        self.interval = spec.check_interval

    async def start(self) -> None:
        await self.daemon.call("initialize")
        await self.daemon.call("start")

    async def wait(self) -> Verdict:
        fn = getattr(self.daemon.obj, "is_running", None)
        if not callable(fn):
            await asyncio.Event().wait()  # a plugin without one runs as long as its worker
        assert callable(fn)
        while True:
            if inspect.iscoroutinefunction(fn):
                await asyncio.sleep(self.interval)
                running = bool(await fn())
            else:
                running = bool(await _poll(fn, self.interval))
            if not running:
                reason = "is_running() returned False"
                say(reason)
                return Verdict(EXIT_NOT_RUNNING, (EXITING, {"reason": reason}), close=True)

    def on_ping(self) -> None:
        pass

    async def close(self) -> None:
        for method in ("stop", "shutdown"):
            try:
                await self.daemon.call(method)
            except Exception as e:
                say(f"{method}() raised (ignored): {type(e).__name__}: {e}")
                traceback.print_exception(e, file=sys.stderr)


async def load(spec: BootSpec, notify: Notify) -> DaemonKind:
    """Import the extension and build its daemon object (and a plugin's service table)."""
    module = import_extension(spec)
    required = () if spec.kind == "plugin" else REQUIRED  # a plugin's lifecycle is optional
    daemon = await load_daemon(spec.name, module, spec.config, spec.path, required=required)
    handlers = {}
    if spec.kind == "plugin":  # its services are served from ready on
        handlers[SERVICE] = ServiceTable(spec.name, daemon.obj, spec.provides).call
    return DaemonKind(spec, daemon, handlers)
