"""The services a plugin module provides (``moduleType: plugin``, ``provides: [...]``).

A plugin is loaded like a daemon (``create_module(config)`` or a class; the lifecycle methods
``initialize``/``start``/``stop``/``is_running``/``shutdown`` are all optional for a plugin)
and has a ``services`` attribute: a mapping from each service name it provides to the object
that implements it. A call ``"<service>.<method>"`` with ``params`` runs that object's public
method of that name: a map of params becomes keyword arguments, a list positional ones, none
(or null) no arguments. Sync methods run in a thread (the worker keeps answering pings), async
ones on the loop; the result must be msgpack-able (plain data).

Errors keep JSON-RPC's codes: an unknown service or method → -32601, arguments the method does
not take → -32602, an exception raised by the method → -32000 with ``Type: message`` (the
traceback goes to the worker's stderr, so ``spctl logs`` has it).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from worker.loader import LoadError
from worker.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, SERVICE_ERROR
from worker.rpc import RpcError

__all__ = ["INVALID_PARAMS", "METHOD_NOT_FOUND", "SERVICE_ERROR", "ServiceTable"]


class ServiceTable:
    """``provides`` checked against the plugin object's ``services`` when it is loaded."""

    def __init__(self, name: str, obj: object, provides: tuple[str, ...]) -> None:
        services = getattr(obj, "services", None)
        if services is None and not provides:
            services = {}  # a plugin that provides nothing needs no services
        if not isinstance(services, Mapping):
            raise LoadError(
                f"plugin {name} provides {', '.join(provides) or 'nothing'} but its module "
                "object has no 'services' mapping (service name → object)"
            )
        missing = [s for s in provides if s not in services]
        if missing:
            raise LoadError(
                f"plugin {name}: 'provides' lists {', '.join(missing)} but 'services' has "
                f"only {', '.join(sorted(map(str, services))) or 'nothing'}"
            )
        self.name = name
        self.provides = provides
        self._services = {s: services[s] for s in provides}  # only what the registry declares

    async def call(self, name: str, params: Any = None) -> Any:
        """The ``service`` request: run ``<service>.<method>`` with ``params``."""
        if not isinstance(name, str) or "." not in name:
            raise RpcError(INVALID_PARAMS, f"service: {name!r} is not '<service>.<method>'")
        service, method = name.split(".", 1)
        target = self._services.get(service)
        if target is None:
            have = ", ".join(self.provides) or "nothing"
            raise RpcError(METHOD_NOT_FOUND, f"{self.name} does not provide {service!r} ({have})")
        fn = getattr(target, method, None) if not method.startswith("_") else None
        if not callable(fn):
            raise RpcError(METHOD_NOT_FOUND, f"service {service!r} has no method {method!r}")
        args, kwargs = _arguments(params)
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            raise RpcError(INVALID_PARAMS, f"{name}: {e}") from None
        except ValueError:  # no signature to check (a builtin): let the call say it
            pass
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(*args, **kwargs)
            result = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as e:
            traceback.print_exception(e, file=sys.stderr)
            raise RpcError(SERVICE_ERROR, f"{name}: {type(e).__name__}: {e}") from None


def _arguments(params: Any) -> tuple[list[Any], dict[str, Any]]:
    if params is None:
        return [], {}
    if isinstance(params, Mapping):
        if not all(isinstance(k, str) for k in params):
            raise RpcError(INVALID_PARAMS, "service params: map keys must be strings")
        return [], dict(params)
    if isinstance(params, list | tuple):
        return list(params), {}
    raise RpcError(INVALID_PARAMS, "service params must be a map, a list or null")
