"""The MCP front as a child of the core, supervised exactly like a worker.

The front (``python -m supervisor.mcp.front``) imports the MCP SDK (~1.5 s, ~60 MB) and
spends milliseconds of CPU per call, so it never shares the core's process or GIL. It
forwards calls over the control socket; the core's only job is to keep it alive, and it does
that with the machinery it uses for extensions: one :class:`Runner` over a synthetic
:class:`Extension` (name ``mcp-front``, kind ``front``, never read from a file), whose spawn
launches the front's argv instead of ``python -m worker``. So the front gets, unchanged:

- the fd-3 socketpair, its own process group, the keeper and PDEATHSIG
  (:func:`spawn_worker`); the front speaks the worker side (:mod:`supervisor.mcp.supervised`):
  it asks for no boot spec, says ``ready`` with ``{"metadata": {"url": …}}`` once its socket
  accepts connections, and answers ``ping`` and ``shutdown``;
- the state machine (``starting → running → …``, every transition logged with its reason);
- the health ping (``spctl serve --health-interval/--health-timeout``, as for workers): a
  front whose loop hangs stops answering and is SIGKILLed, then restarted;
- a start timeout (:data:`START_TIMEOUT`: it imports the SDK) and the graceful stop
  (``shutdown`` → SIGTERM → SIGKILL of its group within :data:`STOP_TIMEOUT`);
- the restart policy (:data:`RESTART`): **always** restart (a clean exit too: the front is
  never meant to end while the core runs); the first restart after a healthy run is
  immediate, consecutive ones back off 1 s × 2ⁿ (jittered, capped at 30 s); more than 5
  restarts within 60 s and it is ``failed`` and stays so — a front that cannot stay up (its
  port taken, a broken install) is an operator's problem, said in ``spctl status``; the core
  and ``spctl mcp`` keep working, and restarting ``spctl serve`` tries again.

It is not one of the core's extensions: it is not in the fleet, not routed to, not limited,
and not refused by the control socket as a worker's peer (it is the core's own client).
``spctl status`` shows it as ``supervisor.mcp_front`` (a runner snapshot plus ``url``) and as
a row of kind ``front`` in the table. On shutdown ``serve`` stops it first, so no new calls
arrive while workers stop.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from supervisor.config.schema import FRONT_SECTION, Extension, RestartConfig, Source
from supervisor.control.paths import state_dir
from supervisor.core.process import WorkerProcess, spawn_worker
from supervisor.core.runner import Runner, RunnerContext, run_guarded
from supervisor.rules.health import HealthSettings
from supervisor.rules.states import State

__all__ = ["FRONT_NAME", "RESTART", "Front", "FrontOptions", "front_extension"]

FRONT_NAME = "mcp-front"
PAGE_TOKEN = "page-token"  # the status page's action token, in the state directory
RESTART = RestartConfig(policy="always", max_restarts=5, window=60.0, backoff=1.0, max_backoff=30.0)
START_TIMEOUT = 60.0  # importing the SDK takes ~1.5 s of CPU; more on a busy machine
STOP_TIMEOUT = 10.0  # uvicorn lets requests finish for up to 3 s (timeout_graceful_shutdown)


@dataclass(frozen=True)
class FrontOptions:
    """How ``serve`` starts the front. The limits are the front's flags of the same names
    (``--max-connections`` …); None leaves the front's default (``supervisor.mcp.limits``,
    which the core does not import)."""

    listen: str = "127.0.0.1:8765"
    token_file: Path | None = None
    clients_file: Path | None = None
    max_connections: int | None = None
    header_timeout: float | None = None
    keepalive_timeout: float | None = None
    max_sessions: int | None = None
    session_idle_timeout: float | None = None
    status_page: bool = True  # the live page at / (--no-status-page)

    def limit_flags(self) -> list[str]:
        """The front's command-line flags for the limits that are set."""
        flags: list[str] = []
        for name in _LIMITS:
            value = getattr(self, name)
            if value is not None:
                flags += [f"--{name.replace('_', '-')}", str(value)]
        return flags


_LIMITS = (
    "max_connections",
    "header_timeout",
    "keepalive_timeout",
    "max_sessions",
    "session_idle_timeout",
)


def front_extension(restart: RestartConfig = RESTART) -> Extension:
    """The synthetic registry entry the front's runner works from."""
    return Extension(
        name=FRONT_NAME,
        section=FRONT_SECTION,
        type="local",
        source=Source(Path(__file__), 1, 1),
        restart=restart,
        start_timeout=START_TIMEOUT,
        stop_timeout=STOP_TIMEOUT,
    )


class Front:
    """The front's supervision: ``run()`` until cancelled, ``stop()``, ``snapshot()``, ``url``."""

    def __init__(
        self,
        opts: FrontOptions,
        socket: Path,
        env: dict[str, str],
        keeper_watch: Callable[[int], None],
        keeper_unwatch: Callable[[int], None],
        *,
        health: HealthSettings | None = None,
        kill_tree: Callable[[int], None] | None = None,
        restart: RestartConfig = RESTART,
        argv: list[str] | None = None,  # tests: another program speaking the front's side
    ) -> None:
        self.opts = opts
        self.socket = socket
        self.env = env
        self._argv = argv
        ctx = RunnerContext(
            spawn=self._spawn,
            keeper_watch=keeper_watch,
            keeper_unwatch=keeper_unwatch,
            health=health or HealthSettings(),
            kill_tree=kill_tree,
        )
        self.runner = Runner(front_extension(restart), ctx)
        self._started = False  # run() has begun: the runner's actor loop serves its inbox
        self._ended = anyio.Event()  # ... and has ended

    def argv(self) -> list[str]:
        if self._argv is not None:
            return list(self._argv)
        argv = [sys.executable, "-P", "-m", "supervisor.mcp.front", "--supervised"]
        argv += ["--socket", str(self.socket), "--listen", self.opts.listen]
        if self.opts.token_file is not None:
            argv += ["--token-file", str(self.opts.token_file)]
        if self.opts.clients_file is not None:
            argv += ["--clients-file", str(self.opts.clients_file)]
        if not self.opts.status_page:
            argv.append("--no-status-page")
        else:  # the front does not see $STATE_DIRECTORY (confine.PRIVATE_ENV)
            argv += ["--page-token", str(self.page_token)]
        return argv + self.opts.limit_flags()

    async def _spawn(
        self,
        ext: Extension,
        on_line: Callable[[str, str], None],
        on_spawned: Callable[[int], Awaitable[None]] | None,
    ) -> WorkerProcess:
        return await spawn_worker(
            argv=self.argv(), env=self.env, on_line=on_line, on_spawned=on_spawned
        )

    @property
    def state(self) -> State:
        return self.runner.state

    @property
    def pid(self) -> int | None:
        return self.runner.pid

    @property
    def url(self) -> str | None:
        """Where it serves MCP, while it runs (the URL its ``ready`` carried)."""
        url = self.runner.metadata.get("url")
        return url if isinstance(url, str) and self.runner.state is State.RUNNING else None

    @property
    def page_token(self) -> Path:
        """Where the front writes the status page's action token (without --token-file)."""
        return state_dir() / PAGE_TOKEN

    def snapshot(self) -> dict[str, Any]:
        page = None
        if self.opts.status_page:  # what `spctl page` reads
            page = {"token_file": str((self.opts.token_file or self.page_token).absolute())}
        return {**self.runner.snapshot(), "url": self.url, "status_page": page}

    async def run(self) -> None:
        """Start the front and keep it up until cancelled; then stop it."""
        actor = anyio.CancelScope(shield=True)  # outlives our cancellation, to run the stop

        async def serve_inbox() -> None:
            try:
                with actor:
                    await run_guarded(self.runner)
            finally:
                self._ended.set()

        self._started = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_inbox)
            try:
                self.runner.post_start()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()
                actor.cancel()

    async def stop(self) -> None:
        """Stop the front's process (gracefully) and keep it stopped; ``run`` still ends only
        when cancelled. Returns at once when the runner is not running (any more)."""
        if not self._started or self._ended.is_set():
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_when, self.runner.stop, tg.cancel_scope)
            tg.start_soon(_cancel_when, self._ended.wait, tg.cancel_scope)

    async def restart(self) -> None:
        """Start it again (clears ``failed``); returns when it runs. Raises CommandFailed."""
        await self.runner.restart()


async def _cancel_when(wait: Callable[[], Awaitable[Any]], scope: anyio.CancelScope) -> None:
    """Await ``wait()`` then cancel ``scope``: the first of several waits ends the race."""
    await wait()
    scope.cancel()
