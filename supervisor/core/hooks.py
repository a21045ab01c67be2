"""State-change hooks: an entry's ``hooks:`` commands run on onCrash, onFailed, onRecovered.

Fed by ``serve``'s transition observer (:meth:`HookRunner.on_transition`, called on the event
loop by the runner): it picks the events (:class:`supervisor.rules.hooks.Events`), asks the
rate limit (:class:`supervisor.rules.hooks.RateLimit`; a suppressed run is counted and the
count logged), and starts a task of its own for each run, so the runner never waits.

The task starts the command: argv, no shell, its own session, the supervisor's environment
without its private variables, and a pid the orphan handling leaves alone (it kills children
we did not spawn, so whatever a hook leaves running after it exits is killed). It writes the
event as one JSON document on the hook's stdin and closes it, logs each line the hook prints
(stdout and stderr, as ``hook output``, at most :data:`MAX_OUTPUT` bytes), and kills its
process group when it outlives its timeout (``hooks.timeout``, default
:data:`DEFAULT_TIMEOUT`). At most :data:`MAX_RUNNING` hooks run at once; beyond that a run is
dropped with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import structlog

from supervisor.config import Extension
from supervisor.core.process import helper_ended, helper_started, helper_starting
from supervisor.rules.audit import iso_time
from supervisor.rules.hooks import Events, RateLimit, payload
from supervisor.rules.states import Transition
from supervisor.rules.text import safe

__all__ = ["DEFAULT_TIMEOUT", "HookRunner"]

log = structlog.get_logger("spctl.hooks")

DEFAULT_TIMEOUT = 10.0
MAX_OUTPUT = 64 * 1024
MAX_RUNNING = 16


class HookRunner:
    def __init__(
        self,
        start_soon: Callable[..., Any],
        env: Mapping[str, str],
        limit: RateLimit | None = None,
    ) -> None:
        """``start_soon(fn, *args)``: runs a coroutine in the supervisor's task group."""
        self._start_soon = start_soon
        self._env = dict(env)
        self.events = Events()
        self.limit = limit or RateLimit()
        self.running = 0

    def on_transition(self, ext: Extension, restarts: int, tr: Transition) -> None:
        for event in self.events.of(ext.name, tr):
            argv = ext.hooks.commands.get(event)
            if argv is None:
                continue
            verdict = self.limit.allow(ext.name, event, time.monotonic())
            if not verdict.run:
                if verdict.first_suppressed:
                    log.warning(
                        "hook suppressed by its rate limit",
                        extension=ext.name,
                        hook=event,
                        limit=f"{self.limit.runs} per {self.limit.window:g}s",
                    )
                continue
            if verdict.suppressed:
                log.warning(
                    "hook runs were suppressed",
                    extension=ext.name,
                    hook=event,
                    suppressed=verdict.suppressed,
                )
            if self.running >= MAX_RUNNING:
                log.warning("hook dropped: too many running", extension=ext.name, hook=event)
                continue
            data = payload(event, ext.name, tr, time=iso_time(time.time()), restarts=restarts)
            timeout = ext.hooks.timeout if ext.hooks.timeout is not None else DEFAULT_TIMEOUT
            self.running += 1
            self._start_soon(self._guarded, ext.name, event, argv, data, timeout)

    async def _guarded(self, *args: Any) -> None:
        try:
            await self._run(*args)
        except Exception:  # a hook's failure is logged, never the supervisor's
            log.exception("hook failed")
        finally:
            self.running -= 1

    async def _run(
        self, name: str, event: str, argv: tuple[str, ...], data: dict[str, Any], timeout: float
    ) -> None:
        hook_log = log.bind(extension=name, hook=event)
        started = time.monotonic()
        try:
            proc = _spawn(argv, self._env)
        except OSError as exc:
            hook_log.error("hook cannot start", command=argv[0], error=str(exc))
            return
        assert proc.stdin is not None
        assert proc.stdout is not None
        killed = False
        pidfd = os.pidfd_open(proc.pid)
        try:
            _send(proc.stdin.fileno(), json.dumps(data).encode() + b"\n")
            proc.stdin.close()
            with anyio.move_on_after(timeout) as scope:
                await _log_output(proc.stdout.fileno(), hook_log)
                await anyio.wait_readable(pidfd)
            if scope.cancelled_caught:
                killed = True
                hook_log.warning("hook timed out: killed", timeout=timeout, pid=proc.pid)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with anyio.CancelScope(shield=True):
                    await anyio.wait_readable(pidfd)
            proc.wait()
            os.close(pidfd)
            helper_ended(proc.pid)
            proc.stdout.close()
        if not killed:
            seconds = round(time.monotonic() - started, 3)
            level = hook_log.info if proc.returncode == 0 else hook_log.warning
            level("hook ran", exit=proc.returncode, seconds=seconds)


def _spawn(argv: tuple[str, ...], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the hook, as a helper of :mod:`supervisor.core.process`: the orphan handling,
    which kills children we did not spawn, leaves it alone until it is reaped."""
    helper_starting()
    proc = None
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        helper_started(proc.pid if proc is not None else None)
    return proc


def _send(fd: int, data: bytes) -> None:
    """Write the event without ever blocking (it fits in a pipe; a hook that does not read
    it gets what fits)."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(fd, data)


async def _log_output(fd: int, hook_log: Any) -> None:
    """Log the lines read from ``fd`` until EOF; past MAX_OUTPUT bytes, read and drop the rest."""
    os.set_blocking(fd, False)
    seen, pending = 0, b""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        if seen >= MAX_OUTPUT:
            continue
        seen += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            hook_log.info("hook output", line=safe(line.decode(errors="replace")))
        if seen >= MAX_OUTPUT:
            hook_log.warning("hook output cut", limit=MAX_OUTPUT)
            pending = b""
    if pending:
        hook_log.info("hook output", line=safe(pending.decode(errors="replace")))
