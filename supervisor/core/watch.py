"""``spctl serve --watch``: reload when ``servers.yaml`` or ``modules.yaml`` change.

Theory of operation: watchfiles (inotify, through its Rust core) watches the extensions
directory itself, not the two files: editors save by writing a temporary file and renaming it
over the old one, which a watch on the file would lose. Events for anything but the two
registry files directly in that directory are filtered out; a burst of events (a save, a
``git checkout``) is debounced into one reload, ``DEBOUNCE_MS`` after the last event. The
reload is the same as SIGHUP's: all or nothing, an invalid file changes nothing and is logged
with every error, and the next save is watched again. watchfiles is imported only here, so a
supervisor without ``--watch`` never loads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog

__all__ = ["CONFIG_FILES", "DEBOUNCE_MS", "watch_config"]

log = structlog.get_logger("spctl.watch")

CONFIG_FILES = ("servers.yaml", "modules.yaml")
DEBOUNCE_MS = 300
"""Quiet time after the last change before reloading (watchfiles' own default is 1.6 s)."""


async def watch_config(directory: Path, reload: Callable[[], Awaitable[None]]) -> None:
    """Call ``reload()`` after each (debounced) change of a registry file; until cancelled."""
    from watchfiles import Change, awatch

    where = Path(await anyio.Path(directory).resolve())
    wanted = {where / name for name in CONFIG_FILES}

    def registry_file(change: Change, path: str) -> bool:
        return Path(path) in wanted

    log.info("watching the registry", directory=str(where), files=list(CONFIG_FILES))
    async for changes in awatch(
        where, watch_filter=registry_file, debounce=DEBOUNCE_MS, recursive=False
    ):
        files = sorted({Path(path).name for _, path in changes})
        log.info("registry changed; reloading", files=files)
        await reload()
