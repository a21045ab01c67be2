"""Where the control socket lives, found the same way by ``serve`` and by every CLI verb.

Order (DESIGN.md §7): ``$SPCTL_SOCKET``; ``$RUNTIME_DIRECTORY/control.sock`` (systemd);
``$XDG_RUNTIME_DIR/spctl/control.sock``; ``/tmp/spctl-$UID/control.sock``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "SYSTEMD_SOCKET",
    "UnsafeDirectory",
    "client_socket_path",
    "ensure_private_dir",
    "socket_path",
    "state_dir",
]

SYSTEMD_SOCKET = Path("/run/spctl/control.sock")  # RuntimeDirectory=spctl in systemd/spctl.service


class UnsafeDirectory(Exception):
    """The socket's directory exists but another user could tamper with it."""


def socket_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("SPCTL_SOCKET"):
        return Path(env["SPCTL_SOCKET"])
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may list several directories separated by ':'; the first is ours.
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "spctl" / "control.sock"
    return Path(f"/tmp/spctl-{os.getuid()}") / "control.sock"


def client_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where a CLI verb looks: like ``socket_path``, but an operator's shell has no
    ``$RUNTIME_DIRECTORY``, so when nothing is at the usual place and the systemd unit's socket
    exists, that one is meant."""
    path = socket_path(environ)
    env = os.environ if environ is None else environ
    if not env.get("SPCTL_SOCKET") and not path.exists() and SYSTEMD_SOCKET.exists():
        return SYSTEMD_SOCKET
    return path


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Persistent state: ``$STATE_DIRECTORY`` under systemd, else the socket's directory."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return socket_path(env).parent


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check that an existing one is ours and private.

    Raises UnsafeDirectory when it is owned by someone else or writable by group/others
    (a pre-created ``/tmp/spctl-0`` must not let another user swap our socket).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafeDirectory(f"{path} is owned by uid {st.st_uid}, not by us ({os.getuid()})")
    if st.st_mode & 0o022:
        mode = st.st_mode & 0o777
        raise UnsafeDirectory(f"{path} is writable by group or others (mode {mode:o})")
