"""One worker incarnation: its process, channel and cgroup, and the I/O tasks around them.

Theory of operation: the runner (an actor, see ``runner.py``) decides; an incarnation does.
Each start of an extension's worker is one :class:`Incarnation`, numbered. Its tasks — spawn
and supervise the process (:meth:`Incarnation.run`), watch the channel, ping for health, run
the stop sequence — never change the extension's state: they post messages to the runner's
inbox (``Spawned``, ``SpawnFailed``, ``Ready``, ``Kill``, ``Exited``: ``inbox.py``), tagged with
the incarnation's number so a message about a worker that is already gone is ignored there.
:meth:`Incarnation.kill` is the one synchronous action, called by the runner.

An incarnation uses the extension's configuration as it was when it started: a reload that
changes it applies to the next worker. cgroup I/O runs in threads: on cgroup v1 a mkdir, a
move into ``cgroup.procs`` or an rmdir can take tens of ms (RCU grace periods), which must
not stall every other extension's calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskGroup

from supervisor.config import Extension
from supervisor.core.cgroups import WorkerCgroup
from supervisor.core.environments import prepare
from supervisor.core.inbox import Exited, Kill, Ready, Spawned, SpawnFailed, WorkerMessage
from supervisor.core.orphans import Lineage
from supervisor.core.process import WorkerProcess
from supervisor.core.worker_spec import build_spec
from supervisor.install import integrity
from supervisor.install.envlock import EnvError, needs_env
from supervisor.rules.exits import Exit, describe, from_waitid
from supervisor.rules.health import HealthSettings, HealthTracker, Unhealthy, on_grid
from supervisor.rules.limits import format_size
from supervisor.rules.states import Transition
from worker.channel import Channel, ChannelClosed
from worker.protocol import (
    ASK,
    BOOT,
    CATALOG,
    ERROR,
    EXITING,
    INVALID_PARAMS,
    LOAD_ERROR,
    METHOD_NOT_FOUND,
    PING,
    PROGRESS,
    READY,
    RESOURCE_UPDATED,
    SERVICE,
    SHUTDOWN,
    ReadyInfo,
)
from worker.rpc import RpcError

__all__ = ["Hooks", "Incarnation", "RunnerContext", "traffic"]


@dataclass
class RunnerContext:
    """What every runner needs from the supervisor that owns it."""

    spawn: Callable[..., Any]  # async (ext, on_line, on_spawned) -> WorkerProcess
    keeper_watch: Callable[[int], None]
    keeper_unwatch: Callable[[int], None]
    health: HealthSettings = field(default_factory=HealthSettings)
    on_transition: Callable[[str, Transition], None] | None = None
    on_catalog: Callable[[str], None] | None = None  # an MCP server's catalog changed
    on_resource_updated: Callable[[str, str], None] | None = None  # (server, uri)
    cgroup_for: Callable[[Extension], WorkerCgroup | None] | None = None
    kill_tree: Callable[[int], None] | None = None  # SIGKILL a pid's whole process tree
    # A worker calls a plugin's service: (caller, "<service>.<method>", params) -> result
    on_service: Callable[[str, str, Any], Awaitable[Any]] | None = None
    lineage: Lineage | None = None  # whose each process is: what dies with the worker


@dataclass(frozen=True)
class Hooks:
    """What an incarnation needs from its runner."""

    name: str
    ctx: RunnerContext
    tg: TaskGroup  # the runner's: helper tasks live as long as the runner
    post: Callable[[WorkerMessage], None]  # into the runner's inbox
    on_line: Callable[[str, str], None]  # (stream, line) of the worker's output
    on_catalog: Callable[[dict[str, Any]], None]  # an MCP server's catalog changed
    on_progress: Callable[[list[Any]], None]  # a call's progress report [token, …]
    log: Any  # a bound structlog logger
    debug: bool = False
    on_ask: Callable[..., Awaitable[Any]] | None = None  # a server's question: Calls.ask


class Incarnation:
    def __init__(self, n: int, ext: Extension, hooks: Hooks) -> None:
        self.n = n
        self.ext = ext
        self.hooks = hooks
        self.proc: WorkerProcess | None = None
        self.channel: Channel | None = None
        self.cgroup: WorkerCgroup | None = None
        self.ready = False
        self.ready_event = anyio.Event()
        self.cause: str | None = None  # why *we* ended it (health, timeout, limit)
        self.cause_kind: str | None = None  # "limit", "health" or None (see rules.exits)
        self.requested = False  # an operator or shutdown asked it to stop
        self.error: dict[str, Any] | None = None  # load_error / error from the worker
        self.stop_launched = False
        self.confined = False  # the worker is in its cgroup
        self.scopes: list[anyio.CancelScope] = []
        self.integrity: str | None = None  # pinned / unpinned / signed (install.integrity)
        self.installing: str | None = None  # building its environment: the latest progress

    @property
    def pid(self) -> int | None:
        """The worker's pid while it is alive."""
        return self.proc.pid if self.proc is not None and self.proc.alive else None

    def became_ready(self, info: ReadyInfo) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """It said ``ready``: its metadata and, for an MCP server, its catalog."""
        self.ready = True
        self.ready_event.set()
        return dict(info.metadata), (dict(info.catalog) if info.catalog is not None else None)

    def scope(self) -> anyio.CancelScope:
        """A cancel scope for one helper task, cancelled when this worker is gone (``ended``)."""
        scope = anyio.CancelScope()
        self.scopes.append(scope)
        return scope

    def ended(self) -> None:
        for scope in self.scopes:
            scope.cancel()

    # -- the process ----------------------------------------------------------------------

    async def run(self) -> None:
        """Spawn, connect, race readiness against the start timeout, wait for the exit, clean
        up; post what happens."""
        hooks, ctx = self.hooks, self.hooks.ctx
        # Its pin and signature, checked before anything of it runs (DESIGN §10).
        verdict = await anyio.to_thread.run_sync(integrity.check, self.ext)
        self.integrity = verdict.label
        if verdict.problem is not None:
            hooks.post(SpawnFailed(self.n, verdict.problem, refused=True))
            return
        with anyio.CancelScope(shield=True):  # a group made must be known, to be removed
            group = await anyio.to_thread.run_sync(self._make_cgroup)
        self.cgroup = group
        if needs_env(self.ext):
            failed = await self._prepare_env()
            if failed is not None:
                if group is not None:
                    await anyio.to_thread.run_sync(group.remove)
                hooks.post(Exited(self.n, failed))
                return
        try:
            proc: WorkerProcess = await ctx.spawn(self.ext, hooks.on_line, self._adder(group))
        except OSError as exc:
            if group is not None:
                await anyio.to_thread.run_sync(group.remove)
            hooks.post(SpawnFailed(self.n, f"{exc.strerror or exc}"))
            return
        self.proc = proc
        ctx.keeper_watch(proc.pgid)
        if ctx.lineage is not None:
            confined = group if self.confined else None
            ctx.lineage.add(proc, hooks.name, confined, lambda why: hooks.post(Kill(self.n, why)))
        if hooks.debug:
            hooks.log.debug("worker spawned", pid=proc.pid, incarnation=self.n)
        channel = Channel(
            {
                BOOT: lambda pid: build_spec(self.ext),
                READY: self._ready,
                SERVICE: self._service,
                ASK: self._ask,
            },
            name=hooks.name,
            on_notification=self._notified,
        )
        self.channel = channel
        await channel.connect(proc.sock)
        hooks.post(Spawned(self.n))
        hooks.tg.start_soon(self._watch_channel, channel, proc)
        timeout = self.ext.start_timeout
        with anyio.move_on_after(timeout) as timer:
            async with anyio.create_task_group() as race:
                race.start_soon(_cancel_when, self.ready_event.wait, race.cancel_scope)
                race.start_soon(_cancel_when, proc.wait, race.cancel_scope)
        if timer.cancelled_caught and not self.ready and proc.alive:
            hooks.post(Kill(self.n, f"start timeout ({timeout:g}s)", "health"))
        with anyio.CancelScope(shield=True):
            result = await proc.wait()
            if group is not None:
                oom = await anyio.to_thread.run_sync(group.oom_killed)
                if self.cause is None and _was_sigkilled(result) and oom:
                    self.cause = (
                        f"{_memory_limit(self.ext)} exceeded (killed by the kernel OOM killer)"
                    )
                    self.cause_kind = "limit"
                # v1 OOM kills one process; the rest of the group goes too
                await anyio.to_thread.run_sync(group.kill)
            await proc.reap_group()
            if ctx.lineage is not None:  # what left the group: setsid children, orphans
                ctx.lineage.exited(proc.pid)
            await proc.wait_output()
            if group is not None:
                await anyio.to_thread.run_sync(group.remove)
            # Its last reports (a load_error sent just before exiting) may still be unread:
            # the whole group is gone, so the end of the stream is near.
            with anyio.move_on_after(0.5):
                await channel.wait_closed()
        ctx.keeper_unwatch(proc.pgid)
        if hooks.debug:
            hooks.log.debug("rpc traffic", **traffic(channel))
        channel.close(f"worker exited ({describe(from_waitid(result.si_code, result.si_status))})")
        hooks.post(Exited(self.n, self.exit(result)))

    async def _prepare_env(self) -> Exit | None:
        """Build the extension's environment if the lock's is missing (in a thread: the other
        extensions go on), then run on it; an ``Exit`` (a load error) when that fails."""
        log = self.hooks.log

        def progress(text: str) -> None:
            self.installing = text
            log.info("installing", detail=text)

        self.installing = "checking the environment"
        try:
            self.ext = await anyio.to_thread.run_sync(prepare, self.ext, progress)
        except EnvError as exc:
            log.warning("environment failed", error=str(exc))
            return Exit(None, None, cause=f"environment: {exc}", load_error=True)
        finally:
            self.installing = None
        return None

    def exit(self, result: os.waitid_result) -> Exit:
        """How this worker ended: the status, what we did, and what it reported."""
        error = self.error or {}
        return replace(
            from_waitid(
                result.si_code, result.si_status, cause=self.cause, requested=self.requested
            ),
            load_error=error.get("kind") == LOAD_ERROR,
            detail=str(error["message"]) if error.get("message") else None,
            cause_kind=self.cause_kind,
        )

    def _notified(self, method: str, params: list[Any]) -> None:
        """The worker's notifications: its reports about itself, catalogs, resource updates,
        progress of calls."""
        payload = params[0] if params and isinstance(params[0], dict) else {}
        on_updated = self.hooks.ctx.on_resource_updated
        if method in (LOAD_ERROR, ERROR):
            self.error = {"kind": method, **payload}
        elif method == EXITING:
            if self.cause is None:
                self.cause = str(payload.get("reason", "worker is exiting"))
        elif method == CATALOG and payload:
            self.hooks.on_catalog(payload)
        elif method == RESOURCE_UPDATED and params and isinstance(params[0], str):
            if on_updated is not None:
                on_updated(self.hooks.name, params[0])
        elif method == PROGRESS:
            self.hooks.on_progress(params)

    def _ready(self, raw: object) -> None:
        """The worker's ``ready`` request: checked against the contract; a worker that breaks
        it is not to be trusted and is killed (the reason says which field)."""
        try:
            info = ReadyInfo.parse(raw)
        except ValueError as exc:
            self.hooks.post(Kill(self.n, f"protocol error: {exc}"))
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        self.hooks.post(Ready(self.n, info))

    async def _ask(self, token: Any, method: Any, params: Any = None) -> Any:
        """The worker's server asks the client of a call something (see Calls.ask)."""
        if self.hooks.on_ask is None:
            raise RpcError(METHOD_NOT_FOUND, "questions to clients are not offered here")
        return await self.hooks.on_ask(token, method, params)

    async def _service(self, name: str, params: Any = None) -> Any:
        """The worker asks for a plugin's service (``worker.api.call_service``)."""
        on_service = self.hooks.ctx.on_service
        if on_service is None:
            raise RpcError(METHOD_NOT_FOUND, "service calls are not offered here")
        return await on_service(self.hooks.name, name, params)

    async def _watch_channel(self, channel: Channel, proc: WorkerProcess) -> None:
        """A worker whose channel breaks (garbage, oversized frame, closed fd 3) is killed."""
        with self.scope():
            reason = await channel.wait_closed()
            if self.requested or not proc.alive:
                return
            if reason.startswith("protocol error"):
                # The peer is not to be trusted any more: cut it off now, and make this the
                # recorded reason whatever exit status follows.
                self.hooks.post(Kill(self.n, f"channel lost: {reason}"))
                return
            await anyio.sleep(0.2)  # a worker that is exiting anyway gets to report its own exit
            if proc.alive and not self.requested:
                self.hooks.post(Kill(self.n, f"channel lost: {reason}"))

    async def health(self, settings: HealthSettings) -> None:
        """Ping every ``interval`` (from the previous ping's *sending*: an unanswered ping does
        not push the next one back); too many misses → ``kill`` with the verdict's reason."""
        tracker = HealthTracker(settings, started=time.monotonic())
        channel = self.channel
        assert channel is not None
        with self.scope():
            while self.proc is not None and self.proc.alive:
                due = on_grid(tracker.next_ping_at() or time.monotonic(), settings.interval)
                await anyio.sleep(max(0.0, due - time.monotonic()))
                sent = time.monotonic()
                tracker.ping_sent(sent)
                try:
                    await channel.request(PING, timeout=settings.deadline)
                except TimeoutError:
                    verdict = tracker.missed(time.monotonic())
                    if isinstance(verdict, Unhealthy):
                        self.hooks.post(Kill(self.n, verdict.reason, "health"))
                        return
                except (ChannelClosed, RpcError):
                    return
                else:
                    tracker.pong(time.monotonic(), sent)
                    if self.hooks.debug:
                        rtt = round((time.monotonic() - sent) * 1000, 2)
                        self.hooks.log.debug("ping", rtt_ms=rtt, **traffic(channel))

    # -- stopping and killing -------------------------------------------------------------

    def launch_stop(self) -> None:
        """Start the stop sequence once the worker exists (again later if it does not yet)."""
        if self.proc is not None and self.channel is not None and not self.stop_launched:
            self.stop_launched = True
            self.hooks.tg.start_soon(self._stop_sequence, self.proc, self.channel)

    async def _stop_sequence(self, proc: WorkerProcess, channel: Channel) -> None:
        """shutdown RPC → SIGTERM (at half the budget) → SIGKILL of the group (at the end).
        A worker not ready yet has nobody to answer the request: SIGTERM at once."""
        budget = self.ext.stop_timeout
        t0 = time.monotonic()
        if self.ready:
            with anyio.move_on_after(budget / 2):
                with contextlib.suppress(TimeoutError, RpcError):
                    await channel.request(SHUTDOWN, timeout=budget / 2)
                await proc.wait()
        if proc.alive:
            proc.signal_group(15)
            with anyio.move_on_after(max(0.0, budget - (time.monotonic() - t0))):
                await proc.wait()
        if proc.alive:
            self.cause = f"did not stop within stopTimeout ({budget:g}s)"
            self.kill()

    def kill(self, reason: str | None = None, kind: str | None = None) -> None:
        """SIGKILL the whole tree: the cgroup (atomically), the process group, the descendants.
        ``reason`` (if it is the first) becomes the recorded cause, ``kind`` its kind."""
        if reason is not None:
            if self.cause is None:
                self.cause, self.cause_kind = reason, kind
            self.hooks.log.warning("killing worker", reason=reason)
        if self.cgroup is not None:
            # In a thread (freezing can take a while); the signals below do not wait for it.
            self.hooks.tg.start_soon(_in_thread, self.cgroup.kill)
        proc, kill_tree = self.proc, self.hooks.ctx.kill_tree
        if proc is not None:
            if kill_tree is not None and proc.alive:
                kill_tree(proc.pid)
            proc.signal_group(9)

    # -- its cgroup -----------------------------------------------------------------------

    def _make_cgroup(self) -> WorkerCgroup | None:
        cgroup_for = self.hooks.ctx.cgroup_for
        if cgroup_for is None:
            return None
        try:
            return cgroup_for(self.ext)
        except OSError as exc:
            self.hooks.log.warning("no cgroup for this worker", error=str(exc))
            return None

    def _adder(self, group: WorkerCgroup | None) -> Callable[[int], Awaitable[None]] | None:
        if group is None:
            return None

        async def add(pid: int) -> None:
            try:
                await anyio.to_thread.run_sync(group.add, pid)
                self.confined = True
            except OSError as exc:
                self.hooks.log.warning("cannot move worker into its cgroup", error=str(exc))

        return add


def traffic(channel: Channel) -> dict[str, int]:
    m_in, m_out, b_in, b_out = channel.stats
    return {"messages_in": m_in, "messages_out": m_out, "bytes_in": b_in, "bytes_out": b_out}


def _was_sigkilled(result: os.waitid_result) -> bool:
    return result.si_code == os.CLD_KILLED and result.si_status == signal.SIGKILL


def _memory_limit(ext: Extension) -> str:
    mem = ext.limits.memory
    return f"memory limit {format_size(mem)}" if mem is not None else "memory limit"


async def _in_thread(fn: Callable[[], object]) -> None:
    await anyio.to_thread.run_sync(fn)


async def _cancel_when(wait: Callable[[], Any], scope: anyio.CancelScope) -> None:
    """Await ``wait()`` then cancel ``scope``: the first of several waits ends the race."""
    await wait()
    scope.cancel()
