"""The control socket: a Unix stream socket speaking msgpack-rpc to ``spctl`` verbs.

Security: the socket file is 0600 in a 0700 directory we own, and every accepted
connection's peer credentials (SO_PEERCRED) must be our own uid or root; anything else is
logged and closed before a single byte is read. A peer of the right uid that ``refuse(pid)``
turns away (an extension's process: :mod:`supervisor.rules.peers`) is logged, and its first
request is answered with a REFUSED error saying why before the connection is closed. What a
connection may make us buffer is bounded (:mod:`supervisor.control.intake`): unfinished frames
per connection, in total and in time; unread answers by ``MAX_UNSENT``. A lock file held for
the supervisor's lifetime makes a second ``spctl serve`` refuse to start instead of stealing
the socket; a socket file left by a crashed supervisor (lock free) is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from supervisor.control.intake import Intake, IntakeLimits
from supervisor.control.paths import ensure_private_dir
from worker.channel import Channel
from worker.protocol import REFUSED
from worker.rpc import Connection, RemoteProtocolError, Request, RpcError

__all__ = ["MAX_UNSENT", "MCP_FACE_METHODS", "AlreadyRunning", "ControlServer", "peer_credentials"]

log = structlog.get_logger("spctl.control")

_UCRED = struct.Struct("3i")
# A client that leaves more than this of our answers unread is cut off: two full frames, so a
# slow reader of one large answer is fine, and one that pipelines requests and reads nothing
# cannot make the supervisor buffer without bound.
MAX_UNSENT = 32 * 1024 * 1024
# Calling one of these makes a connection an MCP face, whose requests carry tool arguments:
# it may send whole frames (IntakeLimits.mcp_face) instead of small requests only.
MCP_FACE_METHODS = frozenset({"mcp_watch"})
# A refused peer is told why in answer to its first request, read within these bounds; beyond
# _MAX_REFUSING at once, refused connections are closed without a word.
_REFUSAL_FRAME = 64 * 1024
_REFUSAL_TIMEOUT = 5.0
_MAX_REFUSING = 16
# How a connection ends without anything wrong: not worth a warning.
_ORDINARY_ENDS = ("peer closed the connection", "supervisor shutting down", "connection lost")


class AlreadyRunning(Exception):
    """Another supervisor holds the control socket's lock."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class ControlServer:
    """Binds the control socket and serves ``handlers`` on every authorised connection."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Callable[..., Any]],
        stream_handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        limits: IntakeLimits | None = None,
        refuse: Callable[[int], str | None] | None = None,
    ) -> None:
        """``stream_handlers`` get the connection's Channel first (to push notifications);
        ``limits``: what unfinished frames may hold (default: ``IntakeLimits.from_env()``);
        ``refuse(peer_pid)``: why that peer may not connect, or None."""
        self.path = path
        self.handlers = dict(handlers)
        self.stream_handlers = dict(stream_handlers or {})
        if limits is None:
            try:
                limits = IntakeLimits.from_env()
            except ValueError as exc:
                log.warning("invalid setting ignored", error=str(exc), default=IntakeLimits())
                limits = IntakeLimits()
        self.intake = Intake(limits)
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._channels: dict[Channel, tuple[int, int]] = {}  # open ones: (pid, uid) of the peer
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self._refuse = refuse
        self._refusing: set[asyncio.Task[None]] = set()

    def bind(self) -> None:
        """Take the lock and bind; raises AlreadyRunning or OSError (nothing half-done)."""
        ensure_private_dir(self.path.parent)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another spctl serve (pid {other}) is already running on {self.path}"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # stale: its owner no longer holds the lock
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._listener = listener

    async def serve(self) -> None:
        """Accept until cancelled."""
        assert self._listener is not None, "bind() first"
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            try:
                pid, uid, _gid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid not in (0, os.getuid()):
                self.refused += 1
                log.warning("control connection refused", peer_pid=pid, peer_uid=uid)
                conn.close()
                continue
            reason = self._judge(pid)
            if reason is not None:
                self.refused += 1
                log.warning("control connection refused", peer_pid=pid, peer_uid=uid, reason=reason)
                self._tell_refused(conn, f"refused: {reason}")
                continue
            channel = Channel(
                self.handlers,
                name=f"control:{pid}",
                max_unsent=MAX_UNSENT,
                on_read=self.intake.on_read,
            )
            self.intake.admit(channel)
            for method, handler in self.stream_handlers.items():
                bound = functools.partial(handler, channel)
                if method in MCP_FACE_METHODS:
                    bound = functools.partial(self._as_face, channel, bound)
                channel.handlers[method] = bound
            await channel.connect(conn)
            self._channels[channel] = (pid, uid)
            task = loop.create_task(self._forget(channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def peer(self, channel: Channel) -> tuple[int, int] | None:
        """(pid, uid) of the process at the other end of ``channel``, as accepted."""
        return self._channels.get(channel)

    def _judge(self, pid: int) -> str | None:
        if self._refuse is None:
            return None
        try:
            return self._refuse(pid)
        except Exception as exc:  # a bug in the rule must not end the accept loop: refuse
            log.exception("cannot judge a control peer", peer_pid=pid)
            return f"cannot judge pid {pid}: {type(exc).__name__}"

    def _tell_refused(self, conn: socket.socket, message: str) -> None:
        if len(self._refusing) >= _MAX_REFUSING:
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(_answer_refused(conn, message))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)

    def _as_face(self, channel: Channel, handler: Callable[..., Any], *params: Any) -> Any:
        self.intake.widen(channel)
        return handler(*params)

    async def _forget(self, channel: Channel) -> None:
        reason = await channel.wait_closed()
        self._channels.pop(channel, None)
        self.intake.release(channel)
        channel.handlers.clear()  # its stream handlers hold it: no cycle left for the collector
        if not reason.startswith(_ORDINARY_ENDS):
            log.warning("control connection cut off", client=channel.name, reason=reason)

    def close(self) -> None:
        for channel in list(self._channels):
            channel.close("supervisor shutting down")
        for task in list(self._refusing):
            task.cancel()
        self.intake.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


async def _answer_refused(conn: socket.socket, message: str) -> None:
    """Answer the peer's first request with REFUSED ``message``, then close (bounded in size
    and time: a refused peer is not served, only told)."""
    loop = asyncio.get_running_loop()
    codec = Connection(max_frame=_REFUSAL_FRAME)
    conn.setblocking(False)
    try:
        async with asyncio.timeout(_REFUSAL_TIMEOUT):
            while data := await loop.sock_recv(conn, 4096):
                for event in codec.receive_data(data):
                    if type(event) is Request:
                        answer = codec.send_response(event.msgid, error=RpcError(REFUSED, message))
                        await loop.sock_sendall(conn, answer)
                        return
    except (TimeoutError, OSError, RemoteProtocolError):
        pass
    finally:
        conn.close()
