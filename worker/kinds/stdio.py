"""The stdio kind: any stdio MCP server (``command: [...]``), spoken to with the SDK's client.

Theory of operation. :class:`StdioServer` spawns the command through the PDEATHSIG
trampoline from the loop thread (the server dies with the worker, however the worker dies), in
its own session, with the worker's environment minus the worker's private variables and its
stderr on the worker's stderr (so ``spctl logs`` shows it). Its transport is two pipe pumps
(one JSON-RPC message a line) run by the session's runner task; everything about the session
itself — handshake, catalog, ``mcp`` forwarding, cancellation, progress, ``list_changed`` — is
:class:`worker.kinds.client.McpClient`'s. A pidfd tells when the server process ends;
:attr:`StdioServer.exited` then resolves and the host ends the worker (non-zero). Closing the
session closes the server's stdin (the MCP way to ask it to exit); SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from worker.kinds.client import STOP_GRACE, Catalog, McpClient, Streams, dump, log
from worker.trampoline import trampoline_argv

__all__ = ["Catalog", "StdioServer", "StdioSpec", "dump"]

MAX_LINE = 64 * 1024 * 1024
"""Longest JSON-RPC line accepted from the server (a big resource read is one line)."""
PRIVATE_ENV = ("SPCTL_CHANNEL_FD", "SPCTL_PARENT_PID")


@dataclass(frozen=True)
class StdioSpec:
    """What to run: argv, working directory and extra environment (over the worker's)."""

    command: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env.update(self.env)
        return env


class StdioServer(McpClient):
    """One stdio MCP server process and the SDK session to it; see the module docstring."""

    label = "stdio server"

    def __init__(self, spec: StdioSpec, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self._pidfd = -1

    @property
    def metadata(self) -> dict[str, Any]:
        return {"command": list(self.spec.command), **super().metadata}

    async def start(self) -> Catalog:
        """Spawn, handshake and fetch the catalog. Raises if the server cannot get that far."""
        await self._spawn()
        return await super().start()

    async def _reap(self) -> None:
        if self.proc is not None and not self.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_GRACE)
        if self.proc is not None and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def _spawn(self) -> asyncio.subprocess.Process:
        # create_subprocess_exec forks on this (the loop's) thread: PDEATHSIG follows it.
        self.proc = proc = await asyncio.create_subprocess_exec(
            *trampoline_argv(self.spec.command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's stderr: the supervisor's log
            cwd=self.spec.cwd,
            env=self.spec.environment(),
            start_new_session=True,  # signals to the worker's group are not the server's
            limit=MAX_LINE,
        )
        self._pidfd = os.pidfd_open(proc.pid)
        self.loop.add_reader(self._pidfd, self._on_exit)
        log(f"started stdio server (pid {proc.pid}): {' '.join(self.spec.command)}")
        return proc

    def _on_exit(self) -> None:
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self.loop.create_task(self._report_exit())

    async def _report_exit(self) -> None:
        # The pidfd is readable: the server has ended. asyncio's child watcher (a thread)
        # reaps it and sets returncode a moment later; wait that moment for the status.
        proc = self.proc
        assert proc is not None
        for _ in range(100):
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        code = proc.returncode
        if code is None:
            how = "exited"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        if not self._closing:
            log(f"the stdio server (pid {proc.pid}) {how}")
        if not self.exited.done():
            self.exited.set_result(how)

    # -- transport ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Streams]:
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump_out, read_send)
            tg.start_soon(self._pump_in, write_recv)
            yield read_recv, write_send
            tg.cancel_scope.cancel()

    def _session_ended(self, error: BaseException | None) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()  # the MCP way to ask a stdio server to exit

    async def _pump_out(self, send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        """Server stdout → session, one JSON-RPC message a line."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with send:
            while line := await self.proc.stdout.readline():
                if not line.strip():
                    continue
                item: SessionMessage | Exception
                try:
                    item = SessionMessage(types.jsonrpc_message_adapter.validate_json(line))
                except ValueError as e:
                    log(f"not a JSON-RPC message from the stdio server: {line[:200]!r}")
                    item = e
                await send.send(item)

    async def _pump_in(self, recv: MemoryObjectReceiveStream[SessionMessage]) -> None:
        """Session → server stdin."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        stdin = self.proc.stdin
        async with recv:
            async for message in recv:
                text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    stdin.write(text.encode() + b"\n")
                    await stdin.drain()
                except (ConnectionError, OSError):
                    return  # the server is gone: the pidfd says so
