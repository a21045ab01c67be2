"""The MCP servers' catalogs as the core serves them: what is listed, one router, one version.

Theory of operation: each runner holds what its server advertised (``runner.catalog``, kept
when the worker stops). A server is *listed* to MCP clients while it is up or coming back up,
and a lazy one unless disabled (a call starts it; see :func:`is_listed`). Every change of
what is listed bumps :attr:`Catalogs.version` and pushes ``catalogs`` [version] to each
watching face (``mcp_watch``), which then fetches :meth:`Catalogs.listed`. The core's own
:class:`Router` (``spctl tools``, routing problems in ``status``) is built once per version
from the same dicts, by the same conversion as the faces use
(:func:`~supervisor.rules.advertised.catalog_of`).

Filters: what is listed is each catalog after its entry's ``tools:``/``prompts:``/``resources:``
filters (:func:`~supervisor.rules.filters.advertised`), so every face and ``spctl tools`` see
the same; ``runner.catalog`` and the cache keep the whole catalog, so a reload that changes only
a filter re-lists (``changed``) without restarting the worker.

Lazy servers: a stopped lazy server is listed with its last known catalog, kept on disk by
:class:`~supervisor.core.catalog_cache.CatalogCache` (saved whenever a live worker advertises
one, forgotten when the extension leaves the registry). One with no known catalog is started
once to learn it (:meth:`Catalogs.learn`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from supervisor.core.catalog_cache import CatalogCache
from supervisor.core.fleet import Fleet
from supervisor.core.runner import Runner
from supervisor.rules.advertised import catalog_of
from supervisor.rules.filters import advertised
from supervisor.rules.router import Router, RouterError, prefixed
from supervisor.rules.states import LISTED, UP, State, Transition
from worker.channel import Channel, ChannelClosed

__all__ = ["Catalogs", "is_listed"]

log = structlog.get_logger("spctl.serve")


def is_listed(runner: Runner, state: State) -> bool:
    """Whether an MCP server in ``state`` is listed to MCP clients (given a catalog): up or
    coming back up; a lazy one unless disabled (a call starts it)."""
    if runner.ext.kind != "server":
        return False
    return state in LISTED or (runner.ext.lazy and state is not State.DISABLED)


class Catalogs:
    def __init__(self, fleet: Fleet, cache: CatalogCache) -> None:
        self.fleet = fleet
        self.cache = cache
        self.version = 0
        self._watchers: set[Channel] = set()
        self._router: tuple[int, Router] | None = None
        # name → (the whole catalog, the filters, what they keep): filtered once per change
        self._filtered: dict[str, tuple[dict[str, Any], tuple[Any, ...], dict[str, Any]]] = {}

    def listed(self) -> dict[str, dict[str, Any]]:
        """What the MCP servers that are listed now advertise (their catalogs, filtered by
        their entries), by server name."""
        return {
            r.name: self._advertised(r, r.catalog)
            for r in self.fleet
            if r.catalog is not None and is_listed(r, r.state)
        }

    def _advertised(self, runner: Runner, catalog: dict[str, Any]) -> dict[str, Any]:
        ext = runner.ext
        filters = (ext.tools, ext.prompts, ext.resources)
        if all(f.everything for f in filters):
            return catalog
        kept = self._filtered.get(runner.name)
        if kept is None or kept[0] is not catalog or kept[1] != filters:
            kept = (catalog, filters, advertised(ext, catalog))
            self._filtered[runner.name] = kept
        return kept[2]

    def router(self) -> Router:
        """The router over :meth:`listed`, rebuilt only when the version changed."""
        if self._router is None or self._router[0] != self.version:
            servers = sorted(self.listed().items())
            self._router = (self.version, Router(catalog_of(n, c) for n, c in servers))
        return self._router[1]

    def watch(self, channel: Channel) -> int:
        """Push ``catalogs`` [version] on ``channel`` at every change; the current version."""
        self._watchers.add(channel)
        return self.version

    def changed(self, name: str | None = None) -> None:
        """What is listed may have changed (``name``'s catalog or state; None: anything)."""
        runner = self.fleet.get(name) if name is not None else None
        if (
            runner is not None
            and runner.ext.lazy
            and runner.catalog is not None
            and runner.state is State.RUNNING  # the catalog comes from a live worker
        ):
            error = self.cache.save(runner.ext, runner.catalog)
            if error:
                log.warning("catalog cache", extension=runner.name, error=error)
        self.version += 1
        for channel in list(self._watchers):
            if channel.closed:
                self._watchers.discard(channel)
                continue
            with contextlib.suppress(ChannelClosed):
                channel.notify("catalogs", self.version)

    def on_transition(self, runner: Runner, tr: Transition) -> None:
        # Running: a new worker, maybe with other tools. Else only when the listing changes.
        if runner.ext.kind == "server" and (
            tr.to is State.RUNNING or is_listed(runner, tr.from_) != is_listed(runner, tr.to)
        ):
            self.changed(runner.name)

    def load(self, runner: Runner) -> None:
        """A stopped lazy server is listed with its cached catalog."""
        if runner.ext.kind == "server" and runner.ext.lazy and runner.state not in UP:
            catalog = self.cache.load(runner.ext)
            if catalog != runner.catalog:
                runner.catalog = catalog
                self.changed()

    def learn(self, runner: Runner) -> None:
        """An enabled lazy server with no known catalog is started once to learn it."""
        self.load(runner)
        ext = runner.ext
        if ext.kind == "server" and ext.lazy and ext.enabled and runner.catalog is None:
            runner.discover()

    def forget(self, name: str) -> None:
        """``name`` left the registry: its cached catalog goes too."""
        self.cache.forget(name)
        self._filtered.pop(name, None)
        self.changed()

    def problems(self) -> dict[str, list[dict[str, str]]]:
        """What cannot be routed (tools, prompts, resources), by server."""
        problems: dict[str, list[dict[str, str]]] = {}
        for p in self.router().problems:
            problems.setdefault(p.server, []).append(
                {"kind": p.kind, "name": p.name, "reason": p.reason}
            )
        return problems

    def tools(self, name: str | None = None) -> dict[str, Any]:
        """Every routed tool (aggregate name, extension, original name, description) and
        every tool that could not be routed, with the reason."""
        router = self.router()
        rows: list[dict[str, Any]] = []
        for scope in [name] if name is not None else router.servers:
            if scope not in router.servers:
                continue
            cursor: str | None = None
            while True:
                page, cursor = router.list_tools(scope, cursor, page_size=500)
                rows += [
                    {
                        "extension": scope,
                        "tool": tool["name"],
                        "name": _aggregate_name(router, scope, tool["name"]),
                        "description": tool.get("description", ""),
                    }
                    for tool in page
                ]
                if cursor is None:
                    break
        problems = [
            {"extension": p.server, "kind": p.kind, "name": p.name, "reason": p.reason}
            for p in router.problems
            if name is None or p.server == name
        ]
        return {"tools": rows, "problems": problems}


def _aggregate_name(router: Router, server: str, tool: str) -> str | None:
    """The tool's name on ``/mcp`` (``server__tool``), or None when it cannot be formed."""
    name = prefixed(server, tool)
    try:
        route = router.resolve_tool(None, name)
    except RouterError:
        return None
    return name if (route.server, route.name) == (server, tool) else None
