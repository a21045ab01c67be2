"""A fake spawn for runner tests: no process, a real channel, a scripted worker at its far end.

``FakeSpawn`` is what ``RunnerContext.spawn`` calls. Each spawn gives a :class:`FakeWorker`
whose behaviour is the next of ``FakeSpawn.script`` (``"ok"`` once it runs out): it answers
``boot``, says ``ready`` (or holds, or reports a load error), answers ``ping`` and
``shutdown``. Its "process" is a :class:`FakeProcess`: the exit future is resolved by the
worker (``exit(code)``) or by the signals the runner sends its group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import anyio

from supervisor.config import Extension
from supervisor.core.process import WorkerProcess
from worker.channel import Channel
from worker.protocol import ReadyInfo

# Far above any pid_max: never a real process (and the fake never signals it anyway).
FAKE_PID = 1 << 30


class FakeProcess(WorkerProcess):
    """A worker "process" whose end is decided by the fake worker or by the signals sent."""

    worker: FakeWorker

    def signal_group(self, sig: int) -> bool:
        if not self.alive:
            return False
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and not self.worker.ignores_term):
            self.worker.killed(sig)
        return True

    async def reap_group(self, timeout: float = 5.0) -> None:
        return None


class FakeWorker:
    def __init__(self, n: int, behaviour: str, sock: socket.socket) -> None:
        self.n = n
        self.behaviour = behaviour  # ok | hold | load_error | stubborn | exit:<code> (on ready)
        self.ignores_term = behaviour == "stubborn"
        self.release = anyio.Event()  # "hold": say ready once set
        self.sock = sock
        loop = asyncio.get_running_loop()
        self.proc = FakeProcess(FAKE_PID + n, sock, loop.create_future())
        self.proc.worker = self
        handlers = {"ping": self._ping, "shutdown": self._shutdown, "mcp": self._mcp}
        self.channel = Channel(handlers, name="fake")
        self.task: asyncio.Task[None] | None = None

    async def _ping(self) -> None:
        return None

    async def _mcp(self, method: str, params: Any, meta: dict[str, Any]) -> Any:
        """Any MCP request: reports progress 1/2 and 2/2 under the token it was given (yielding
        between them, so calls interleave), and answers with the token it saw."""
        token = meta.get("progressToken")
        for step in (1, 2):
            if token is not None:
                self.channel.notify("progress", token, step, 2, f"{method} {step}")
            await asyncio.sleep(0)
        return {"token_seen": token, "params": params}

    async def _shutdown(self) -> None:
        if not self.ignores_term:
            asyncio.get_running_loop().call_later(0.01, self.exit, 0)

    async def run(self, child: socket.socket) -> None:
        await self.channel.connect(child)
        await self.channel.request("boot", self.proc.pid, timeout=5)
        if self.behaviour == "load_error":
            message = {"message": "ModuleNotFoundError: No module named 'x'", "traceback": ""}
            self.channel.notify("load_error", message)
            self.exit(3)  # closing the channel sends what is queued first
            return
        if self.behaviour == "hold":
            await self.release.wait()
        info = ReadyInfo(self.proc.pid, "fake", {"n": self.n}, "3.11", {"tools": []})
        await self.channel.request("ready", info.to_wire(), timeout=5)
        if self.behaviour.startswith("exit:"):
            self.exit(int(self.behaviour[5:]))

    def exit(self, code: int) -> None:
        self._end(os.CLD_EXITED, code)

    def killed(self, sig: int) -> None:
        self._end(os.CLD_KILLED, sig)

    def _end(self, si_code: int, status: int) -> None:
        if self.proc.exited.done():
            return
        self.channel.close("worker exited")
        self.proc.exited.set_result(os.waitid_result((self.proc.pid, 0, 17, status, si_code)))


class FakeSpawn:
    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.workers: list[FakeWorker] = []
        self.spawned = anyio.Event()  # set (and replaced) at each spawn

    @property
    def last(self) -> FakeWorker:
        return self.workers[-1]

    async def __call__(
        self, ext: Extension, on_line: Callable[[str, str], None], on_spawned: Any
    ) -> WorkerProcess:
        parent, child = socket.socketpair()
        behaviour = self.script.pop(0) if self.script else "ok"
        worker = FakeWorker(len(self.workers) + 1, behaviour, parent)
        self.workers.append(worker)
        worker.task = asyncio.get_running_loop().create_task(worker.run(child))
        self.spawned.set()
        self.spawned = anyio.Event()
        return worker.proc
