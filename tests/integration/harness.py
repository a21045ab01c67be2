"""A small async harness that plays the supervisor's side of one real ``python -m worker``.

:class:`Child` is any child process with its stdout/stderr captured line by line and its exit
seen through a pidfd (not ``asyncio`` subprocess: on 3.11 its ``wait()`` returns only once
every pipe is closed, so a grandchild holding stdout hides the exit). :class:`WorkerHarness`
adds the worker's side: the socketpair, ``SPCTL_PARENT_PID``/``SPCTL_EXTENSION``, and a real
:class:`worker.channel.Channel` on the parent end that answers ``boot`` with the spec and
records ``ready`` and every notification. Every wait has a deadline and wakes on a state
change (a line, a notification, ready, exit, the channel closing), never on a sleep::

    async with WorkerHarness(FIXTURES / "ok_daemon", config={...}) as h:
        info = await h.ready()
        await h.request("ping")
        await h.request("shutdown")
        assert await h.exit_code() == 0

The child's socket end is handed over with ``pass_fds`` at whatever number it has here and
named by ``SPCTL_CHANNEL_FD`` (the worker moves it to fd 3); ``fd3_direct=True`` instead
places it at fd 3 before exec'ing the worker: the bare contract.

Run as ``python -m tests.integration.harness PATH [CONFIG_JSON [LINE]]`` it boots the worker,
waits for ready (and for a worker stdout line containing LINE), prints ``READY <worker pid>``
and waits forever: a supervisor that can be ``kill -9``\\ ed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from worker.channel import Channel

__all__ = ["FIXTURES", "REPO", "Child", "WorkerExited", "WorkerHarness", "call", "text"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPO = FIXTURES.parent.parent

# Exec argv[2:] with fd argv[1] moved to fd 3, as a supervisor using posix_spawn would.
_AT_FD3 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.argv[2], sys.argv[2:])"


class WorkerExited(AssertionError):
    """The worker ended (or the channel closed) while the test was waiting for something else."""


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Child:
    """A child process in its own process group, its output captured line by line.

    Start it inside a running loop, from the loop's thread (PR_SET_PDEATHSIG follows the
    spawning thread). ``close()`` SIGKILLs the whole group and reaps the child.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.pass_fds = tuple(pass_fds)
        self.popen: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.spawned_at = 0.0
        self._pidfd = -1
        self._waiters: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pipes: list[asyncio.BaseTransport] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running; negative when killed by a signal."""
        return None if self.popen is None else self.popen.returncode

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.spawned_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=self.pass_fds,
            process_group=0,
            cwd=self.cwd,
            env=self.env,
        )
        self._pidfd = os.pidfd_open(self.popen.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        await self._capture(self.popen.stdout, self.stdout_lines)
        await self._capture(self.popen.stderr, self.stderr_lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the child itself (not its group)."""
        if self.returncode is None:
            os.kill(self.pid, sig)

    async def close(self) -> None:
        """SIGKILL the process group (grandchildren too) and reap the child."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await self.exit_code(timeout=10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._pipes:
            transport.close()
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    # -- waiting --------------------------------------------------------------------------

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 10.0,
        what: str = "condition",
        *,
        poll: float | None = None,
    ) -> Any:
        """Wait until ``predicate()`` is truthy; return its value.

        It is checked on every state change the harness sees and, for conditions outside it
        (a file an extension writes), also every ``poll`` seconds. Raises TimeoutError with
        :meth:`describe`.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not (value := predicate()):
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    if poll is not None:
                        loop.call_later(poll, _resolve, waiter)
                    await waiter
                return value
        except TimeoutError:
            raise TimeoutError(f"{what} not reached in {timeout}s\n{self.describe()}") from None

    async def exit_code(self, timeout: float = 10.0) -> int:
        """Wait for the child to end; return its returncode (negative: killed by a signal)."""
        await self.wait_for(lambda: self.returncode is not None, timeout, "exit")
        assert self.returncode is not None
        return self.returncode

    async def line(self, text: str, stream: str = "stdout", timeout: float = 10.0) -> str:
        """Wait for a line of ``stream`` ("stdout" or "stderr") containing ``text``."""
        lines = self.stdout_lines if stream == "stdout" else self.stderr_lines

        def found() -> str | None:
            return next((line for line in lines if text in line), None)

        result: str = await self.wait_for(found, timeout, f"{stream} line {text!r}")
        return result

    async def output_done(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until both pipes reached EOF, so the last lines are in."""
        if self._tasks:
            await asyncio.wait(self._tasks[:2], timeout=timeout)

    def describe(self) -> str:
        """State for assertion messages: the returncode and the stderr tail."""
        tail = "\n    ".join(self.stderr_lines[-20:])
        return f"  returncode={self.returncode}\n  stderr:\n    {tail}"

    # -- plumbing -------------------------------------------------------------------------

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve(waiter)

    def _on_exit(self) -> None:
        assert self.popen is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        self.popen.wait()  # the pidfd is readable: it has exited, this only reaps
        self._changed()

    async def _capture(self, pipe: IO[bytes], into: list[str]) -> None:
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, pipe)
        self._pipes.append(transport)
        self._tasks.append(asyncio.create_task(self._read_lines(reader, into)))

    async def _read_lines(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))
            self._changed()


class WorkerHarness(Child):
    """One ``python -m worker`` process and the supervisor's end of its channel."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "test-ext",
        kind: str = "daemon",
        config: Mapping[str, Any] | None = None,
        rlimits: Mapping[str, Sequence[int | None]] | None = None,
        check_interval: float = 0.1,
        python_path: Sequence[str] = (),
        spec: Any = None,
        python: str = sys.executable,
        python_flags: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        parent_pid: int | None = None,
        cwd: str | Path | None = None,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        fd3_direct: bool = False,
    ) -> None:
        path = Path(path).resolve()
        super().__init__(
            [], cwd=cwd if cwd is not None else (path if path.is_dir() else path.parent)
        )
        self.name = name
        self.spec: Any = spec
        if spec is None:
            self.spec = {
                "name": name,
                "kind": kind,
                "path": str(path),
                "config": dict(config or {}),
                "rlimits": {k: list(v) for k, v in (rlimits or {}).items()},
                "check_interval": check_interval,
                "python_path": list(python_path),
            }
        self.python = python
        self.python_flags = list(python_flags)
        self.extra_env = dict(env or {})
        self.parent_pid = os.getpid() if parent_pid is None else parent_pid
        self.fd3_direct = fd3_direct
        self.channel = Channel(
            {"boot": self._boot, "ready": self._ready, **(handlers or {})},
            name=f"harness:{name}",
            on_notification=self._on_notification,
        )
        self.sock: socket.socket | None = None
        self.boot_pid: int | None = None
        self.ready_info: dict[str, Any] | None = None
        self.ready_at: float | None = None
        self.notifications: list[tuple[str, Any]] = []

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = parent
        self.env.update(SPCTL_PARENT_PID=str(self.parent_pid), SPCTL_EXTENSION=self.name)
        self.argv = [self.python, *self.python_flags, "-m", "worker"]
        if self.fd3_direct:
            self.argv = [self.python, "-c", _AT_FD3, str(child.fileno()), *self.argv]
        else:
            self.env["SPCTL_CHANNEL_FD"] = str(child.fileno())
        # The worker finds `worker` through the venv's editable install, or through this.
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )
        self.env.update(self.extra_env)
        self.pass_fds = (child.fileno(),)
        try:
            await super().start()
        finally:
            child.close()
        await self.channel.connect(parent)
        self._tasks.append(asyncio.create_task(self._watch_channel()))

    async def close(self) -> None:
        await super().close()
        self.channel.close("harness closed")

    async def ready(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the worker's ``ready``; raise WorkerExited if it ends first."""
        await self.wait_for(
            lambda: (
                self.ready_info is not None or self.returncode is not None or self.channel.closed
            ),
            timeout,
            "ready",
        )
        if self.ready_info is None:
            await self.output_done()
            raise WorkerExited(f"worker ended before ready\n{self.describe()}")
        return self.ready_info

    async def notification(self, method: str, timeout: float = 10.0) -> Any:
        """Wait for the first notification ``method``; return its params (one → unwrapped)."""

        def found() -> tuple[Any] | None:
            return next(((params,) for m, params in self.notifications if m == method), None)

        result: tuple[Any] = await self.wait_for(found, timeout, f"notification {method!r}")
        return result[0]

    async def request(self, method: str, *params: Any, timeout: float | None = 5.0) -> Any:
        return await self.channel.request(method, *params, timeout=timeout)

    def describe(self) -> str:
        return (
            f"  channel={self.channel.close_reason or 'open'}\n"
            f"  notifications={self.notifications!r}\n{super().describe()}"
        )

    def _boot(self, pid: int) -> Any:
        self.boot_pid = pid
        self._changed()
        return self.spec

    def _ready(self, info: dict[str, Any]) -> None:
        self.ready_info = info
        self.ready_at = time.monotonic()
        self._changed()

    def _on_notification(self, method: str, params: list[Any]) -> None:
        self.notifications.append((method, params[0] if len(params) == 1 else params))
        self._changed()

    async def _watch_channel(self) -> None:
        await self.channel.wait_closed()
        self._changed()


async def _main(path: str, config: dict[str, Any], line: str | None) -> None:
    async with WorkerHarness(path, config=config) as h:
        await h.ready()
        if line is not None:
            await h.line(line)
        print(f"READY {h.pid}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        _main(
            args[0],
            json.loads(args[1]) if len(args) > 1 else {},
            args[2] if len(args) > 2 else None,
        )
    )


def text(value: str) -> dict[str, Any]:
    """One MCP text content block."""
    return {"type": "text", "text": value}


async def call(h: WorkerHarness, tool: str, meta: dict[str, Any] | None = None, **args: Any) -> Any:
    """``tools/call`` through a worker's ``mcp`` request."""
    return await h.request("mcp", "tools/call", {"name": tool, "arguments": args}, meta or {})
