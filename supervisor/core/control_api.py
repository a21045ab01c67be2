"""What the control socket offers: status, start/stop/restart, enable/disable, reload, logs.

Each handler validates the name, delegates to the extension's runner and turns a refusal into
an ``RpcError`` the CLI prints (exit 1). Reload re-reads both files, refuses the whole change
if anything is invalid (nothing that runs is touched), and otherwise applies the plan from
``reload.plan``: only added, removed, changed or (dis)enabled extensions move.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor import __version__
from supervisor.config import load_registry
from supervisor.core.resource_relay import SUBSCRIPTION_METHODS, ResourceRelay
from supervisor.core.runner import CallTimeout, CommandFailed, Runner, run_guarded
from supervisor.rules.reload_plan import plan
from supervisor.rules.router import Catalog, Router
from supervisor.rules.states import ACTIVE, LISTED, State
from worker.channel import Channel, ChannelClosed
from worker.protocol import INVALID_CONFIG, METHOD_NOT_FOUND, REFUSED, UNKNOWN_EXTENSION
from worker.protocol import TIMEOUT as CALL_TIMEOUT
from worker.rpc import RpcError

if TYPE_CHECKING:
    from supervisor.core.serve import Supervisor

__all__ = ["INVALID_CONFIG", "REFUSED", "UNKNOWN_EXTENSION", "ControlApi"]

log = structlog.get_logger("spctl.control")


FOLLOW_BUFFER_LIMIT = 1 << 20  # a `logs -f` client that reads slower than this loses lines


class ControlApi:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._reload_lock = anyio.Lock()
        self.relay = ResourceRelay(sup)
        self.server_up = self.relay.server_up
        self.resource_updated = self.relay.resource_updated

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "ping": lambda: "pong",
            "status": self.status,
            "start": self._verb("start"),
            "stop": self._verb("stop"),
            "restart": self._verb("restart"),
            "enable": self.enable,
            "disable": self.disable,
            "reload": self.reload,
            "worker_ping": self.worker_ping,
            "mcp_catalogs": self.mcp_catalogs,
            "tools": self.tools,
            "services": self.services,
            "call": self.call,
        }

    def stream_handlers(self) -> dict[str, Callable[..., Any]]:
        return {"logs": self.logs, "mcp": self.mcp, "mcp_watch": self.mcp_watch}

    # ----- lookups -----

    def runner(self, name: str) -> Runner:
        runner = self.sup.runners.get(name)
        if runner is None:
            if name in self.sup.invalid:
                raise RpcError(REFUSED, f"{name}: {self.sup.invalid[name]}")
            raise RpcError(UNKNOWN_EXTENSION, f"no extension named {name!r}")
        return runner

    def snapshot(self, runner: Runner) -> dict[str, Any]:
        snap = runner.snapshot()
        snap["enabled_source"] = self.sup.overrides.source(
            runner.name, self.sup.sections.get(runner.name, runner.ext.section)
        )
        return snap

    # ----- verbs -----

    def _verb(self, verb: str) -> Callable[[str], Any]:
        async def handler(name: str) -> dict[str, Any]:
            runner = self.runner(name)
            try:
                await getattr(runner, verb)()
            except CommandFailed as exc:
                raise RpcError(REFUSED, str(exc)) from None
            return self.snapshot(runner)

        return handler

    async def enable(self, name: str) -> dict[str, Any]:
        runner = self.runner(name)
        self.sup.overrides.set(runner.ext, True, self.sup.yaml_enabled.get(name, True))
        runner.update(dataclasses.replace(runner.ext, enabled=True))
        await runner.enable()
        if runner.ext.lazy:
            self.sup.learn_catalog(runner)
        else:
            try:
                await runner.start()
            except CommandFailed as exc:
                raise RpcError(REFUSED, f"enabled, but {exc}") from None
        return self.snapshot(runner)

    async def disable(self, name: str) -> dict[str, Any]:
        runner = self.runner(name)
        self.sup.overrides.set(runner.ext, False, self.sup.yaml_enabled.get(name, True))
        runner.update(dataclasses.replace(runner.ext, enabled=False))
        await runner.disable()
        return self.snapshot(runner)

    async def worker_ping(self, name: str) -> float:
        """Round trip supervisor ⇄ worker (tests, benchmarks, scripts checking liveness)."""
        try:
            return await self.runner(name).ping()
        except CommandFailed as exc:
            raise RpcError(REFUSED, str(exc)) from None

    def status(self, name: str | None = None) -> dict[str, Any]:
        sup = self.sup
        sup.limits.refresh_usage(sup.runners)
        if name is not None:
            exts = [self.snapshot(self.runner(name))]
        else:
            exts = [self.snapshot(r) for r in sup.runners.values()]
            exts += [
                {"name": n, "state": "failed", "reason": why} for n, why in sup.invalid.items()
            ]
        problems: dict[str, list[dict[str, str]]] = {}
        for p in self.router().problems:  # tools, prompts, resources that cannot be routed
            problems.setdefault(p.server, []).append(
                {"kind": p.kind, "name": p.name, "reason": p.reason}
            )
        for ext in exts:
            if ext.get("kind") == "server":
                ext["routing_problems"] = problems.get(ext["name"], [])
        return {
            "supervisor": {
                "pid": os.getpid(),
                "version": __version__,
                "uptime": time.monotonic() - sup.started,
                "extensions_dir": str(sup.opts.extensions),
                "socket": str(sup.opts.socket),
                "overrides": str(sup.overrides.path),
                "limits_enforcement": sup.limits.mode,
                "mcp_front": sup.front.snapshot() if sup.front is not None else None,
                "limits_reason": sup.limits.reason,
            },
            "extensions": exts,
        }

    # ----- reload -----

    async def reload(self, dry_run: bool = False) -> dict[str, Any]:
        """Apply the difference between what runs and the files; all or nothing on errors."""
        async with self._reload_lock:
            sup = self.sup
            loaded = load_registry(sup.opts.extensions)
            if loaded.errors:
                raise RpcError(
                    INVALID_CONFIG,
                    f"configuration is invalid ({len(loaded.errors)} errors); nothing changed",
                    {"errors": [str(e) for e in loaded.errors]},
                )
            old = {n: r.ext for n, r in sup.runners.items()}
            saved = (dict(sup.yaml_enabled), dict(sup.sections))
            new, invalid = sup.split(loaded)
            running = frozenset(n for n, r in sup.runners.items() if r.state in ACTIVE)
            p = plan(old, new, running)
            if dry_run:
                sup.yaml_enabled, sup.sections = saved
                return {"plan": p.as_dict(), "applied": False, "errors": []}
            sup.invalid = invalid
            log.info("reload", **{k: v for k, v in p.as_dict().items() if v and k != "keep"})
            errors: list[str] = []
            async with anyio.create_task_group() as tg:
                for name in p.stop:
                    tg.start_soon(self._retire, name)
                for name in p.disable:
                    sup.runners[name].update(new[name])
                    tg.start_soon(sup.runners[name].disable)
                for name in p.update:
                    sup.learn_catalog(self._ensure_runner(new[name]))
                for name in p.restart:
                    sup.runners[name].update(new[name])
                    tg.start_soon(self._act, sup.runners[name].restart, errors)
                for name in p.start:
                    runner = self._ensure_runner(new[name])
                    tg.start_soon(self._enable_and_start, runner, errors)
            return {"plan": p.as_dict(), "applied": True, "errors": errors}

    async def reload_quietly(self) -> None:
        """SIGHUP: like ``spctl reload``; the outcome goes to the log."""
        try:
            result = await self.reload()
        except RpcError as exc:
            log.error("reload refused", reason=exc.message, errors=(exc.data or {}).get("errors"))
            return
        if result["errors"]:
            log.warning("reload applied with errors", errors=result["errors"])

    def _ensure_runner(self, ext: Any) -> Runner:
        sup = self.sup
        runner = sup.runners.get(ext.name)
        if runner is None:
            runner = Runner(ext, sup.ctx)
            sup.runners[ext.name] = runner
            assert sup.tg is not None
            sup.tg.start_soon(run_guarded, runner)
        else:
            runner.update(ext)
        return runner

    async def _retire(self, name: str) -> None:
        runner = self.sup.runners[name]
        await runner.retire()
        self.sup.runners.pop(name, None)
        self.sup.catalogs.forget(name)  # it left the registry: its cached tools go too

    async def _enable_and_start(self, runner: Runner, errors: list[str]) -> None:
        await runner.enable()
        if runner.ext.lazy:
            self.sup.learn_catalog(runner)
        else:
            await self._act(runner.start, errors)

    @staticmethod
    async def _act(action: Callable[[], Any], errors: list[str]) -> None:
        try:
            await action()
        except CommandFailed as exc:
            errors.append(str(exc))

    # ----- logs -----

    def logs(self, channel: Channel, name: str, lines: int = 50, follow: bool = False) -> Any:
        """The last ``lines`` of output; with ``follow`` new lines are pushed as ``log``
        notifications on this connection until the client goes away (across restarts)."""
        runner = self.runner(name)
        tail = list(runner.output)[-lines:] if lines > 0 else []
        if follow:
            dropped = 0

            def push(entry: tuple[float, str, str]) -> None:
                nonlocal dropped
                if channel.closed:
                    runner.subscribers.discard(push)
                    return
                if channel.write_buffer_size() > FOLLOW_BUFFER_LIMIT:
                    dropped += 1
                    return
                try:
                    if dropped:
                        channel.notify("log", time.time(), "spctl", f"[{dropped} lines dropped]")
                        dropped = 0
                    channel.notify("log", *entry)
                except ChannelClosed:
                    runner.subscribers.discard(push)

            runner.subscribers.add(push)
        return {"lines": [list(e) for e in tail]}

    # ----- MCP -----

    def _catalogs(self) -> dict[str, dict[str, Any]]:
        """Catalogs of the MCP servers that are listed now (see :func:`listed`)."""
        return {
            n: r.catalog
            for n, r in self.sup.runners.items()
            if r.catalog is not None and listed(r, r.state)
        }

    def mcp_catalogs(self) -> dict[str, Any]:
        return {"version": self.sup.catalog_version, "servers": self._catalogs()}

    def mcp_watch(self, channel: Channel) -> dict[str, Any]:
        """Push ``catalogs`` [version] on this connection whenever a catalog changes."""
        self.sup.catalog_watchers.add(channel)
        return {"version": self.sup.catalog_version}

    def router(self) -> Router:
        return Router(
            Catalog(
                server=name,
                tools=tuple(c.get("tools") or ()),
                resources=tuple(c.get("resources") or ()),
                resource_templates=tuple(c.get("resourceTemplates") or ()),
                prompts=tuple(c.get("prompts") or ()),
            )
            for name, c in sorted(self._catalogs().items())
        )

    async def mcp(
        self,
        channel: Channel,
        server: str,
        method: str,
        params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Forward one MCP request to ``server``'s worker; progress comes back on ``channel``.
        Resource (un)subscriptions are the relay's (see resource_relay)."""
        if method in SUBSCRIPTION_METHODS:
            runner = self.runner(server)
            if runner.ext.kind != "server":
                raise RpcError(REFUSED, f"{server} is a module, not an MCP server")
            return await self.relay.request(channel, runner, method, params or {})

        def progress(params: list[Any]) -> None:
            with contextlib.suppress(ChannelClosed):
                channel.notify("progress", *params)

        return await self._forward(server, method, params or {}, meta or {}, progress)

    async def _forward(
        self,
        server: str,
        method: str,
        params: dict[str, Any],
        meta: dict[str, Any],
        progress: Callable[[list[Any]], None] | None,
    ) -> Any:
        runner = self.runner(server)
        if runner.ext.kind != "server":
            raise RpcError(REFUSED, f"{server} is a module, not an MCP server")
        try:
            deadline = None
            if runner.ext.lazy and runner.state is not State.RUNNING:
                await runner.start()  # lazy: started by the first call that needs it
            elif runner.restarting:  # back in ~0.1 s after a crash: wait, within its timeout
                deadline = time.monotonic() + runner.ext.timeout
                await runner.wait_while_restarting(runner.ext.timeout)
            return await runner.mcp(method, params, meta, progress, deadline=deadline)
        except CallTimeout as exc:
            raise RpcError(CALL_TIMEOUT, str(exc)) from None
        except CommandFailed as exc:
            raise RpcError(REFUSED, str(exc)) from None

    def tools(self, name: str | None = None) -> dict[str, Any]:
        """Every routed tool (aggregate name, extension, original name, description) and
        every tool that could not be routed, with the reason."""
        router = self.router()
        if name is not None:
            runner = self.runner(name)
            if runner.ext.kind != "server":
                raise RpcError(REFUSED, f"{name} is a module, not an MCP server")
        listed: list[dict[str, Any]] = []
        for scope in [name] if name is not None else router.servers:
            if scope not in router.servers:
                continue
            cursor: str | None = None
            while True:
                page, cursor = router.list_tools(scope, cursor, page_size=500)
                for tool in page:
                    listed.append(
                        {
                            "extension": scope,
                            "tool": tool["name"],
                            "name": _aggregate_name(router, scope, tool["name"]),
                            "description": tool.get("description", ""),
                        }
                    )
                if cursor is None:
                    break
        problems = [
            {"extension": p.server, "kind": p.kind, "name": p.name, "reason": p.reason}
            for p in router.problems
            if name is None or p.server == name
        ]
        return {"tools": listed, "problems": problems}

    async def call(self, server: str, tool: str, arguments: dict[str, Any] | None = None) -> Any:
        """``spctl call``: one tools/call through the supervisor; for a plugin module, one
        ``"<service>.<method>"`` call, answered as ``{"service": name, "result": ...}``."""
        runner = self.runner(server)
        if runner.ext.kind == "module":
            return {"service": tool, "result": await self._service(runner, tool, arguments)}
        params = {"name": tool, "arguments": arguments or {}}
        return await self._forward(server, "tools/call", params, {}, None)

    def services(self) -> dict[str, Any]:
        """``spctl services``: every service a plugin module provides, by name."""
        rows = [
            {
                "service": service,
                "module": r.name,
                "type": r.ext.type,
                "state": r.state.value,
                "lazy": r.ext.lazy,
            }
            for r in self.sup.runners.values()
            if r.ext.kind == "module"
            for service in r.ext.provides
        ]
        return {"services": sorted(rows, key=lambda row: row["service"])}

    async def service_for_worker(self, caller: str, name: str, params: Any) -> Any:
        """A worker's ``worker.api.call_service``: to whichever plugin provides the service."""
        service = name.split(".", 1)[0]
        provider = next(
            (
                r
                for r in self.sup.runners.values()
                if r.ext.kind == "module" and service in r.ext.provides
            ),
            None,
        )
        if provider is None:
            raise RpcError(METHOD_NOT_FOUND, f"no module provides the service {service!r}")
        log.debug("service call", caller=caller, service=name, provider=provider.name)
        return await self._service(provider, name, params)

    async def _service(self, runner: Runner, name: str, params: Any) -> Any:
        ext = runner.ext
        if ext.module_type != "plugin":
            raise RpcError(REFUSED, f"{ext.name} is a {ext.module_type} module: it has no services")
        service = name.split(".", 1)[0]
        if "." not in name or service not in ext.provides:
            provides = ", ".join(ext.provides) or "nothing"
            raise RpcError(
                METHOD_NOT_FOUND,
                f"{ext.name} provides no {name!r}: call '<service>.<method>' of {provides}",
            )
        try:
            deadline = None
            if ext.lazy and runner.state is not State.RUNNING:
                await runner.start()  # lazy: started by the first call that needs it
            elif runner.restarting:  # the wait and the call share one timeout
                deadline = time.monotonic() + ext.timeout
                await runner.wait_while_restarting(ext.timeout)
            return await runner.service(name, params, deadline)
        except CallTimeout as exc:
            raise RpcError(CALL_TIMEOUT, str(exc)) from None
        except CommandFailed as exc:
            raise RpcError(REFUSED, str(exc)) from None


def listed(runner: Runner, state: State) -> bool:
    """Whether an MCP server in ``state`` is listed to MCP clients (given a catalog): up or
    coming back up; a lazy one unless disabled (a call starts it)."""
    if runner.ext.kind != "server":
        return False
    return state in LISTED or (runner.ext.lazy and state is not State.DISABLED)


def _aggregate_name(router: Router, server: str, tool: str) -> str | None:
    """The tool's name on ``/mcp`` (``server__tool``), or None when it cannot be formed."""
    from supervisor.rules.router import RouterError, prefixed

    name = prefixed(server, tool)
    try:
        route = router.resolve_tool(None, name)
    except RouterError:
        return None
    return name if (route.server, route.name) == (server, tool) else None
