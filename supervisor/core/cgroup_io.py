"""The few file operations every cgroup module uses.

Files are written with a single ``os.write`` so the kernel's errno surfaces at once; reads of
a file that is gone or unreadable give ``""`` (a cgroup file vanishes with its group).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

__all__ = ["keyed", "plus", "read", "rmdir", "tree", "write"]


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def write(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control) → dict."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def rmdir(path: Path, deadline: float) -> bool:
    """rmdir, retrying while the cgroup still has members (they are dying); False on timeout."""
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.002)  # tasks leave a cgroup a moment after they are killed


def plus(controllers: frozenset[str] | set[str]) -> str:
    return " ".join(f"+{c}" for c in sorted(controllers))


def tree(path: Path) -> list[Path]:
    """``path`` and every cgroup beneath it, deepest first (the order to remove them)."""
    below = [Path(top) / d for top, dirs, _ in os.walk(path, topdown=False) for d in dirs]
    return [*below, path]
