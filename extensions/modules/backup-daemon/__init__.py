"""Backup daemon: the seed's BackupDaemon, in Python, as a real example extension.

Every ``interval`` it copies ``source`` (a directory) into a new timestamped snapshot under
``destination``, skipping files and directories that match any ``exclude`` glob, and keeps the
newest ``keep`` snapshots. Relative ``source`` paths are relative to this package; the
default ``destination`` is ``backups/`` in the extension's state directory
(``$EXTENSION_STATE_DIR``, set by spctl), so it works offline and under a read-only
``extensions/`` (systemd ``ProtectSystem=strict``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

metadata = {
    "name": "backup-daemon",
    "version": "1.0.0",
    "description": "Periodic directory snapshots with exclude globs",
    "capabilities": ["daemon"],
}

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(value: Any) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms`` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    text = str(value).strip()
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            seconds = float(text[: -len(unit)]) * _UNITS[unit]
            if seconds > 0:
                return seconds
    raise ValueError(f"backup-daemon: interval must be like 30s, 5m or 1h, got {value!r}")


def _excluded(rel: str, name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns)


def snapshot(source: Path, destination: Path, exclude: list[str], keep: int) -> Path:
    """Copy ``source`` into a new ``destination/<UTC time>`` directory; prune old ones."""
    destination.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix=f".{stamp}-", dir=destination))
    copied = 0
    for root, dirs, files in os.walk(source):
        rel_root = os.path.relpath(root, source)
        dirs[:] = [
            d
            for d in sorted(dirs)
            if not _excluded(os.path.normpath(os.path.join(rel_root, d)), d, exclude)
        ]
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_root, name))
            if _excluded(rel, name, exclude):
                continue
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(root, name), target, follow_symlinks=False)
            copied += 1
    final = destination / stamp
    suffix = 1
    while final.exists():
        suffix += 1
        final = destination / f"{stamp}-{suffix}"
    work.rename(final)  # a snapshot appears whole or not at all
    snapshots = sorted(
        p for p in destination.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    for old in snapshots[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    print(f"backup: {copied} files from {source} -> {final}", flush=True)
    return final


class BackupDaemon:
    """The seed's DaemonModule: initialize, start, stop, is_running, shutdown."""

    name = "backup-daemon"
    version = "1.0.0"
    type = "daemon"

    def __init__(self, config: dict[str, Any]) -> None:
        here = Path(__file__).resolve().parent
        state = Path(os.environ.get("EXTENSION_STATE_DIR", here / ".state"))
        self.source = (here / str(config.get("source", "."))).resolve()
        self.destination = (state / str(config.get("destination", "backups"))).resolve()
        self.exclude = [str(p) for p in config.get("exclude", [])]
        self.interval = parse_interval(config.get("interval", "1h"))
        self.keep = int(config.get("keep", 5))
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self.last_error: str | None = None

    async def initialize(self) -> None:
        if not self.source.is_dir():
            raise FileNotFoundError(f"backup-daemon: source {self.source} is not a directory")

    async def start(self) -> None:
        self._running = True
        await self._run_backup()  # run once at once, as the seed does
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.interval)
            await self._run_backup()

    async def _run_backup(self) -> None:
        try:
            await asyncio.to_thread(
                snapshot, self.source, self.destination, self.exclude, self.keep
            )
            self.last_error = None
        except OSError as exc:  # a failed backup is reported, not fatal (seed behaviour)
            self.last_error = str(exc)
            print(f"backup failed: {exc}", flush=True)

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def is_running(self) -> bool:
        return self._running and (self._task is None or not self._task.done())

    async def shutdown(self) -> None:
        await self.stop()
