"""How the core starts one extension's worker process: argv, environment, state directory
(what the environment holds: :mod:`supervisor.core.confine`)."""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from supervisor.config import Extension
from supervisor.core.confine import PRIVATE_ENV, state_dirs, user_name, worker_environment
from supervisor.core.process import WorkerProcess, spawn_worker
from supervisor.core.worker_spec import run_as_problem

__all__ = ["PRIVATE_ENV", "spawn_extension", "worker_python"]


def worker_python(ext: Extension) -> str:
    """The interpreter ``ext``'s worker runs on: its ``python:`` (an environment's, once built),
    else spctl's own."""
    return str(ext.python) if ext.python is not None else sys.executable


async def spawn_extension(ext: Extension, on_line: Any, on_spawned: Any) -> WorkerProcess:
    """Spawn ``python -P -m worker`` for ``ext`` (the runners' ``RunnerContext.spawn``)."""
    run_as = ext.run_as
    problem = run_as_problem(run_as, os.geteuid())
    if problem is not None:  # the runner shows it as "cannot start worker: <problem>"
        raise PermissionError(errno.EPERM, problem)
    ext_state, tmp = state_dirs(ext)
    tmp.mkdir(parents=True, exist_ok=True)
    ext_state.chmod(0o700)
    tmp.chmod(0o700)
    if run_as is not None:
        # Its own state is the one place an extension running as another user may write.
        # (Reaching it needs the state directory to be traversable by that user.)
        for directory in (ext_state, tmp):
            os.chown(directory, run_as.uid, run_as.gid)
    user = user_name(run_as.uid if run_as is not None else os.geteuid())
    env = worker_environment(ext, os.environ, ext_state, tmp, user)
    env["SPCTL_EXTENSION"] = ext.name
    python = worker_python(ext)
    # -P: never put the extension's directory (or ours) in front of sys.path, so an
    # extension cannot shadow the worker package.
    argv = [python, "-P", "-m", "worker"]
    return await spawn_worker(argv=argv, env=env, on_line=on_line, on_spawned=on_spawned)
