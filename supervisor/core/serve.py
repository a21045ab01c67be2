"""``spctl serve``: wires the runners, the control socket, signals and shutdown order.

It owns no extension logic: each ``Runner`` owns its worker. Signals are messages: one task
receives them and dispatches (SIGTERM/SIGINT → orderly stop; SIGHUP → reload, reserved;
SIGCHLD → reap orphans re-parented to us as child subreaper).

At start, a file that cannot be read or parsed stops ``serve`` with exit 1 and every error.
An entry that is invalid on its own does not hold the others hostage: the valid extensions
start, and the invalid one is listed by ``status`` as ``failed`` with its configuration error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from supervisor.config import Extension, LoadResult, load_registry
from supervisor.control.paths import UnsafeDirectory, state_dir
from supervisor.control.server import AlreadyRunning, ControlServer
from supervisor.core.catalog_cache import CatalogCache
from supervisor.core.control_api import ControlApi, listed
from supervisor.core.front import Front, FrontOptions
from supervisor.core.keeper import Keeper
from supervisor.core.process import WorkerProcess, reap_orphans, set_child_subreaper, spawn_worker
from supervisor.core.runner import CommandFailed, Runner, RunnerContext, run_guarded
from supervisor.core.sdnotify import Notifier
from supervisor.core.watchdog import LimitsEnforcer
from supervisor.core.worker_spec import run_as_problem
from supervisor.overrides import Overrides
from supervisor.rules.health import HealthSettings
from supervisor.rules.states import SETTLED, UP, State, Transition
from worker.channel import Channel, ChannelClosed

__all__ = ["ServeOptions", "Supervisor", "serve"]

log = structlog.get_logger("spctl.serve")

_PRIVATE_ENV = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "SPCTL_SOCKET",
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
    }
)
# READY=1 waits for every extension to settle, but never longer than this: systemd's start
# timeout must not fail the whole service because one extension keeps timing out at start.
READY_DEADLINE = 60.0


@dataclass
class ServeOptions:
    extensions: Path
    socket: Path
    health: HealthSettings = field(default_factory=HealthSettings)
    cgroups: bool = True  # False: rlimits + watchdog only (--no-cgroups, SPCTL_CGROUPS=off)
    front: FrontOptions | None = field(default_factory=FrontOptions)  # None: no MCP front
    watch: bool = False  # reload when servers.yaml / modules.yaml change (--watch)


class Supervisor:
    """The running supervisor: runners by name, and the control API over them."""

    def __init__(self, opts: ServeOptions, loaded: LoadResult) -> None:
        self.opts = opts
        self.started = time.monotonic()
        self.keeper = Keeper()
        self.notifier = Notifier()
        self.overrides = Overrides(state_dir())
        if self.overrides.error:
            log.warning("overrides", error=self.overrides.error)
        self.limits = LimitsEnforcer()
        self.ctx = RunnerContext(
            spawn=self._spawn,
            keeper_watch=self.keeper.watch,
            keeper_unwatch=self.keeper.unwatch,
            health=opts.health,
            on_transition=self._on_transition,
            cgroup_for=self.limits.cgroup_for,
            on_catalog=self._catalog_changed,
            on_resource_updated=lambda name, uri: self.api.resource_updated(name, uri),
            on_service=lambda caller, name, params: self.api.service_for_worker(
                caller, name, params
            ),
            kill_tree=self.limits.kill_tree,
        )
        self.runners: dict[str, Runner] = {}
        self.catalog_version = 0
        self.catalog_watchers: set[Channel] = set()
        self.invalid: dict[str, str] = {}
        self.yaml_enabled: dict[str, bool] = {}
        self.sections: dict[str, str] = {}
        hostable, self.invalid = self.split(loaded)
        self.catalogs = CatalogCache(state_dir() / "catalogs")
        for ext in hostable.values():
            self.runners[ext.name] = runner = Runner(ext, self.ctx)
            self.load_catalog(runner)
        self.api = ControlApi(self)
        self.server = ControlServer(opts.socket, self.api.handlers(), self.api.stream_handlers())
        self._stop = anyio.Event()
        self._settled = anyio.Event()
        self.tg: TaskGroup | None = None
        self.front: Front | None = None
        if opts.front is not None:
            env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
            self.front = Front(
                opts.front,
                opts.socket,
                env,
                self.keeper.watch,
                self.keeper.unwatch,
                health=opts.health,
                kill_tree=self.limits.kill_tree,
            )

    def split(self, loaded: LoadResult) -> tuple[dict[str, Extension], dict[str, str]]:
        """The extensions we can run (overrides applied), and why the others cannot run."""
        invalid = {
            name: "invalid configuration: " + "; ".join(str(e) for e in errs)
            for name, errs in loaded.invalid.items()
        }
        hostable: dict[str, Extension] = {}
        self.yaml_enabled = {e.name: e.enabled for e in loaded.registry.extensions}
        self.sections = {e.name: e.section for e in loaded.registry.extensions}
        for ext in self.overrides.apply(loaded.registry.extensions):
            oauth2 = ext.auth if ext.auth is not None and ext.auth.type == "oauth2" else None
            if oauth2 is not None and oauth2.token_url is None:  # valid, but not enough to run
                what = "module" if ext.kind == "module" else "server"
                invalid[ext.name] = (
                    f"auth.tokenUrl is required to host an oauth2 remote {what} "
                    "(spctl does not discover the token endpoint)"
                )
                continue
            hostable[ext.name] = ext
        return hostable, invalid

    # ----- workers -----

    async def _spawn(self, ext: Extension, on_line: Any, on_spawned: Any) -> WorkerProcess:
        # The supervisor's environment minus what belongs to it alone: systemd's notify and
        # socket-activation protocol, and where the control socket and state live.
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env.update(ext.env)
        env["SPCTL_EXTENSION"] = ext.name
        run_as = ext.run_as
        problem = run_as_problem(run_as, os.geteuid())
        if problem is not None:  # the runner shows it as "cannot start worker: <problem>"
            raise PermissionError(errno.EPERM, problem)
        ext_state = state_dir() / "extensions" / ext.name
        ext_state.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            # Its own state is the one place an extension running as another user may write.
            # (Reaching it needs the state directory to be traversable by that user.)
            os.chown(ext_state, run_as.uid, run_as.gid)
        env["EXTENSION_STATE_DIR"] = str(ext_state)
        python = str(ext.python) if ext.python is not None else sys.executable
        # -P: never put the extension's directory (or ours) in front of sys.path, so an
        # extension cannot shadow the worker package.
        argv = [python, "-P", "-m", "worker"]
        return await spawn_worker(argv=argv, env=env, on_line=on_line, on_spawned=on_spawned)

    def _on_transition(self, name: str, tr: Transition) -> None:
        self._check_settled()
        runner = self.runners.get(name)
        if runner is None or runner.ext.kind != "server":
            return
        # Running: a new worker, maybe with other tools. Else only when the listing changes.
        if tr.to is State.RUNNING or listed(runner, tr.from_) != listed(runner, tr.to):
            self._catalog_changed(name)
        if tr.to is State.RUNNING:
            self.api.server_up(runner)  # a new worker: it hears the subscriptions again

    def _catalog_changed(self, name: str) -> None:
        """Tell MCP faces (``mcp_watch``) that the set of catalogs changed."""
        runner = self.runners.get(name)
        if (
            runner is not None
            and runner.ext.lazy
            and runner.catalog is not None
            and runner.state is State.RUNNING  # the catalog comes from a live worker
        ):
            error = self.catalogs.save(runner.ext, runner.catalog)
            if error:
                log.warning("catalog cache", extension=name, error=error)
        self.catalog_version += 1
        for channel in list(self.catalog_watchers):
            if channel.closed:
                self.catalog_watchers.discard(channel)
                continue
            with contextlib.suppress(ChannelClosed):
                channel.notify("catalogs", self.catalog_version)

    def load_catalog(self, runner: Runner) -> None:
        """A stopped lazy server is listed with its cached catalog (see catalog_cache)."""
        if runner.ext.kind == "server" and runner.ext.lazy and runner.state not in UP:
            runner.catalog = self.catalogs.load(runner.ext)

    def learn_catalog(self, runner: Runner) -> None:
        """An enabled lazy server with no known catalog is started once to learn it."""
        self.load_catalog(runner)
        if (
            runner.ext.kind == "server"
            and runner.ext.lazy
            and runner.ext.enabled
            and runner.catalog is None
        ):
            runner.discover()

    async def _discover_lazy(self) -> None:
        await self._settled.wait()  # after the eager extensions: they are what boot waits on
        for runner in list(self.runners.values()):
            if runner.state not in UP:
                self.learn_catalog(runner)

    def _check_settled(self) -> None:
        if not self._settled.is_set() and all(
            r.attempted and r.state in SETTLED
            for r in self.runners.values()
            if r.ext.enabled and not r.ext.lazy
        ):
            self._settled.set()

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runners.values():
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        if self.invalid:
            counts["failed"] = counts.get("failed", 0) + len(self.invalid)
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no extensions"

    # ----- lifetime -----

    async def run(self) -> int:
        try:
            self.server.bind()
        except AlreadyRunning as exc:
            print(f"spctl serve: {exc}", file=sys.stderr)
            return 1
        except (OSError, UnsafeDirectory) as exc:
            print(f"spctl serve: cannot bind {self.opts.socket}: {exc}", file=sys.stderr)
            return 1
        set_child_subreaper()
        self.limits.start(enabled=self.opts.cgroups)
        log.info("limits enforcement", mode=self.limits.mode, reason=self.limits.reason)
        self.keeper.start()
        log.info(
            "serving", pid=os.getpid(), socket=str(self.opts.socket), extensions=len(self.runners)
        )
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                for runner in self.runners.values():
                    tg.start_soon(run_guarded, runner)
                tg.start_soon(self.server.serve)
                tg.start_soon(self._signals)
                tg.start_soon(self._notify_ready)
                tg.start_soon(self.limits.watch, self.runners)
                if self.notifier.watchdog_interval:
                    tg.start_soon(self._watchdog, self.notifier.watchdog_interval)
                for runner in self.runners.values():
                    if runner.ext.enabled and not runner.ext.lazy:
                        runner.post_start()
                tg.start_soon(self._discover_lazy)
                if self.opts.watch:
                    from supervisor.core.watch import watch_config

                    tg.start_soon(watch_config, self.opts.extensions, self.api.reload_quietly)
                front_scope = anyio.CancelScope()
                if self.front is not None:
                    tg.start_soon(self._run_front, front_scope)
                self._check_settled()  # nothing to start at all
                await self._stop.wait()
                if self.front is not None:  # the front goes first: no new calls while workers stop
                    await self.front.stop()
                front_scope.cancel()
                await self._stop_all()
                tg.cancel_scope.cancel()
        finally:
            self.server.close()
            self.keeper.close()
            self.limits.close()
            self.notifier.close()
        log.info("stopped")
        return 0

    async def _run_front(self, scope: anyio.CancelScope) -> None:
        assert self.front is not None
        with scope:
            await self.front.run()

    async def _stop_all(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping extensions")
        log.info("stopping all extensions")
        async with anyio.create_task_group() as tg:
            for runner in self.runners.values():
                tg.start_soon(_quiet_stop, runner)

    async def _notify_ready(self) -> None:
        with anyio.move_on_after(READY_DEADLINE):
            await self._settled.wait()
        self.notifier.send("READY=1", f"STATUS={self.summary()}")
        log.info("ready", status=self.summary())

    async def _watchdog(self, interval: float) -> None:
        # Fed from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            self.notifier.send("WATCHDOG=1")
            await anyio.sleep(interval)

    async def _signals(self) -> None:
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        with anyio.open_signal_receiver(*sigs) as received:
            async for signum in received:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    log.info("signal", signal=signal.Signals(signum).name, action="stop")
                    self._stop.set()
                elif signum == signal.SIGHUP:
                    log.info("signal", signal="SIGHUP", action="reload")
                    assert self.tg is not None
                    self.tg.start_soon(self.api.reload_quietly)
                elif signum == signal.SIGCHLD:
                    known = {self.keeper.pid} if self.keeper.pid else set()
                    reap_orphans(known)


async def _quiet_stop(runner: Runner) -> None:
    try:
        await runner.stop()
    except CommandFailed as exc:  # pragma: no cover - stop does not fail today
        log.warning("stop failed", extension=runner.name, reason=str(exc))


def serve(opts: ServeOptions) -> int:
    """Load, validate, run until SIGTERM/SIGINT. Returns the process exit code."""
    loaded = load_registry(opts.extensions)
    if loaded.fatal:
        for err in loaded.errors:
            print(err, file=sys.stderr)
        print(f"spctl serve: configuration in {opts.extensions} is invalid", file=sys.stderr)
        return 1
    for err in loaded.errors:
        log.error("invalid extension entry", extension=err.extension, error=str(err))
    supervisor = Supervisor(opts, loaded)
    return anyio.run(supervisor.run)
