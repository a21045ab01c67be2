"""One runner per extension: the single owner of its worker's lifetime and state.

Theory of operation: the runner is an actor. Everything that can happen to an extension —
an operator's command, a worker becoming ready, a worker exiting, a failed health check, a
start timeout, the end of a backoff delay — arrives as a message in its inbox, and
``_handle`` processes them one at a time on the event loop. Only ``_handle`` (through
``_to``) changes the state, and only via ``StateMachine.transition``, which refuses illegal
moves. Decisions are pure functions (``policy.decide``, ``HealthTracker``); the I/O lives in
small tasks (spawn, exit watcher, health pinger, stop sequence, timers) that post messages
back. Those tasks live in ``incarnation.py`` (one :class:`Incarnation` per worker start); each
has a number, so a late message about an old worker is recognised and ignored.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from supervisor.config import Extension
from supervisor.core.incarnation import Hooks, Incarnation, RunnerContext
from supervisor.logs import debug_enabled_for
from supervisor.rules.exits import Exit, describe, from_waitid
from supervisor.rules.limits import Sample, WatchLimits, headroom
from supervisor.rules.policy import GiveUp, Restart, RestartHistory, Stay, decide
from supervisor.rules.states import COMING_BACK, State, StateMachine
from worker.channel import ChannelClosed

__all__ = ["CallTimeout", "CommandFailed", "Runner", "RunnerContext", "run_guarded"]

log = structlog.get_logger("spctl.runner")

OUTPUT_RING = 1000  # lines of worker output kept per extension for `spctl logs`


class CommandFailed(Exception):
    """An operator command could not reach its goal; the message says why."""


class CallTimeout(CommandFailed):
    """An MCP call got no answer within the extension's ``timeout``."""


LEARNED = "tools learned; lazy: started again by the first call"


@dataclass(eq=False)
class _Waiter:
    kind: str  # "up" (start/restart) or "down" (stop)
    done: anyio.Event = field(default_factory=anyio.Event)
    seen_start: bool = False
    error: str | None = None


class Runner:
    def __init__(self, ext: Extension, ctx: RunnerContext):
        self.ext = ext
        self.name = ext.name
        self.ctx = ctx
        now = time.monotonic()
        initial = State.DISABLED if not ext.enabled else State.STOPPED
        self.sm = StateMachine(initial, now=now)
        self.settings = ext.restart
        self.history = RestartHistory()
        self.restarts = 0
        self.metadata: dict[str, Any] = {}
        self.last_exit: str | None = None
        self.last_error: dict[str, Any] | None = None
        self.output: deque[tuple[float, str, str]] = deque(maxlen=OUTPUT_RING)
        self.subscribers: set[Callable[[tuple[float, str, str]], None]] = set()
        self._send, self._inbox = anyio.create_memory_object_stream[tuple[Any, ...]](math.inf)
        self._want_up = False
        self._disable_pending = False
        self._discovering = False  # started only to learn its catalog (a lazy server)
        self._stopped_because: str | None = None  # the reason `stopped` shows, when not the exit
        self._inc: Incarnation | None = None
        self._n = 0
        self._backoff_token = 0
        self._waiters: list[_Waiter] = []
        self._state_changed = anyio.Event()  # set (and replaced) at every transition
        self._tg: TaskGroup | None = None
        self.catalog: dict[str, Any] | None = (
            None  # what an MCP server advertised (kept when it stops)
        )
        self._progress: dict[Any, Callable[[list[Any]], None]] = {}
        self._calls_in_flight = 0
        self._last_activity = time.monotonic()
        self.usage: Sample | None = None  # the last watchdog / status sample of its tree
        self.attempted = False  # has tried to start at least once (serve's READY=1 waits on it)
        self._log = log.bind(extension=self.name)
        # DEBUG=extensions:<name> or extensions:* (as in the seed) turns on this runner's
        # debug events: spawn details, ping round trips and the msgpack-rpc traffic summary.
        self.debug = debug_enabled_for(self.name)

    # ----- public API (called from the control server and serve) -----

    @property
    def state(self) -> State:
        return self.sm.state

    @property
    def pid(self) -> int | None:
        inc = self._inc
        return inc.proc.pid if inc and inc.proc and inc.proc.alive else None

    async def run(self) -> None:
        """The actor loop; runs until cancelled (serve owns it in its task group)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            async with self._inbox:
                async for msg in self._inbox:
                    self._handle(msg)

    async def start(self) -> None:
        """Start (or clear ``failed`` and start); returns when running. Raises CommandFailed."""
        await self._command("start")

    async def stop(self) -> None:
        await self._command("stop")

    async def restart(self) -> None:
        await self._command("restart")

    async def disable(self) -> None:
        """Stop if needed, then ``disabled`` (start/restart are refused until enabled)."""
        await self._command("disable")

    async def enable(self) -> None:
        """``disabled`` → ``stopped``; the caller starts it if it should run."""
        await self._command("enable")

    def update(self, ext: Extension) -> None:
        """Take a new configuration; the next worker started uses it."""
        self.ext = ext
        self.settings = ext.restart

    async def retire(self) -> None:
        """Stop the worker and end the actor loop (the extension left the registry)."""
        await self.stop()
        self._send.close()

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the worker over its channel; seconds. Raises CommandFailed at once when
        the worker is not running or dies while the call is in flight."""
        inc = self._inc
        if inc is None or not inc.ready or inc.channel is None:
            raise CommandFailed(f"{self.name} is not running ({self.sm.state.value})")
        t0 = time.monotonic()
        try:
            await inc.channel.request("ping", timeout=timeout)
        except ChannelClosed as exc:
            why = f"{self.name}: worker went away during the call ({exc.message})"
            raise CommandFailed(why) from None
        except TimeoutError:
            raise CommandFailed(f"{self.name}: no answer within {timeout:g}s") from None
        return time.monotonic() - t0

    async def mcp(
        self,
        method: str,
        params: dict[str, Any],
        meta: dict[str, Any] | None = None,
        on_progress: Callable[[list[Any]], None] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One MCP request to this server's worker, within the extension's ``timeout`` (or
        until ``deadline``, monotonic, when the caller already spent some of it waiting).

        Raises CommandFailed at once when the worker is not running or dies during the call
        (naming the extension and, where it is known within 0.5 s, how the worker ended),
        CallTimeout, or the worker's RpcError (MCP error codes pass through)."""
        meta = meta or {}
        token = meta.get("progressToken")
        if token is not None and on_progress is not None:
            self._progress[token] = on_progress
        try:
            return await self._call(deadline, "mcp", method, params, meta)
        finally:
            if token is not None:
                self._progress.pop(token, None)

    async def service(self, name: str, params: Any, deadline: float | None = None) -> Any:
        """One ``"<service>.<method>"`` call to this plugin's worker, as :meth:`mcp`."""
        return await self._call(deadline, "service", name, params)

    async def _call(self, deadline: float | None, method: str, *args: Any) -> Any:
        """A request a client made (an MCP call, a service call): it counts as activity for
        ``idleTimeout``, has the extension's ``timeout`` and fails naming the extension."""
        inc = self._inc
        if inc is None or not inc.ready or inc.channel is None:
            raise CommandFailed(f"{self.name} is not running ({self.sm.state.value})")
        self._calls_in_flight += 1
        try:
            return await inc.channel.request(method, *args, timeout=self._budget(deadline))
        except ChannelClosed as exc:
            why = exc.message
            if inc.proc is not None:
                with anyio.move_on_after(0.5):
                    result = await inc.proc.wait()
                    why = describe(from_waitid(result.si_code, result.si_status, cause=inc.cause))
            raise CommandFailed(f"{self.name}: worker went away during the call ({why})") from None
        except TimeoutError:
            raise CallTimeout(
                f"{self.name}: no answer within timeout {self.ext.timeout:g}s"
            ) from None
        finally:
            self._calls_in_flight -= 1
            self._last_activity = time.monotonic()

    def _budget(self, deadline: float | None) -> float:
        """Seconds a call may take: the extension's ``timeout``, or what is left of it."""
        if deadline is None:
            return self.ext.timeout
        return max(0.001, deadline - time.monotonic())

    @property
    def restarting(self) -> bool:
        """On its way back up by itself (after a crash, or a restart): not a stop."""
        return self._want_up and self.sm.state in COMING_BACK

    async def wait_while_restarting(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the worker is back up or will not be."""
        with anyio.move_on_after(timeout):
            while self.restarting:
                await self._state_changed.wait()

    def post_start(self) -> None:
        """Ask for a start without waiting (serve uses it at boot)."""
        self._post(("cmd", "start", None))

    def discover(self) -> None:
        """Start a stopped lazy server only to learn its catalog, then stop it again.

        A call (or any command) that arrives meanwhile turns it into an ordinary start. A
        worker that fails to come up is left stopped (no restarts: nobody asked for it)."""
        self._post(("cmd", "discover", None))

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        state = self.sm.state
        since = self.sm.since
        return {
            "name": self.name,
            "kind": self.ext.kind,
            "type": self.ext.type,
            "enabled": self.ext.enabled,
            "state": state.value,
            "reason": self.sm.reason,
            "pid": self.pid,
            "since": time.time() - (now - since),
            "uptime": (now - since) if state is State.RUNNING else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "error": self.last_error,
            "metadata": self.metadata,
            "usage": _usage(self.usage) if self.pid else None,
            "headroom": headroom(self.usage, WatchLimits.from_config(self.ext.limits))
            if self.usage and self.pid
            else {},
        }

    # ----- plumbing -----

    def _post(self, msg: tuple[Any, ...]) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._send.send_nowait(msg)  # closed: the runner was retired; the message is moot

    async def _command(self, kind: str) -> None:
        waiter = _Waiter("down" if kind in ("stop", "disable", "enable") else "up")
        self._post(("cmd", kind, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise CommandFailed(waiter.error)

    def _to(self, state: State, reason: str) -> None:
        old = self.sm.state
        tr = self.sm.transition(state, reason, time.monotonic())
        self._log.info("state", **{"from": old.value, "to": state.value, "reason": reason})
        if self.ctx.on_transition is not None:
            self.ctx.on_transition(self.name, tr)
        self._state_changed.set()
        self._state_changed = anyio.Event()
        for w in list(self._waiters):
            self._check_waiter(w, state, reason)

    def _check_waiter(self, w: _Waiter, state: State, reason: str) -> None:
        if w.kind == "down":
            if state in (State.STOPPED, State.FAILED, State.DISABLED):
                self._finish(w)
            return
        if state is State.STARTING:
            w.seen_start = True
        elif state is State.RUNNING and w.seen_start:
            self._finish(w)
        elif w.seen_start and state in (State.CRASHED, State.FAILED, State.STOPPED):
            self._finish(w, f"{self.name}: {state.value}: {reason}")

    def _finish(self, w: _Waiter, error: str | None = None) -> None:
        w.error = error
        w.done.set()
        if w in self._waiters:
            self._waiters.remove(w)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "cmd":
            self._on_command(msg[1], msg[2])
            return
        n = msg[1]
        inc = self._inc
        if kind == "backoff_done":
            if n == self._backoff_token and self.sm.state is State.BACKOFF:
                self._spawn("restarting after backoff")
            return
        if inc is None or inc.n != n:
            return  # about a worker that is already gone
        if kind == "spawned":
            if inc.requested or not self._want_up:
                self._begin_stop(inc, "stop requested while starting")
        elif kind == "spawn_failed":
            self._on_exit(inc, Exit(code=None, signal=None, cause=f"cannot start worker: {msg[2]}"))
        elif kind == "ready":
            if self.sm.state is State.STARTING:
                inc.ready = True
                inc.ready_event.set()
                info = msg[2]
                meta = info.get("metadata")
                self.metadata = dict(meta) if isinstance(meta, dict) else {}
                catalog = info.get("catalog")
                if isinstance(catalog, dict):
                    self.catalog = catalog
                self.history.record_running(time.monotonic())
                self._to(State.RUNNING, f"ready (pid {inc.proc.pid if inc.proc else '?'})")
                if self._discovering:
                    self._discovering = False
                    self._want_up = False
                    self._stopped_because = LEARNED
                    self._begin_stop(inc, LEARNED)
                    return
                assert self._tg is not None
                self._tg.start_soon(inc.health, self.ctx.health)
                self._last_activity = time.monotonic()
                if self.ext.lazy and self.ext.idle_timeout:
                    self._tg.start_soon(self._idle_watch, inc, self.ext.idle_timeout)
        elif kind == "kill":
            if inc.cause is None:
                inc.cause = msg[2]
            self._log.warning("killing worker", reason=msg[2])
            inc.kill()
        elif kind == "exited":
            self._on_exit(inc, msg[2])

    def _on_command(self, kind: str, waiter: _Waiter | None) -> None:
        state = self.sm.state
        if waiter is not None:
            self._waiters.append(waiter)
        if kind == "discover":
            if state in (State.STOPPED, State.FAILED) and not self._want_up:
                self._discovering = True
                self._want_up = True
                self._spawn("started to learn its tools (lazy)")
            return
        self._discovering = False  # someone wants it for real: an ordinary start or stop
        if kind == "enable":
            if state is State.DISABLED:
                self._to(State.STOPPED, "enabled")
            if waiter is not None:
                self._finish(waiter)
            return
        if kind in ("stop", "disable", "idle"):
            self._want_up = False
            self._disable_pending = kind == "disable"
            what = {
                "disable": "disabled",
                "idle": f"idle for {self.ext.idle_timeout or 0:g}s (idleTimeout)",
            }.get(kind, "stop requested")
            if state in (State.STARTING, State.RUNNING) and self._inc is not None:
                self._begin_stop(self._inc, what)
            elif state is State.BACKOFF:
                self._backoff_token += 1
                self._to(State.STOPPED, f"{what} during backoff")
            elif state in (State.STOPPED, State.FAILED, State.DISABLED) and waiter is not None:
                self._finish(waiter)
            if self._disable_pending and self.sm.state in (State.STOPPED, State.FAILED):
                self._to(State.DISABLED, what)
            return
        if state is State.DISABLED:
            if waiter is not None:
                self._finish(waiter, f"{self.name} is disabled")
            return
        self._want_up = True
        self._disable_pending = False
        if kind == "restart" and state in (State.STARTING, State.RUNNING) and self._inc:
            self._begin_stop(self._inc, "restart requested")
        elif state in (State.STOPPED, State.FAILED, State.BACKOFF):
            if state is State.FAILED:
                self.history.reset()
            self._backoff_token += 1
            self._spawn(f"{kind} requested")
        elif state is State.RUNNING and waiter is not None:
            self._finish(waiter)
        elif state is State.STARTING and waiter is not None:
            waiter.seen_start = True
        # STOPPING: _want_up makes the exit handler start it again.

    def _spawn(self, reason: str) -> None:
        self.attempted = True
        self._n += 1
        assert self._tg is not None
        hooks = Hooks(
            name=self.name,
            ctx=self.ctx,
            tg=self._tg,
            post=self._post,
            on_line=self._on_line,
            on_notification=self._notified,
            log=self._log,
            debug=self.debug,
        )
        inc = Incarnation(self._n, self.ext, hooks)
        self._inc = inc
        self.history.record_start(time.monotonic())
        self._to(State.STARTING, reason)
        self._tg.start_soon(inc.run)

    async def _idle_watch(self, inc: Incarnation, idle: float) -> None:
        """A lazy server with ``idleTimeout`` stops after that long without calls; the next
        call starts it again."""
        with inc.scope():
            while True:
                quiet = time.monotonic() - self._last_activity
                if self._calls_in_flight == 0 and quiet >= idle:
                    self._post(("cmd", "idle", None))
                    return
                await anyio.sleep(max(0.05, idle - quiet if self._calls_in_flight == 0 else idle))

    def breach(self, reason: str) -> None:
        """A limit was breached (the watchdog says so): kill the current worker's tree."""
        inc = self._inc
        if inc is not None and inc.proc is not None and inc.proc.alive:
            self._post(("kill", inc.n, reason))

    def _notified(self, inc: Incarnation, method: str, params: list[Any]) -> None:
        payload = params[0] if params and isinstance(params[0], dict) else {}
        if method == "catalog" and payload:
            self.catalog = payload
            if self.ctx.on_catalog is not None:
                self.ctx.on_catalog(self.name)
        elif method == "resource_updated" and params and isinstance(params[0], str):
            if self.ctx.on_resource_updated is not None:
                self.ctx.on_resource_updated(self.name, params[0])
        elif method == "progress" and params:
            push = self._progress.get(params[0])
            if push is not None:
                push(params)

    def _on_line(self, stream: str, line: str) -> None:
        entry = (time.time(), stream, line)
        self.output.append(entry)
        if stream == "spctl":
            self._log.warning("lines dropped", detail=line)
        else:
            self._log.info("output", stream=stream, line=line)
        for push in list(self.subscribers):
            push(entry)

    def _begin_stop(self, inc: Incarnation, reason: str) -> None:
        """Mark the worker as asked to stop; the stop sequence runs once it exists."""
        if not inc.requested:
            inc.requested = True
            self._to(State.STOPPING, reason)
        inc.launch_stop()

    def _on_exit(self, inc: Incarnation, exit: Exit) -> None:
        inc.ended()
        self._inc = None
        text = describe(exit)  # with what the worker reported (exit.detail), shortened
        if inc.error:
            self.last_error = inc.error
        self.last_exit = text
        state = self.sm.state
        if state is State.STOPPING or exit.requested:
            if state is not State.STOPPING:
                self._to(State.STOPPING, "stop requested")
            because, self._stopped_because = self._stopped_because, None
            self._to(State.STOPPED, f"{because} ({text})" if because else text)
            if self._disable_pending:
                self._to(State.DISABLED, "disabled")
            elif self._want_up:
                self._spawn("restart requested")
            return
        now = time.monotonic()
        self.history.record_exit(exit, now)
        self._to(State.CRASHED, text)
        if self._discovering:  # nobody asked for this worker: no restarts
            self._discovering = False
            self._want_up = False
            self._to(State.STOPPED, "could not learn its tools; started again by the first call")
            return
        decision = decide(self.settings, self.history, exit, now)
        if isinstance(decision, Stay):
            self._want_up = False
            self._to(State.STOPPED, decision.reason)
        elif isinstance(decision, GiveUp):
            self._want_up = False
            self._to(State.FAILED, decision.reason)
        elif isinstance(decision, Restart):
            self.restarts += 1
            self._backoff_token += 1
            token = self._backoff_token
            delay = decision.delay
            self._to(State.BACKOFF, f"restarting in {delay:.2f}s (attempt {decision.attempt})")
            assert self._tg is not None
            self._tg.start_soon(self._backoff_timer, token, delay)

    async def _backoff_timer(self, token: int, delay: float) -> None:
        if delay > 0 and math.isfinite(delay):
            await anyio.sleep(delay)
        self._post(("backoff_done", token))


def _usage(sample: Sample | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    return {
        "rss": sample.rss,
        "cpu": round(sample.cpu, 4),
        "processes": sample.processes,
        "open_files": sample.open_files,
    }


async def run_guarded(runner: Runner) -> None:
    """Run one runner; a bug in it is logged and ends that extension, never the supervisor."""
    try:
        await runner.run()
    except Exception:
        log.exception("runner crashed (a bug in spctl)", extension=runner.name)
