"""What the control socket offers: status, start/stop/restart, enable/disable, reload, logs, MCP.

Only a translation of RPC ⇄ calls: each handler finds the runner with ``Fleet.require``,
calls the fleet, the catalogs, the reloader or the runner, and turns a refusal into an
``RpcError`` the CLI prints (exit 1). Every call into an extension (an MCP request, a plugin
service) goes through :meth:`ControlApi._call_extension`: a lazy one is started by the first
call, one coming back after a crash is waited for within the same timeout as the call.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from supervisor import __version__
from supervisor.core.audit import AuditLog
from supervisor.core.calls import WorkerGone
from supervisor.core.catalogs import Catalogs
from supervisor.core.fleet import Fleet, NotHosted
from supervisor.core.history import Recorder
from supervisor.core.ordering import Ordering
from supervisor.core.process import zygote_status
from supervisor.core.reloader import InvalidConfig, Reloader
from supervisor.core.resource_relay import SUBSCRIPTION_METHODS, ResourceRelay
from supervisor.core.runner import CallTimeout, CommandFailed, Runner
from supervisor.core.watchdog import LimitsEnforcer
from supervisor.install.origins import origin_of
from supervisor.rules.audit import AUDITED_METHODS
from supervisor.rules.filters import refusal
from supervisor.rules.states import State
from worker.channel import Channel, ChannelClosed
from worker.protocol import (
    ASK,
    CANCELLED,
    INVALID_CONFIG,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REFUSED,
    ROOTS_CHANGED,
    UNKNOWN_EXTENSION,
)
from worker.protocol import TIMEOUT as CALL_TIMEOUT
from worker.rpc import RpcError

__all__ = ["INVALID_CONFIG", "REFUSED", "UNKNOWN_EXTENSION", "ControlApi", "own_usage"]

log = structlog.get_logger("spctl.control")


FOLLOW_BUFFER_LIMIT = 1 << 20  # a `logs -f` client that reads slower than this loses lines


class ControlApi:
    def __init__(
        self,
        fleet: Fleet,
        catalogs: Catalogs,
        reloader: Reloader,
        relay: ResourceRelay,
        order: Ordering,
        limits: LimitsEnforcer,
        *,
        about: dict[str, Any],
        front: Callable[[], dict[str, Any] | None],
        audit: AuditLog | None = None,
        history: Recorder | None = None,
    ) -> None:
        """``order`` starts dependencies first and stops dependents first; ``about``: what
        ``status`` says of the supervisor besides uptime, limits and ``front()`` (its row)."""
        self.fleet = fleet
        self.catalogs = catalogs
        self.reloader = reloader
        self.relay = relay
        self.order = order
        self._limits = limits
        self._about = about
        self._front = front
        self._started = time.monotonic()
        self.audit = audit
        # Who is at the other end of a control connection (``face``: it called ``mcp``), for
        # the audit log; serve sets it from the control server's peer credentials.
        self.client_of: Callable[[Channel, bool], str] = lambda channel, face: channel.name
        self._history = history

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "ping": lambda: "pong",
            "status": self.status,
            "start": self._verb(self.order.start),
            "stop": self._verb(self.order.stop_one),
            "restart": self._verb(self.order.restart),
            "enable": self.enable,
            "disable": self.disable,
            "reload": self.reload,
            "worker_ping": self.worker_ping,
            "mcp_catalogs": self.mcp_catalogs,
            "tools": self.tools,
            "services": self.services,
            "history": self.history,
        }

    def stream_handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "logs": self.logs,
            "mcp": self.mcp,
            "mcp_watch": self.mcp_watch,
            "call": self.call,
            ROOTS_CHANGED: self.roots_changed,
        }

    def runner(self, name: str, kind: str | None = None) -> Runner:
        """The runner of ``name`` (of ``kind``: "server" refuses a module), or an RpcError."""
        try:
            runner = self.fleet.require(name)
        except NotHosted as exc:
            raise RpcError(UNKNOWN_EXTENSION if exc.reason is None else REFUSED, str(exc)) from None
        if kind == "server" and runner.ext.kind != "server":
            raise RpcError(REFUSED, f"{name} is a module, not an MCP server")
        return runner

    # ----- verbs -----

    def _verb(
        self, action: Callable[[Runner], Awaitable[None]]
    ) -> Callable[[str], Awaitable[dict[str, Any]]]:
        async def handler(name: str) -> dict[str, Any]:
            runner = self.runner(name)
            await _refused(action(runner))
            return self.fleet.snapshot(runner)

        return handler

    async def enable(self, name: str) -> dict[str, Any]:
        runner = self.runner(name)
        self.fleet.set_enabled(runner, True)
        await runner.enable()
        if runner.ext.lazy:
            self.catalogs.learn(runner)
        else:
            await _refused(self.order.start(runner), "enabled, but ")
        return self.fleet.snapshot(runner)

    async def disable(self, name: str) -> dict[str, Any]:
        runner = self.runner(name)
        self.fleet.set_enabled(runner, False)
        await runner.disable()
        return self.fleet.snapshot(runner)

    async def worker_ping(self, name: str) -> float:
        """Round trip supervisor ⇄ worker (tests, benchmarks, scripts checking liveness)."""
        return float(await _refused(self.runner(name).ping()))

    def status(self, name: str | None = None) -> dict[str, Any]:
        self._limits.refresh_usage(self.fleet.runners)
        about = {
            "pid": os.getpid(),
            "version": __version__,
            "zygote": zygote_status(),
            **self._about,
            "overrides": str(self.fleet.overrides.path),
            "uptime": time.monotonic() - self._started,
            **own_usage(),
            "limits_enforcement": self._limits.mode,
            "mcp_front": self._front(),
            "limits_reason": self._limits.reason,
            # the workers the watchdog samples (a limit no cgroup enforces for them)
            "watchdog": sorted(self._limits.watched(self.fleet.runners)),
        }
        if name is not None:
            runner = self.runner(name)
            exts = [{**self.fleet.snapshot(runner), "origin": origin_of(runner.ext)}]
        else:
            exts = [self.fleet.snapshot(r) for r in self.fleet]
            exts += [
                {"name": n, "state": "failed", "reason": why}
                for n, why in self.fleet.invalid.items()
            ]
        problems = self.catalogs.problems()
        for ext in exts:
            if ext.get("kind") == "server":
                ext["routing_problems"] = problems.get(ext["name"], [])
        return {"supervisor": about, "extensions": exts}

    def history(self, name: str | None = None) -> dict[str, Any]:
        """The last minutes of memory, CPU and state (:mod:`supervisor.core.history`)."""
        if self._history is None:
            raise RpcError(METHOD_NOT_FOUND, "this supervisor keeps no history")
        if name is not None:
            self.runner(name)
        return self._history.export(name)

    async def reload(self, dry_run: bool = False) -> dict[str, Any]:
        try:
            return await self.reloader.reload(dry_run)
        except InvalidConfig as exc:
            raise RpcError(INVALID_CONFIG, str(exc), {"errors": exc.errors}) from None

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

    def mcp_catalogs(self, whole: bool = False) -> dict[str, Any]:
        """What is listed (filtered); ``whole``: every server's last known catalog as its
        worker advertised it, unfiltered (``spctl validate`` checks the filters' globs)."""
        if whole:
            servers = {
                r.name: r.catalog
                for r in self.fleet
                if r.catalog is not None and r.ext.kind == "server"
            }
            return {"version": self.catalogs.version, "servers": servers}
        return {"version": self.catalogs.version, "servers": self.catalogs.listed()}

    def mcp_watch(self, channel: Channel) -> dict[str, Any]:
        return {"version": self.catalogs.watch(channel)}  # pushes ``catalogs`` [version]

    async def mcp(
        self,
        channel: Channel,
        server: str,
        method: str,
        params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Forward one MCP request to ``server``'s worker; progress comes back on ``channel``.
        Resource (un)subscriptions are the relay's (see resource_relay). A request for what the
        entry's filters hide is answered as for what does not exist (see rules.filters)."""
        if self.audit is not None and method in AUDITED_METHODS:
            client = self.client_of(channel, True)  # a name in meta["client"] goes first
            forward = self._mcp(channel, server, method, params, meta)
            return await self._audited(client, server, method, params, meta, forward)
        return await self._mcp(channel, server, method, params, meta)

    async def _mcp(
        self,
        channel: Channel,
        server: str,
        method: str,
        params: dict[str, Any] | None,
        meta: dict[str, Any] | None,
    ) -> Any:
        runner = self.runner(server, "server")
        _check_filters(runner, method, params or {})
        if method in SUBSCRIPTION_METHODS:
            return await self.relay.request(channel, runner, method, params or {})

        def progress(params: list[Any]) -> None:
            with contextlib.suppress(ChannelClosed):
                channel.notify("progress", *params)

        async def ask(params: list[Any]) -> Any:  # a server's question, to the caller's client
            return await channel.request(ASK, *params)

        return await self._call_extension(
            runner,
            lambda d: runner.mcp(
                method, params or {}, meta or {}, progress, deadline=d, on_ask=ask
            ),
        )

    def roots_changed(self, channel: Channel, server: str, token: int) -> bool:
        """An MCP client's ``notifications/roots/list_changed`` for ``server`` (``token``: the
        front's ask token for that client): to the server's worker, if one is up; whether it
        was. The server's ``roots/list`` then comes back as an ``ask`` on ``channel``."""
        if type(token) is not int:
            raise RpcError(INVALID_PARAMS, f"{ROOTS_CHANGED}: the token must be an int")
        runner = self.runner(server, "server")

        async def ask(params: list[Any]) -> Any:
            return await channel.request(ASK, *params)

        return runner.calls.roots_changed(token, ask)

    async def _call_extension(
        self, runner: Runner, call: Callable[[float | None], Awaitable[Any]]
    ) -> Any:
        """``call(deadline)`` into ``runner``'s worker: a lazy one is started first (after its
        dependencies); one coming back after a crash is waited for, within the call's timeout."""
        try:
            deadline = None
            if runner.ext.lazy and runner.state is not State.RUNNING:
                await self.order.start(runner)  # lazy: started by the first call that needs it
            elif runner.restarting:
                deadline = time.monotonic() + runner.ext.timeout
                await runner.wait_while_restarting(runner.ext.timeout)
            try:
                return await call(deadline)
            except WorkerGone as gone:  # dead before the call was sent: it goes to the next one
                if deadline is None:
                    deadline = time.monotonic() + runner.ext.timeout
                await runner.wait_replaced(gone.inc, deadline - time.monotonic())
                await runner.wait_while_restarting(deadline - time.monotonic())
                return await call(deadline)
        except CallTimeout as exc:
            raise RpcError(CALL_TIMEOUT, str(exc)) from None
        except CommandFailed as exc:
            raise RpcError(REFUSED, str(exc)) from None

    def tools(self, name: str | None = None) -> dict[str, Any]:
        """``spctl tools [EXT]``: every routed tool, and every one that could not be routed."""
        if name is not None:
            self.runner(name, "server")
        return self.catalogs.tools(name)

    async def call(
        self,
        channel: Channel,
        server: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
    ) -> Any:
        """``spctl call``: one tools/call through the supervisor; for a plugin module, one
        ``"<service>.<method>"`` call, answered as ``{"service": name, "result": ...}``."""
        if self.audit is None:
            return await self._call(server, tool, arguments)
        module = (r := self.fleet.get(server)) is not None and r.ext.kind == "module"
        method = "service" if module else "tools/call"
        params = {"name": tool, "arguments": arguments or {}}
        client = self.client_of(channel, False)
        forward = self._call(server, tool, arguments)
        return await self._audited(client, server, method, params, None, forward)

    async def _call(self, server: str, tool: str, arguments: dict[str, Any] | None) -> Any:
        runner = self.runner(server)
        if runner.ext.kind == "module":
            return {"service": tool, "result": await self._service(runner, tool, arguments)}
        params = {"name": tool, "arguments": arguments or {}}
        _check_filters(runner, "tools/call", params)
        return await self._call_extension(
            runner, lambda d: runner.mcp("tools/call", params, {}, None, deadline=d)
        )

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
            for r in self.fleet
            if r.ext.kind == "module"
            for service in r.ext.provides
        ]
        return {"services": sorted(rows, key=lambda row: row["service"])}

    async def service_for_worker(self, caller: str, name: str, params: Any) -> Any:
        """A worker's ``worker.api.call_service``: to whichever plugin provides the service."""
        service = name.split(".", 1)[0]
        provider = self.fleet.provider(service)
        if provider is None:
            raise RpcError(METHOD_NOT_FOUND, f"no module provides the service {service!r}")
        log.debug("service call", caller=caller, service=name, provider=provider.name)
        if self.audit is None:
            return await self._service(provider, name, params)
        call = {"name": name, "arguments": params}
        forward = self._service(provider, name, params)
        return await self._audited(
            f"extension {caller}", provider.name, "service", call, None, forward
        )

    async def _audited(
        self,
        client: str,
        extension: str,
        method: str,
        params: Any,
        meta: dict[str, Any] | None,
        forward: Awaitable[Any],
    ) -> Any:
        """Await ``forward`` (one routed call) and queue its audit record, whatever it ends in."""
        assert self.audit is not None
        wall, started = time.time(), time.monotonic()
        result: Any = None
        code: int | None = CANCELLED  # cancelled (the caller went away, shutdown): said as such
        try:
            result = await forward
            code = None
            return result
        except RpcError as exc:
            code = exc.code
            raise
        finally:
            duration = time.monotonic() - started
            self.audit.record(client, extension, method, params, meta, wall, duration, result, code)

    async def _service(self, runner: Runner, name: str, params: Any) -> Any:
        ext = runner.ext
        if ext.module_type != "plugin":
            raise RpcError(REFUSED, f"{ext.name} is a {ext.module_type} module: it has no services")
        if "." not in name or name.split(".", 1)[0] not in ext.provides:
            provides = ", ".join(ext.provides) or "nothing"
            raise RpcError(
                METHOD_NOT_FOUND,
                f"{ext.name} provides no {name!r}: call '<service>.<method>' of {provides}",
            )
        return await self._call_extension(runner, lambda d: runner.service(name, params, d))


def own_usage() -> dict[str, Any]:
    """The supervisor's own RSS (bytes) and CPU time (seconds): two cheap reads, no psutil."""
    times = os.times()
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = None
    return {"rss": rss, "cpu_seconds": round(times.user + times.system, 4)}


def _check_filters(runner: Runner, method: str, params: dict[str, Any]) -> None:
    """Raise the "unknown" error when ``runner``'s filters hide what the request names."""
    refused = refusal(runner.ext, method, params)
    if refused is not None:
        raise RpcError(refused.code, refused.message, refused.data)


async def _refused(action: Awaitable[Any], prefix: str = "") -> Any:
    """Await ``action``; a CommandFailed becomes the REFUSED error the CLI prints."""
    try:
        return await action
    except CommandFailed as exc:
        raise RpcError(REFUSED, f"{prefix}{exc}") from None
