"""How the core starts one extension's worker process: argv, environment, state directory."""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from supervisor.config import Extension
from supervisor.control.paths import state_dir
from supervisor.core.process import WorkerProcess, spawn_worker
from supervisor.core.worker_spec import run_as_problem

__all__ = ["PRIVATE_ENV", "spawn_extension"]

# What belongs to the supervisor alone: systemd's notify and socket-activation protocol, and
# where the control socket and state live. Never passed to a child.
PRIVATE_ENV = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "SPCTL_SOCKET",
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
    }
)


async def spawn_extension(ext: Extension, on_line: Any, on_spawned: Any) -> WorkerProcess:
    """Spawn ``python -P -m worker`` for ``ext`` (the runners' ``RunnerContext.spawn``)."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env.update(ext.env)
    env["SPCTL_EXTENSION"] = ext.name
    run_as = ext.run_as
    problem = run_as_problem(run_as, os.geteuid())
    if problem is not None:  # the runner shows it as "cannot start worker: <problem>"
        raise PermissionError(errno.EPERM, problem)
    ext_state = state_dir() / "extensions" / ext.name
    ext_state.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        # Its own state is the one place an extension running as another user may write.
        # (Reaching it needs the state directory to be traversable by that user.)
        os.chown(ext_state, run_as.uid, run_as.gid)
    env["EXTENSION_STATE_DIR"] = str(ext_state)
    python = str(ext.python) if ext.python is not None else sys.executable
    # -P: never put the extension's directory (or ours) in front of sys.path, so an
    # extension cannot shadow the worker package.
    argv = [python, "-P", "-m", "worker"]
    return await spawn_worker(argv=argv, env=env, on_line=on_line, on_spawned=on_spawned)
