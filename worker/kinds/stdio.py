"""The stdio kind: any stdio MCP server (``command: [...]``), spoken to without the MCP SDK.

Theory of operation. :class:`StdioServer` spawns the command through the PDEATHSIG
trampoline from the loop thread (the server dies with the worker, however the worker dies), in
its own session, with the worker's environment minus the worker's private variables and its
stderr on the worker's stderr (so ``spctl logs`` shows it). Its transport is an asyncio
subprocess protocol: what the server writes on stdout is fed straight from the loop's read
callback to the JSON-RPC line peer, and every message to it is one synchronous write on its
stdin (one writer: lines never interleave). Everything about the session itself — handshake,
catalog, ``mcp`` forwarding, cancellation, progress, ``list_changed``, the server's
elicitation/sampling/roots requests to the client of the call in flight — is
:class:`worker.mcp.lean.LeanClient`'s; this module imports neither the SDK nor pydantic.

A pidfd tells when the server process ends (its status read with ``waitid(WNOWAIT)``, leaving
the reaping to asyncio's child watcher); :attr:`StdioServer.exited` then resolves and the host
ends the worker (non-zero). Calls still pending fail, naming how the server ended, once its
stdout has been read to the end (a response written just before exiting is still delivered)
or :data:`EOF_GRACE` after the exit (a grandchild may hold stdout open); a server that closes
its stdout but lives on fails them :data:`EOF_GRACE` later. Closing the session closes the
server's stdin (the MCP way to ask it to exit); SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.kinds.base import Notify, ServerKind
from worker.log import say
from worker.mcp.jsonrpc import MAX_LINE
from worker.mcp.lean import STOP_GRACE, LeanClient
from worker.mcp.publish import Catalog
from worker.protocol import CONNECTION_LOST, BootSpec
from worker.rpc import RpcError
from worker.trampoline import trampoline_argv

__all__ = ["EOF_GRACE", "MAX_LINE", "Catalog", "StdioServer", "StdioSpec", "load"]

PRIVATE_ENV = ("SPCTL_CHANNEL_FD", "SPCTL_PARENT_PID")
EOF_GRACE = 1.0
"""How long the end of the process and the end of its stdout may lie apart."""


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


async def load(spec: BootSpec, notify: Notify) -> ServerKind:
    """Kind ``stdio``: the command is spawned (and the session opened) by ``start``."""
    return ServerKind("stdio", StdioServer(StdioSpec(spec.command, spec.cwd, spec.env), notify))


class _Pipes(asyncio.SubprocessProtocol):
    """The server's pipes, wired to its :class:`StdioServer`."""

    def __init__(self, server: StdioServer) -> None:
        self.server = server
        self.feed = server.peer.feed
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self.server.stdin = stdin

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.server._stdout_closed()

    def process_exited(self) -> None:
        assert self.transport is not None
        self.server._returned(self.transport.get_returncode())

    def connection_lost(self, exc: Exception | None) -> None:
        # Exited and every pipe closed: nothing left to kill, only the transport to release.
        if self.transport is not None:
            self.transport.close()


class StdioServer(LeanClient):
    """One stdio MCP server process and the session to it; see the module docstring."""

    label = "stdio server"
    forwards = True

    def __init__(self, spec: StdioSpec, notify: Callable[..., None]) -> None:
        super().__init__(notify)
        self.spec = spec
        self.pid: int | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._pidfd = -1
        self._eof = False
        self._returncode: asyncio.Future[int | None] = self.loop.create_future()

    @property
    def metadata(self) -> dict[str, Any]:
        return {"command": list(self.spec.command), **super().metadata}

    async def _connect(self) -> None:
        # subprocess_exec forks on this (the loop's) thread: PDEATHSIG follows it.
        transport, _ = await self.loop.subprocess_exec(
            lambda: _Pipes(self),
            *trampoline_argv(self.spec.command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's stderr: the supervisor's log
            cwd=self.spec.cwd,
            env=self.spec.environment(),
            start_new_session=True,  # signals to the worker's group are not the server's
        )
        self._transport = transport
        self.pid = pid = transport.get_pid()
        say(f"started stdio server (pid {pid}): {' '.join(self.spec.command)}")
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone and reaped: the child watcher tells how
            self._when_reaped()
        else:
            self.loop.add_reader(self._pidfd, self._on_exit)

    def _write(self, data: bytes) -> None:
        stdin = self.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    async def _disconnect(self) -> None:
        if self.stdin is not None:
            self.stdin.close()  # the MCP way to ask a stdio server to exit
        if self.pid is not None and not self._gone.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), STOP_GRACE)
        if self.pid is not None and not self._gone.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), EOF_GRACE)
        if self._transport is not None:  # its pipes (and, were it still running, the process)
            self._transport.close()
        how = self.how_ended or "was stopped"
        self.peer.fail_all(RpcError(CONNECTION_LOST, f"the {self.label} {how}"))

    # -- the end of the server ------------------------------------------------------------

    def _on_exit(self) -> None:
        """The pidfd is readable: the server has ended."""
        self.loop.remove_reader(self._pidfd)
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # asyncio's child watcher has reaped it already
            info = None
        finally:
            os.close(self._pidfd)
            self._pidfd = -1
        if info is not None:
            self._ended(_describe(info.si_code, info.si_status))
        else:
            self._when_reaped()

    def _when_reaped(self) -> None:
        self._returncode.add_done_callback(lambda f: self._ended(_describe_returncode(f.result())))

    def _returned(self, code: int | None) -> None:
        if not self._returncode.done():
            self._returncode.set_result(code)

    def _ended(self, how: str) -> None:
        if not self._server_ended(how):
            return
        if not self._closing:
            say(f"the stdio server (pid {self.pid}) {how}")
        if self._eof:
            self._fail_pending()
        else:
            self.loop.call_later(EOF_GRACE, self._fail_pending)

    def _stdout_closed(self) -> None:
        self._eof = True
        if self._gone.done():
            self._fail_pending()
        else:
            self.loop.call_later(EOF_GRACE, self._fail_pending)

    def _fail_pending(self) -> None:
        how = self.how_ended or "closed its stdout"
        self.peer.fail_all(RpcError(CONNECTION_LOST, f"the {self.label} {how}"))


def _describe(si_code: int, si_status: int) -> str:
    if si_code == os.CLD_EXITED:
        return f"exited with status {si_status}"
    return f"was killed by {_signal_name(si_status)}"


def _describe_returncode(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        return f"was killed by {_signal_name(-code)}"
    return f"exited with status {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
