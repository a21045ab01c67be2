"""One runner per extension: the single owner of its worker's lifetime and state.

Theory of operation: an actor. Whatever happens to an extension (a command, a worker ready or
gone, a failed health check, a start timeout, a backoff's end) is a typed message in its inbox
(``inbox.py``), handled one at a time. Its state is (``State``, ``Goal``): where the worker is,
where it should be; what to do in each pair is data (``rules/goals.py``); only ``_to`` moves the
state (``StateMachine.transition`` refuses illegal moves). The I/O lives in the tasks of one
``Incarnation`` per worker, whose messages carry its number (an old worker's are ignored).
Calls: ``calls.py``; output: ``output_ring.py``; status: ``snapshot.py``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from supervisor.config import Extension
from supervisor.core import inbox, memory
from supervisor.core.calls import Calls, CallTimeout, CommandFailed
from supervisor.core.inbox import Command, Mailbox, Message
from supervisor.core.incarnation import Hooks, Incarnation, RunnerContext
from supervisor.core.output_ring import OUTPUT_RING, OutputRing
from supervisor.core.snapshot import snapshot
from supervisor.logs import debug_enabled_for
from supervisor.rules import goals
from supervisor.rules.exits import Exit, crash_reason, describe
from supervisor.rules.goals import Cmd, Goal, Step
from supervisor.rules.limits import Sample
from supervisor.rules.policy import RestartHistory
from supervisor.rules.states import COMING_BACK, State, StateMachine
from worker.protocol import ReadyInfo

__all__ = ["LEARNED", "OUTPUT_RING", "CallTimeout", "CommandFailed", "Runner", "RunnerContext"]
__all__ += ["run_guarded"]
LEARNED = goals.LEARNED_REASON
log = structlog.get_logger("spctl.runner")


class Runner:
    def __init__(self, ext: Extension, ctx: RunnerContext):
        self.ext = ext
        self.name = ext.name
        self.ctx = ctx
        initial = State.STOPPED if ext.enabled else State.DISABLED
        self.sm = StateMachine(initial, now=time.monotonic())
        self.goal = Goal.DOWN if ext.enabled else Goal.DISABLED
        self.settings = ext.restart
        self.history = RestartHistory()
        self.restarts = 0
        self.metadata: dict[str, Any] = {}
        self.last_exit: str | None = None
        self.start_duration: float | None = None  # seconds from starting to running, last time
        self.crashes: Counter[str] = Counter()  # by rules.exits.crash_reason
        self.last_error: dict[str, Any] | None = None
        self._log = log.bind(extension=self.name)
        self.ring = OutputRing(self._log)
        self.output = self.ring.lines
        self.subscribers = self.ring.subscribers
        self.calls = Calls(self.name, ext.timeout, lambda: (self._inc, self.sm.state.value))
        self.ping, self.mcp, self.service = self.calls.ping, self.calls.mcp, self.calls.service
        self._inbox: Mailbox[Message] = Mailbox()
        self._inc: Incarnation | None = None
        self._n = 0
        self._backoff_token = 0
        self._waiters = inbox.Waiters(self.name)
        self._tg: TaskGroup | None = None
        self.catalog: dict[str, Any] | None = None  # what an MCP server advertised (kept)
        self.usage: Sample | None = None  # the last watchdog / status sample of its tree
        self.attempted = False  # has tried to start at least once (serve's READY=1 waits on it)
        self.debug = debug_enabled_for(self.name)  # DEBUG=extensions:<name> (or *)
        self.integrity: str | None = None  # its pin/signature at the last start (status)

    # ----- public API (and ping, mcp, service: the Calls object's, bound in __init__) -----

    @property
    def state(self) -> State:
        return self.sm.state

    @property
    def pid(self) -> int | None:
        return self._inc.pid if self._inc is not None else None

    @property
    def spawned(self) -> tuple[str, str] | None:
        """How its live worker was started ("zygote" or "exec") and, exec'd although the
        zygote is on, why; None while no worker is alive."""
        proc = self._inc.proc if self._inc is not None else None
        return (proc.spawn, proc.why) if proc is not None and proc.alive else None

    @property
    def installing(self) -> str | None:
        """While its environment is being built (``starting``): what the build is doing."""
        return self._inc.installing if self._inc is not None else None

    async def run(self) -> None:
        """The actor loop; runs until cancelled (serve owns it in its task group)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            on = (self._post, self.ring.add, self._catalog, self.calls.progress)
            self._hooks = Hooks(
                self.name, self.ctx, tg, *on, self._log, self.debug, on_ask=self.calls.ask
            )
            try:
                async for msg in self._inbox:
                    self._handle(msg)
            finally:
                self._inbox.close()  # the loop ended: later messages are moot

    async def start(self) -> None:
        """Start (or clear ``failed`` and start); returns when running. Raises CommandFailed."""
        await self._command(Cmd.START)

    async def stop(self) -> None:
        await self._command(Cmd.STOP)

    async def restart(self) -> None:
        await self._command(Cmd.RESTART)

    async def disable(self) -> None:
        """Stop if needed, then ``disabled`` (start/restart are refused until enabled)."""
        await self._command(Cmd.DISABLE)

    async def enable(self) -> None:
        """``disabled`` → ``stopped``; the caller starts it if it should run."""
        await self._command(Cmd.ENABLE)

    def update(self, ext: Extension) -> None:
        """Take a new configuration; the next worker started uses it."""
        self.ext = ext
        self.settings = ext.restart
        self.calls.timeout = ext.timeout

    async def retire(self) -> None:
        """Stop the worker and end the actor loop (the extension left the registry)."""
        await self.stop()
        self._inbox.close()

    @property
    def restarting(self) -> bool:
        """On its way back up by itself (after a crash, or a restart): not a stop."""
        return self.goal in goals.WANTS_WORKER and self.sm.state in COMING_BACK

    async def wait_while_restarting(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the worker is back up or will not be."""
        with anyio.move_on_after(timeout):
            while self.restarting:
                await self._waiters.changed.wait()

    async def wait_replaced(self, inc: Incarnation, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until ``inc`` is no longer this runner's worker (its
        exit processed)."""
        with anyio.move_on_after(timeout):
            while self._inc is inc:
                await self._waiters.changed.wait()

    def post_start(self) -> None:
        """Ask for a start without waiting (serve uses it at boot)."""
        self._post(Command(Cmd.START))

    def discover(self) -> None:
        """Start a stopped lazy server only to learn its catalog, then stop it again.

        A call (or any command) that arrives meanwhile turns it into an ordinary start. A
        worker that fails to come up is left stopped (no restarts: nobody asked for it)."""
        self._post(Command(Cmd.DISCOVER))

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self)

    def breach(self, reason: str) -> None:
        """A limit was breached (the watchdog says so): kill the current worker's tree."""
        if self._inc is not None and self._inc.pid is not None:  # alive
            self._post(inbox.Kill(self._inc.n, reason, "limit"))

    # ----- the actor -----

    def _post(self, msg: Message) -> None:
        self._inbox.put(msg)  # dropped once closed: the runner was retired; the message is moot

    async def _command(self, cmd: Cmd) -> None:
        waiter = inbox.Waiter(goals.WAITS[cmd])
        self._post(Command(cmd, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise CommandFailed(waiter.error)

    def _handle(self, msg: Message) -> None:
        inc = self._inc
        match msg:
            case Command():
                self._on_command(msg)
            case inbox.BackoffDone(token):
                if token == self._backoff_token and self.sm.state is State.BACKOFF:
                    self._spawn("restarting after backoff")
            case _ if inc is None or inc.n != msg.n:
                return  # about a worker that is already gone
            case inbox.Spawned():
                self.integrity = inc.integrity
                if inc.requested or self.goal not in goals.WANTS_WORKER:
                    self._begin_stop(inc, "stop requested while starting")
            case inbox.SpawnFailed(_, error, True):
                self._refused(inc, error)
            case inbox.SpawnFailed(_, error):
                self._on_exit(inc, Exit(None, None, cause=f"cannot start worker: {error}"))
            case inbox.Ready(_, info) if self.sm.state is State.STARTING:
                self._on_ready(inc, info)
            case inbox.Kill(_, reason, kind):
                inc.kill(reason, kind)
            case inbox.Exited(_, exit):
                self._on_exit(inc, exit)

    def _on_command(self, msg: Command) -> None:
        before, waiter = self.sm.state, msg.waiter
        if waiter is not None:
            self._waiters.add(waiter)
        self.goal, step = goals.react(msg.cmd, before, self.goal)
        self._do(step, goals.reason(msg.cmd, step, self.ext.idle_timeout))
        self._settle()
        if waiter is not None:
            self._waiters.handled(waiter, step, before, self.sm.state)

    def _do(self, step: Step, reason: str) -> None:
        if step is Step.RETRY:
            self.history.reset()  # clears failed
        to = goals.STEP_TARGET[step]
        if step in (Step.SPAWN, Step.RETRY, Step.CANCEL_BACKOFF):
            self._backoff_token += 1  # a backoff under way is over
        if step in (Step.SPAWN, Step.RETRY):
            self._spawn(reason)
        elif step is Step.STOP:
            assert self._inc is not None
            self._begin_stop(self._inc, reason)
        elif to is not None:
            self._to(to, reason)

    def _settle(self) -> None:
        step = goals.settle(self.sm.state, self.goal)
        self._do(step, goals.settle_reason(step))

    def _to(self, state: State, reason: str) -> None:
        old, since, now = self.sm.state, self.sm.since, time.monotonic()
        tr = self.sm.transition(state, reason, now)
        if old is State.STARTING and state is State.RUNNING:
            self.start_duration = now - since
        self._log.info("state", **{"from": old.value, "to": state.value, "reason": reason})
        if self.ctx.on_transition is not None:
            self.ctx.on_transition(self.name, tr)
        self._waiters.moved(state, reason)

    def _spawn(self, reason: str) -> None:
        self.attempted = True
        self._n += 1
        assert self._tg is not None
        inc = Incarnation(self._n, self.ext, self._hooks)
        self._inc = inc
        self.history.record_start(time.monotonic())
        self._to(State.STARTING, reason)
        self._tg.start_soon(inc.run)

    def _on_ready(self, inc: Incarnation, info: ReadyInfo) -> None:
        self.metadata, catalog = inc.became_ready(info)
        self.catalog = catalog if catalog is not None else self.catalog
        self.history.record_running(time.monotonic())
        self._to(State.RUNNING, f"ready (pid {inc.proc.pid if inc.proc else '?'})")
        self.goal, step = goals.after_ready(self.goal)
        if step is Step.STOP:
            self._begin_stop(inc, LEARNED)
            return
        assert self._tg is not None
        self._tg.start_soon(inc.health, self.ctx.health)
        self.calls.last_activity = time.monotonic()
        if self.ext.lazy and self.ext.idle_timeout:
            idle = partial(self._post, Command(Cmd.IDLE))
            self._tg.start_soon(self.calls.idle_watch, inc.scope(), self.ext.idle_timeout, idle)

    def _catalog(self, catalog: dict[str, Any]) -> None:
        self.catalog = catalog
        if self.ctx.on_catalog is not None:
            self.ctx.on_catalog(self.name)

    def _begin_stop(self, inc: Incarnation, reason: str) -> None:
        """Mark the worker as asked to stop; the stop sequence runs once it exists."""
        if not inc.requested:
            inc.requested = True
            self._to(State.STOPPING, reason)
        inc.launch_stop()

    def _on_exit(self, inc: Incarnation, exit: Exit) -> None:
        inc.ended()
        self._inc = None
        memory.trim_soon()  # what the incarnation held is freed: give it back to the system
        text = self.last_exit = describe(exit)  # with what the worker said (exit.detail)
        if inc.error:
            self.last_error = inc.error
        if self.sm.state is State.STOPPING:  # asked to go (exit.requested): not a crash
            self.goal, because = goals.after_stop(self.goal)
            self._to(State.STOPPED, f"{because} ({text})" if because else text)
            self._settle()
            return
        now = time.monotonic()
        self.history.record_exit(exit, now)
        self.crashes[crash_reason(exit)] += 1
        self._to(State.CRASHED, text)
        verdict = goals.after_crash(self.goal, self.settings, self.history, exit, now)
        self.goal = verdict.goal
        if verdict.to is State.BACKOFF:
            self.restarts += 1
            self._backoff_token += 1
            assert self._tg is not None
            self._tg.start_soon(self._backoff_timer, self._backoff_token, verdict.delay)
        self._to(verdict.to, verdict.reason)

    def _refused(self, inc: Incarnation, reason: str) -> None:
        """Not started on purpose (its files no longer match their pin or signature): failed
        at once, no restarts, until the operator starts it again."""
        self.integrity = inc.integrity
        if self.sm.state is not State.STARTING:  # asked to stop while it was being checked
            self._on_exit(inc, Exit(None, None, cause=reason))
            return
        inc.ended()
        self._inc = None
        self.last_exit = reason
        self._to(State.CRASHED, reason)
        self.goal = Goal.DOWN
        self._to(State.FAILED, reason)

    async def _backoff_timer(self, token: int, delay: float) -> None:
        if delay > 0 and math.isfinite(delay):
            await anyio.sleep(delay)
        self._post(inbox.BackoffDone(token))


async def run_guarded(runner: Runner) -> None:
    """Run one runner; a bug in it is logged and ends that extension, never the supervisor."""
    try:
        await runner.run()
    except Exception:
        log.exception("runner crashed (a bug in spctl)", extension=runner.name)
