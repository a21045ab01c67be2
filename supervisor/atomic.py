"""Files written whole or not at all, and one writer at a time.

``write_atomic``: a temp file beside the target (``mkstemp``: mode 0600 from the start, so a
secret is never readable by others even for a moment), written, fsynced, given its final mode,
renamed over the target; on any failure the temp file is removed and the target is as it was.
``dir_lock``: an exclusive ``flock`` on the directory, for read-modify-write of a file that
each write replaces (a lock on the file itself would be on the old inode).

Used by everything spctl writes that a crash must not leave half-written: the lock file, the
clients file, signatures, the page token, the overrides and the catalog cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["dir_lock", "write_atomic"]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (mode ``mode``); raises OSError, changing nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (which must exist) until the block ends."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
