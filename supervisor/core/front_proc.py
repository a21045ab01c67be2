"""The MCP front as a child of the core: started, watched and restarted like a worker.

The front (``python -m supervisor.mcp.front``) imports the MCP SDK (~1.5 s, ~60 MB) and
spends milliseconds of CPU per call, so it never shares the core's process or GIL. It talks to
the core over the control socket, so the core only has to keep it alive: spawn it (own process
group, watched by the keeper), read its output into the log, learn from its first line where
it listens, and restart it with backoff when it exits (1 s × 2ⁿ, capped at 30 s, reset after
60 s up). On shutdown it is stopped first, so no new calls arrive while workers stop.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisor.core.process import WorkerProcess, spawn_worker
from supervisor.rules.exits import describe, from_waitid

__all__ = ["FrontOptions", "FrontProcess"]

log = structlog.get_logger("spctl.front")

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True)
class FrontOptions:
    listen: str = "127.0.0.1:8765"
    token_file: Path | None = None


class FrontProcess:
    def __init__(
        self,
        opts: FrontOptions,
        socket: Path,
        env: dict[str, str],
        keeper_watch: Callable[[int], None],
        keeper_unwatch: Callable[[int], None],
    ) -> None:
        self.opts = opts
        self.socket = socket
        self.env = env
        self._watch = keeper_watch
        self._unwatch = keeper_unwatch
        self.proc: WorkerProcess | None = None
        self.url: str | None = None
        self.state = "stopped"
        self.restarts = 0
        self.last_exit: str | None = None
        self._stopping = False

    def stopping(self) -> bool:
        return self._stopping

    def argv(self) -> list[str]:
        argv = [sys.executable, "-P", "-m", "supervisor.mcp.front", "--socket", str(self.socket)]
        argv += ["--listen", self.opts.listen]
        if self.opts.token_file is not None:
            argv += ["--token-file", str(self.opts.token_file)]
        return argv

    def snapshot(self) -> dict[str, Any]:
        pid = self.proc.pid if self.proc is not None and self.proc.alive else None
        return {
            "state": self.state,
            "pid": pid,
            "url": self.url,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }

    def _on_line(self, stream: str, line: str) -> None:
        match = _LISTENING.search(line)
        if match:
            self.url = match.group(1)
            self.state = "running"
            log.info("mcp front listening", url=self.url)
        else:
            log.info("output", extension="mcp-front", stream=stream, line=line)

    async def run(self) -> None:
        """Keep the front up until cancelled (then stop it)."""
        failures = 0
        try:
            while not self.stopping():
                self.state = "starting"
                self.url = None
                started = time.monotonic()
                try:
                    proc = await spawn_worker(argv=self.argv(), env=self.env, on_line=self._on_line)
                except OSError as exc:
                    self.last_exit = f"cannot start: {exc}"
                    log.error("mcp front", error=self.last_exit)
                else:
                    self.proc = proc
                    self._watch(proc.pgid)
                    result = await proc.wait()
                    await proc.reap_group()
                    await proc.wait_output()
                    self._unwatch(proc.pgid)
                    self.last_exit = describe(from_waitid(result.si_code, result.si_status))
                if self.stopping():  # stop() ran while we awaited the exit
                    break
                self.state = "backoff"
                failures = 0 if time.monotonic() - started >= 60 else failures + 1
                delay = min(30.0, 1.0 * 2 ** max(0, failures - 1)) if failures else 0.0
                log.warning("mcp front exited", reason=self.last_exit, restart_in=delay)
                self.restarts += 1
                await anyio.sleep(delay)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stop()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or not proc.alive:
            self.state = "stopped"
            return
        self.state = "stopping"
        proc.signal_group(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            await proc.wait()
        if proc.alive:
            proc.signal_group(signal.SIGKILL)
            await proc.wait()
        await proc.reap_group()
        self._unwatch(proc.pgid)
        self.state = "stopped"
