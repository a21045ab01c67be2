"""The worker's side of the supervisor ⇄ worker protocol (:mod:`worker.protocol`), for one
extension.

Theory of operation. One :class:`Host` owns the channel (fd 3) and one
:class:`~worker.kinds.base.Kind`. Its lifecycle task has one path for every kind: ask the
supervisor for the boot spec (``boot``); apply the rlimits (then, for an entry with ``user:``,
become that user: :mod:`worker.privileges`); load the kind (:func:`worker.kinds.load_kind`:
import the extension, check the command or URL — a failure is a ``load_error``, exit 3); start
it; add its ``mcp`` or ``service`` handlers to the channel; say ``ready`` (one
:class:`~worker.protocol.ReadyInfo`); and serve until the kind returns its
:class:`~worker.kinds.base.Verdict` (a daemon whose ``is_running()`` is False, a stdio server
that exited, a remote that stopped answering). Meanwhile the channel serves ``ping`` (which
also runs the kind's ping hook) and ``shutdown`` from the loop, so a sync ``start()`` running
in a thread never delays a ping. What each kind does is in its module under
:mod:`worker.kinds`.

Every way out is a *verdict* (an exit code, see :mod:`worker.protocol`) set once on a future:
the lifecycle ending, the ``shutdown`` handler, or the channel closing. The first verdict wins;
:func:`run` then drains what is queued for the supervisor and ends the process with
``os._exit`` — extension threads (a hung sync ``stop()``, say) must not keep a worker alive
that has decided to die, and interpreter shutdown would join them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

from worker import api, sandbox
from worker.channel import Channel, ChannelClosed
from worker.kinds import load_kind
from worker.kinds.base import Kind, LoadFailed, Unavailable
from worker.loader import LoadError, apply_rlimits
from worker.log import say
from worker.mcp.ask import set_asker
from worker.privileges import drop_privileges
from worker.protocol import (
    ASK,
    BOOT,
    ERROR,
    EXIT_CHANNEL_LOST,
    EXIT_ERROR,
    EXIT_LOAD_ERROR,
    EXIT_OK,
    EXIT_PROTOCOL_ERROR,
    LOAD_ERROR,
    PING,
    READY,
    SERVICE,
    SHUTDOWN,
    TIMEOUT,
    BootSpec,
    ReadyInfo,
)
from worker.rpc import MAX_FRAME_DEFAULT, LocalProtocolError, RpcError

__all__ = ["Host", "failure", "run"]

DRAIN_TIMEOUT = 2.0
"""How long a dying worker waits for its last messages to reach the supervisor."""
STOP_TIMEOUT = 3.0
"""Best-effort stop()/shutdown() budget when the worker ends on its own (not on request)."""
TRACEBACK_LINES = 20
MESSAGE_CHARS = 2000
PYTHON = sys.version.split()[0]


def switch_user(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` (``user:``/``group:``). Raises LoadError."""
    try:
        drop_privileges(uid, gid)
    except OSError as e:
        raise LoadError(f"cannot switch to uid {uid} gid {gid}: {e.strerror or e}") from None
    state = os.environ.get("EXTENSION_STATE_DIR")
    if state and not os.access(state, os.W_OK | os.X_OK):
        say(f"EXTENSION_STATE_DIR {state} is not writable by uid {uid} (can it reach it?)")


def confine(raw: dict[str, Any]) -> str:
    """Apply the boot spec's sandbox (none when it has no ``sandbox``); what ``status`` shows.
    Raises LoadError when it cannot be applied as required."""
    if not raw:
        return ""
    try:
        summary = sandbox.apply(sandbox.Policy.parse(raw))
    except (ValueError, sandbox.SandboxError) as e:
        raise LoadError(str(e)) from None
    if "not enforced" in summary:
        say(f"sandbox: {summary}")
    return summary


def failure(exc: BaseException) -> dict[str, str]:
    """The ``{message, traceback}`` payload of ``load_error``/``error``; also logs it."""
    if isinstance(exc, LoadError | Unavailable) and exc.__cause__ is None:
        message, tail = str(exc), ""  # said as is, no traceback
    else:
        message = f"{type(exc).__name__}: {exc}"
        text = "".join(traceback.format_exception(exc))
        tail = "\n".join(line[:500] for line in text.splitlines()[-TRACEBACK_LINES:])
        print(text, file=sys.stderr, end="", flush=True)
    say(message)
    return {"message": message[:MESSAGE_CHARS], "traceback": tail}


class Host:
    """The worker's protocol state for one extension; see the module docstring."""

    def __init__(self) -> None:
        self.channel = Channel({PING: self._ping, SHUTDOWN: self._shutdown}, name="worker")
        self.kind: Kind | None = None
        self.sandbox = ""  # what the sandbox enforces, for status ("" when there is none)
        self._serving = False  # started: the kind's ping hook runs from now on
        self._verdict: asyncio.Future[int] | None = None
        self._lifecycle: asyncio.Task[int] | None = None
        self._stopping: asyncio.Task[None] | None = None

    def finish(self, code: int) -> None:
        """Record the exit code; the first verdict wins."""
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(code)

    async def run(self, sock: socket.socket) -> int:
        """Serve the channel on ``sock`` until a verdict; return the exit code."""
        self._verdict = asyncio.get_running_loop().create_future()
        await self.channel.connect(sock)
        watcher = asyncio.create_task(self._watch_channel())
        self._lifecycle = asyncio.create_task(self._run_lifecycle())
        self._lifecycle.add_done_callback(self._lifecycle_done)
        code = await self._verdict
        if code not in (EXIT_CHANNEL_LOST, EXIT_PROTOCOL_ERROR):
            await self._drain()
        watcher.cancel()
        return code

    async def _drain(self) -> None:
        # A reply is queued by the handler's task after the handler returns: let it run first.
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.channel.drain()
        except (TimeoutError, RpcError, OSError):
            pass

    async def _watch_channel(self) -> None:
        reason = await self.channel.wait_closed()
        if self._verdict is not None and not self._verdict.done():
            lost = _is_eof(reason)
            if not lost:
                say(f"channel closed: {reason}")
            self.finish(EXIT_CHANNEL_LOST if lost else EXIT_PROTOCOL_ERROR)

    def _lifecycle_done(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.finish(task.result())
        elif isinstance(exc, ChannelClosed):
            self.finish(EXIT_CHANNEL_LOST if _is_eof(exc.message) else EXIT_PROTOCOL_ERROR)
        elif isinstance(exc, RpcError):  # the supervisor refused our boot or ready
            say(f"supervisor answered with an error: {exc}")
            self.finish(EXIT_PROTOCOL_ERROR)
        else:
            failure(exc)
            self.finish(EXIT_ERROR)

    async def _run_lifecycle(self) -> int:
        """boot → load → start → ready → serve → verdict; returns the exit code."""
        try:
            spec = BootSpec.parse(await self.channel.request(BOOT, os.getpid()))
        except ValueError as e:
            say(f"protocol error: {e}")
            return EXIT_PROTOCOL_ERROR
        api.set_service_caller(self._call_service)  # worker.api.call_service, for any kind
        set_asker(self._ask_client)  # a server's elicitation/sampling/roots, to the client
        try:  # once, before any kind runs code of its extension or starts its command
            apply_rlimits(spec.rlimits)  # while still root, if it is to switch user
            if spec.uid is not None and spec.gid is not None:
                switch_user(spec.uid, spec.gid)
            self.sandbox = confine(spec.sandbox)  # after rlimits and user:, before its code
            self.kind = kind = await load_kind(spec, self.channel.notify)
        except Exception as e:
            return await self._failed(LOAD_ERROR, e, EXIT_LOAD_ERROR)
        try:
            catalog = await kind.start()
        except LoadFailed as e:
            return await self._failed(LOAD_ERROR, e.__cause__ or e, EXIT_LOAD_ERROR)
        except Exception as e:
            return await self._failed(ERROR, e, EXIT_ERROR)
        self.channel.handlers.update(kind.handlers)
        self._serving = True  # a ping may overtake the answer to ready
        metadata = dict(kind.metadata)
        if self.sandbox:
            metadata["sandbox"] = self.sandbox
        info = ReadyInfo(os.getpid(), kind.kind, metadata, PYTHON, catalog)
        try:
            await self.channel.request(READY, info.to_wire())
        except LocalProtocolError as e:  # never sent: said in a small frame instead
            items = sum(len(v) for v in (catalog or {}).values())
            cap = f"{MAX_FRAME_DEFAULT // 2**20} MiB"
            why = f"catalog over the {cap} frame cap ({items} items; {e})"
            return await self._failed(ERROR, RuntimeError(why), EXIT_ERROR)
        try:
            verdict = await kind.wait()
        except Exception as e:
            return await self._failed(ERROR, e, EXIT_ERROR)
        if verdict.notice is not None:
            self.channel.notify(*verdict.notice)
            await self._drain()
        if verdict.close:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await kind.close()
            except TimeoutError:
                say(f"stop()/shutdown() did not finish in {STOP_TIMEOUT:g}s")
        return verdict.code

    async def _failed(self, method: str, exc: BaseException, code: int) -> int:
        """Report ``exc`` as ``load_error`` or ``error``; the lifecycle then ends with code."""
        self.channel.notify(method, failure(exc))
        await self._drain()
        return code

    async def _call_service(self, name: str, params: Any, timeout: float | None) -> Any:
        """A plugin's service, through the supervisor (``worker.api.call_service``)."""
        try:
            return await self.channel.request(SERVICE, name, params, timeout=timeout)
        except TimeoutError:
            raise api.ServiceError(TIMEOUT, f"{name}: no answer within {timeout:g}s") from None
        except RpcError as e:
            raise api.ServiceError(e.code, e.message) from None

    async def _ask_client(self, token: int, method: str, params: Any) -> Any:
        """A server's request to the client of a call, through the supervisor (no deadline
        of its own: the call's timeout and cancellation end it)."""
        return await self.channel.request(ASK, token, method, params)

    # -- handlers served to the supervisor --------------------------------------------------

    def _ping(self) -> dict[str, float]:  # sync: the channel answers it without a task
        if self._serving and self.kind is not None:
            self.kind.on_ping()  # starts a task at most: the answer is never delayed
        return {"t": time.monotonic()}

    async def _shutdown(self) -> None:
        if self._stopping is None:
            if self._lifecycle is not None:
                self._lifecycle.cancel()  # no more is_running() polls, no late "ready"
            self._stopping = asyncio.create_task(self._close_kind())
        await asyncio.shield(self._stopping)
        # Exit only once the reply to this request is queued, which happens after we return.
        asyncio.get_running_loop().call_soon(self.finish, EXIT_OK)

    async def _close_kind(self) -> None:
        if self.kind is not None:
            await self.kind.close()


def _is_eof(reason: str) -> bool:
    # Channel close reasons: "peer closed the connection", "connection lost: …" (EOF/reset:
    # the supervisor is gone or let us go) versus "protocol error: …" (it sent garbage).
    return not reason.startswith("protocol error")


def run(sock: socket.socket) -> NoReturn:
    """Run the host on ``sock`` and end the process with its verdict."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(Host().run(sock))
    except SystemExit as e:  # the extension called sys.exit() on the loop or in a thread
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    except BaseException as e:
        failure(e)
        code = EXIT_ERROR
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
