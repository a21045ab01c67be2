"""``spctl serve``: wires the parts, the task group, signals and the shutdown order.

It owns no extension logic (runners, ``Fleet``, ``Catalogs``, ``Reloader``, ``Ordering`` do).
Signals are messages: one task dispatches them (SIGTERM/SIGINT → orderly stop; SIGHUP →
reload; SIGCHLD → reap orphans re-parented to us as child subreaper). Shutdown order: the MCP
front first (no new calls), then the extensions (dependents first), then socket and keeper.

At start, a file that cannot be read or parsed stops ``serve`` with exit 1 and every error.
An entry that is invalid on its own does not hold the others hostage: the valid extensions
start, and the invalid one is listed by ``status`` as ``failed`` with its configuration error.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import anyio
import structlog

from supervisor.config import Extension, LoadResult, load_registry
from supervisor.control.paths import UnsafeDirectory, state_dir
from supervisor.control.server import AlreadyRunning, ControlServer
from supervisor.core.audit import AuditLog
from supervisor.core.catalog_cache import CatalogCache
from supervisor.core.catalogs import Catalogs
from supervisor.core.control_api import ControlApi, own_usage
from supervisor.core.fleet import Fleet
from supervisor.core.front import Front
from supervisor.core.history import Recorder
from supervisor.core.hooks import HookRunner
from supervisor.core.keeper import Keeper
from supervisor.core.options import ServeOptions
from supervisor.core.ordering import Ordering
from supervisor.core.peer_guard import PeerGuard
from supervisor.core.process import (
    prune_zygotes,
    reap_orphans,
    set_child_subreaper,
    set_interpreter_users,
    start_zygote_early,
    stop_zygote,
    zygote_status,
)
from supervisor.core.reloader import Reloader
from supervisor.core.resource_relay import ResourceRelay
from supervisor.core.runner import RunnerContext
from supervisor.core.sdnotify import Notifier
from supervisor.core.spawn import PRIVATE_ENV, spawn_extension, worker_python
from supervisor.core.watchdog import LimitsEnforcer
from supervisor.overrides import Overrides
from supervisor.rules.reload_plan import hostable
from supervisor.rules.states import State, Transition
from worker.channel import Channel

__all__ = ["ServeOptions", "Supervisor", "serve"]

log = structlog.get_logger("spctl.serve")

# READY=1 waits for every extension to settle, but never longer than this: systemd's start
# timeout must not fail the whole service because one extension keeps timing out at start.
READY_DEADLINE = 60.0


class Supervisor:
    """The running supervisor: builds the parts, runs them, stops them in order."""

    def __init__(self, opts: ServeOptions, loaded: LoadResult) -> None:
        self.opts = opts
        self.keeper, self.notifier = Keeper(), Notifier()
        self.limits = LimitsEnforcer(self.keeper)
        overrides = Overrides(state_dir())
        self.ctx = RunnerContext(
            spawn=spawn_extension,
            keeper_watch=self.keeper.watch,
            keeper_unwatch=self.keeper.unwatch,
            health=opts.health,
            on_transition=self._on_transition,
            cgroup_for=self.limits.cgroup_for,
            on_catalog=lambda name: self.catalogs.changed(name),
            on_resource_updated=lambda name, uri: self.relay.resource_updated(name, uri),
            on_service=lambda caller, name, arg: self.api.service_for_worker(caller, name, arg),
            kill_tree=self.limits.kill_tree,
            lineage=self.limits.lineage,
        )
        self.fleet = Fleet(self.ctx, overrides)
        set_interpreter_users(self._interpreters)
        # What the hooks and the front are given: our environment without its private part.
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        self.hooks = HookRunner(self.fleet.start_soon, env)
        self.catalogs = Catalogs(self.fleet, CatalogCache(state_dir() / "catalogs"))
        self.order = Ordering(self.fleet, self.catalogs)
        first = hostable(loaded, overrides.enabled)
        self.fleet.adopt(first)
        for ext in first.runnable.values():
            self.catalogs.load(self.fleet.ensure(ext))
        self.relay = ResourceRelay(self.fleet)
        self.reloader = Reloader(opts.extensions, self.fleet, self.catalogs, self.order)
        about = {"extensions_dir": str(opts.extensions), "socket": str(opts.socket)}
        front = lambda: self.front.snapshot() if self.front is not None else None  # noqa: E731
        parts = (self.fleet, self.catalogs, self.reloader, self.relay, self.order, self.limits)
        self.audit = AuditLog(opts.audit) if opts.audit is not None else None
        front_runner = lambda: self.front.runner if self.front is not None else None  # noqa: E731
        self.history = Recorder(self.fleet, self.limits, front_runner, own_usage)
        self.api = ControlApi(
            *parts, about=about, front=front, audit=self.audit, history=self.history
        )
        guard = PeerGuard(self.fleet, self.keeper, self.limits, lambda: self.front)
        self.server = ControlServer(
            opts.socket, self.api.handlers(), self.api.stream_handlers(), refuse=guard
        )
        self.api.client_of = self._client_of
        self._stop = anyio.Event()
        # The MCP front: built here, run in the task group, stopped first, shown in status.
        self.front: Front | None = None
        if opts.front is not None:
            keeper = (self.keeper.watch, self.keeper.unwatch)
            self.front = Front(
                opts.front,
                opts.socket,
                env,
                *keeper,
                health=opts.health,
                kill_tree=self.limits.kill_tree,
            )

    def _interpreters(self) -> list[str]:
        """The interpreter of each enabled extension's worker (supervisor.core.process: another
        interpreter than ours gets a zygote while more than one uses it). One with an
        environment of its own is alone on its env's."""
        return [worker_python(r.ext) for r in self.fleet if shares_interpreter(r.ext)]

    def _on_transition(self, name: str, tr: Transition) -> None:
        if tr.to in (State.STOPPED, State.FAILED, State.DISABLED):
            prune_zygotes()  # one no extension needs any more (a reload removed it)
        if (runner := self.fleet.get(name)) is None:
            return
        self.order.on_transition(runner, tr)
        self.catalogs.on_transition(runner, tr)
        if runner.ext.hooks.commands:
            self.hooks.on_transition(runner.ext, runner.restarts, tr)
        if tr.to is State.RUNNING and runner.ext.kind == "server":
            self.relay.server_up(runner)  # a new worker: it hears the subscriptions again

    def _client_of(self, channel: Channel, face: bool) -> str:
        """Who a control connection is, for the audit log (``face``: it forwards MCP)."""
        peer = self.server.peer(channel)
        if peer is None:
            return channel.name
        pid, uid = peer
        if self.front is not None and pid == self.front.pid:
            return "front"
        return f"spctl mcp pid={pid} uid={uid}" if face else f"cli uid={uid} pid={pid}"

    async def run(self) -> int:
        try:
            self.server.bind()
        except AlreadyRunning as exc:
            print(f"spctl serve: {exc}", file=sys.stderr)
            return 1
        except (OSError, UnsafeDirectory) as exc:
            print(f"spctl serve: cannot bind {self.opts.socket}: {exc}", file=sys.stderr)
            return 1
        if self.audit is not None:
            try:
                self.audit.start()
            except OSError as exc:
                self.server.close()
                print(f"spctl serve: cannot open the audit log: {exc}", file=sys.stderr)
                return 1
            log.info("audit log", path=str(self.audit.path), bodies=self.audit.opts.bodies)
        set_child_subreaper()
        self.limits.start(enabled=self.opts.cgroups)
        log.info("limits enforcement", mode=self.limits.mode, reason=self.limits.reason)
        self.keeper.start()
        n = len(self.fleet.runners)
        log.info("serving", pid=os.getpid(), socket=str(self.opts.socket), extensions=n)
        try:
            async with anyio.create_task_group() as tg:
                self.fleet.attach(tg)
                tg.start_soon(self.server.serve)
                tg.start_soon(self._signals, tg)
                tg.start_soon(self._ready)
                tg.start_soon(self._watchdog)
                tg.start_soon(self.limits.watch, self.fleet.runners)
                tg.start_soon(self.history.run)
                self.order.boot()
                tg.start_soon(self.order.discover_lazy)
                if self.opts.watch:
                    from supervisor.core.watch import watch_config

                    tg.start_soon(watch_config, self.opts.extensions, self.reloader.reload_quietly)
                if self.front is not None:  # until the task group ends (stopping it is idempotent)
                    tg.start_soon(self.front.run)
                await self._stop.wait()
                if self.front is not None:  # the front goes first: no new calls while workers stop
                    await self.front.stop()
                self.notifier.send("STOPPING=1", "STATUS=stopping extensions")
                log.info("stopping all extensions")
                await self.order.stop(list(self.fleet))
                tg.cancel_scope.cancel()
        finally:
            self.server.close()
            stop_zygote()  # no worker is its child: none dies with it
            self.limits.close()  # kills what is left of the workers' trees; then the keeper
            self.keeper.close()
            self.notifier.close()
            if self.audit is not None:
                self.audit.close()
        log.info("stopped")
        return 0

    async def _ready(self) -> None:
        with anyio.move_on_after(READY_DEADLINE):
            await self.order.settled.wait()
        self.notifier.send("READY=1", f"STATUS={self.fleet.summary()}")
        log.info("ready", status=self.fleet.summary())

    async def _watchdog(self) -> None:
        # Fed from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while interval := self.notifier.watchdog_interval:
            self.notifier.send("WATCHDOG=1")
            await anyio.sleep(interval)

    async def _signals(self, tg: Any) -> None:
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        with anyio.open_signal_receiver(*sigs) as received:
            async for signum in received:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    log.info("signal", signal=signal.Signals(signum).name, action="stop")
                    self._stop.set()
                elif signum == signal.SIGHUP:
                    log.info("signal", signal="SIGHUP", action="reload")
                    tg.start_soon(self.reloader.reload_quietly)
                elif signum == signal.SIGCHLD:
                    reap_orphans({self.keeper.pid} if self.keeper.pid else set())


def serve(opts: ServeOptions) -> int:
    """Load, validate, run until SIGTERM/SIGINT. Returns the process exit code."""
    loaded = load_registry(opts.extensions)
    if loaded.fatal:
        for err in loaded.errors:
            print(err, file=sys.stderr)
        print(f"spctl serve: configuration in {opts.extensions} is invalid", file=sys.stderr)
        return 1
    # The zygote boots (a fresh interpreter's imports) while we build the parts and bind:
    # the first fork need not wait for it. Only when a worker will be forked from it.
    if start_zygote_early(_interpreters(loaded)):
        log.info("zygote", action="started early", status=zygote_status())
    try:
        for err in loaded.errors:
            log.error("invalid extension entry", extension=err.extension, error=str(err))
        supervisor = Supervisor(opts, loaded)
        return anyio.run(supervisor.run)
    finally:
        stop_zygote()  # also when run() returned early (the socket was taken…)


def _interpreters(loaded: LoadResult) -> set[str]:
    """The interpreters the workers of ``loaded``'s enabled entries start on (a lazy server's
    too: it is started once to learn its catalog; one with an environment of its own: not
    known before that is built, so not counted)."""
    return {worker_python(e) for e in loaded.registry.extensions if shares_interpreter(e)}


def shares_interpreter(ext: Extension) -> bool:
    """Whether ``ext``'s worker may share a zygote: enabled, and not on an environment of its
    own (one extension's alone)."""
    return ext.enabled and ext.environment is None
