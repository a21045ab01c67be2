"""Before a start: the extension's own environment (``install:``/``requirements:``, DESIGN §9),
built from ``extensions/spctl.lock`` when it is missing. Runs in a worker thread (uv is a
subprocess; the event loop and the other extensions go on meanwhile).

An entry without a lock entry is locked on its first start (written to ``spctl.lock``); a lock
entry that does not match the entry is an error that says to run ``spctl lock NAME``.
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.config import Extension
from supervisor.control.paths import state_dir
from supervisor.core.process import helper_ended, helper_started, helper_starting
from supervisor.install.envs import ensure_env, with_env
from supervisor.install.integrity import current_lock
from supervisor.install.pins import extensions_root
from supervisor.install.uv import set_child_hooks

__all__ = ["prepare"]


# uv runs as our child: the orphan handling must neither reap nor kill it.
set_child_hooks(helper_starting, helper_started, helper_ended)


def prepare(ext: Extension, progress: Callable[[str], None]) -> Extension:
    """``ext`` as its worker runs, on its built environment (raises ``EnvError``)."""
    # the lock as the pin check just before read it: parsed again only when it changed
    env = ensure_env(
        ext, extensions_root(ext), state_dir(), auto_lock=True, progress=progress, read=current_lock
    )
    return with_env(ext, env)
