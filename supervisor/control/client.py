"""The CLI's side of the control socket: blocking msgpack-rpc, no event loop.

A CLI verb makes one or two calls and exits, so a plain blocking socket over the sans-IO
codec is both the simplest and the fastest choice (no asyncio import, no loop start-up).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.rpc import Connection, Notification, Response, RpcError

__all__ = ["ControlClient", "NotRunning", "RpcError"]


class NotRunning(Exception):
    """No supervisor answers on the control socket."""


class ControlClient:
    """One connection to ``spctl serve``.

    Raises NotRunning when nothing listens on ``path``; RpcError for a refused request
    (the supervisor's ``{code, message, data}``); TimeoutError when no answer comes in time.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn = Connection()
        self._pending: list[Notification] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            self._sock.close()
            reason = f"no answer on {path}: {exc.strerror}"
            raise NotRunning(f"no supervisor is running ({reason})") from exc
        except PermissionError as exc:
            self._sock.close()
            raise NotRunning(f"cannot reach the supervisor on {path}: permission denied") from exc

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def notifications(self) -> Iterator[Notification]:
        """Notifications the supervisor pushes on this connection (``logs -f``), until it
        closes the connection. Blocks; the caller stops it with KeyboardInterrupt."""
        self._sock.settimeout(None)
        yield from self._pending
        self._pending.clear()
        while True:
            chunk = self._sock.recv(65536)
            if not chunk:
                return
            for event in self._conn.receive_data(chunk):
                if isinstance(event, Notification):
                    yield event

    def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        msgid, data = self._conn.send_request(method, list(params))
        self._sock.sendall(data)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method!r} within {self.timeout:g}s")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise NotRunning("the supervisor closed the connection")
            for event in self._conn.receive_data(chunk):
                if isinstance(event, Notification):
                    self._pending.append(event)  # arrived with the answer; notifications() has it
                elif isinstance(event, Response) and event.msgid == msgid:
                    if event.error is not None:
                        raise RpcError.from_wire(event.error)
                    return event.result
