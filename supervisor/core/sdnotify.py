"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1`` when run by systemd.

    Without ``NOTIFY_SOCKET`` every call is a no-op, so the supervisor behaves the same
    under ``make run``.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        self._sock: socket.socket | None = None
        if addr and (addr[0] in "/@"):
            self._addr = "\0" + addr[1:] if addr[0] == "@" else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        wd_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not wd_pid or wd_pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        if self._sock is None or self._addr is None:
            return
        # systemd going away must never take the supervisor down
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(lines).encode(), self._addr)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
