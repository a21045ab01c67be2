"""The clients file on disk: read it (refusing one others may read), write it atomically.

Its contents and rules are :mod:`supervisor.rules.clients`; here only where it lives, its mode
(0600, owned by us: a group- or world-readable file is refused, not warned about, since token
hashes of short tokens could be guessed offline), the temp-file + rename write, and a lock on
the file's directory so two ``spctl token`` verbs at once cannot lose each other's change.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from supervisor.atomic import dir_lock, write_atomic
from supervisor.control.paths import SYSTEMD_SOCKET, client_socket_path, state_dir
from supervisor.rules.clients import Clients, ClientsError, parse, render

__all__ = ["FILE_NAME", "SYSTEMD_STATE", "Stamp", "default_path", "load", "locked", "save", "stamp"]

FILE_NAME = "clients.toml"
SYSTEMD_STATE = Path("/var/lib/spctl")  # StateDirectory=spctl in systemd/spctl.service
Stamp = tuple[int, int, int, int, int]  # (device, inode, size, mtime_ns, mode): any save, chmod


def default_path(environ: Mapping[str, str] | None = None, *, operator: bool = False) -> Path:
    """``<state dir>/clients.toml`` (see :func:`supervisor.control.paths.state_dir`).

    ``operator``: for a verb run from a shell, which has no ``$STATE_DIRECTORY``: when it would
    talk to the systemd unit's socket, the unit's state directory is meant."""
    env = os.environ if environ is None else environ
    if operator and not env.get("STATE_DIRECTORY") and client_socket_path(env) == SYSTEMD_SOCKET:
        return SYSTEMD_STATE / FILE_NAME
    return state_dir(env) / FILE_NAME


def stamp(path: Path) -> Stamp | None:
    """What changes when the file is replaced or edited; None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def load(path: Path) -> Clients:
    """The clients of ``path``. Raises ClientsError (unreadable, not private, invalid) and
    FileNotFoundError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ClientsError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ClientsError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise ClientsError(
                f"{path}: mode {st.st_mode & 0o777:o} lets others read the token hashes; "
                f"it must be 0600 (chmod 600 {path})"
            )
        if st.st_uid != os.getuid():
            raise ClientsError(f"{path}: owned by uid {st.st_uid}, not by us ({os.getuid()})")
        raw = f.read()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ClientsError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path))


def save(path: Path, clients: Clients) -> None:
    """Write ``clients`` to ``path``: mode 0600, a temp file renamed over it (never half)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, render(clients.clients).encode())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``path`` (on its directory, created
    0700 if missing: the file itself is replaced by each write)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with dir_lock(path.parent):
        yield
