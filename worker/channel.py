"""The one asyncio adapter over :mod:`worker.rpc`: a msgpack-rpc session on a stream socket.

Theory of operation
-------------------
Layers, each wrapping the one below: socket bytes → ``_Protocol`` (an ``asyncio.Protocol``, no
streams: one callback per read, no reader task) → :class:`worker.rpc.Connection` (framing, ids,
validation) → :class:`Channel` (pending-call table, dispatch, one batching writer).

* One batching writer: the first frame of a loop iteration is written at once; later ones are
  joined and written by a ``call_soon`` callback (or as soon as 16 are queued), and answers
  produced while handling one read go out together at its end. So 64 pipelined calls cost a
  handful of ``send`` calls, not 64, while a lone call waits for nothing. The transport buffers
  when the peer is slow; ``request``/``notify`` never block, ``drain`` waits for it to empty.
* Incoming requests: the handler is called with ``*params``. A plain function is answered at once
  (it would block the loop inside a task just the same); if it returns an awaitable, that runs in
  its own task so a slow handler never delays ``ping``. A handler raising :class:`RpcError` sends
  that error; any other exception sends ``APPLICATION_ERROR`` with ``"Type: message"`` and the
  traceback tail in ``data``; a call whose arguments don't bind sends ``INVALID_PARAMS``.
* ``$cancel`` ``[msgid]`` (a notification) cancels the task serving that request; the handler sees
  ``CancelledError`` and the peer is sent a ``CANCELLED`` error, which the canceller's
  ``Connection`` drops because it forgot the id. Answering keeps both id tables clean.
* A request of ours that times out or whose task is cancelled is forgotten and ``$cancel``\\ed.
* EOF, a reset, or anything the codec refuses closes the channel with a reason; every pending
  request fails at once with :class:`ChannelClosed`, and handler tasks are cancelled. A protocol
  error aborts the transport (the peer is not trusted with another byte); a local ``close`` first
  hands queued frames to the transport, which flushes them before closing the socket.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from types import CoroutineType
from typing import Any, cast

from worker.protocol import (
    APPLICATION_ERROR,
    CANCEL,
    CANCELLED,
    CONNECTION_LOST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
)
from worker.rpc import (
    MAX_FRAME_DEFAULT,
    Connection,
    RemoteProtocolError,
    Request,
    Response,
    RpcError,
)

__all__ = ["CANCEL_METHOD", "Channel", "ChannelClosed", "Handler"]

Handler = Callable[..., Any]
CANCEL_METHOD = CANCEL
_TRACEBACK_LINES = 20
_BATCH_FRAMES = 16  # a batch this long is sent without waiting for the end of the iteration
_BATCH_BYTES = 64 * 1024  # so is one holding a frame this big
_log = logging.getLogger(__name__)


class ChannelClosed(RpcError):
    """The channel is closed; ``message`` says why (``"peer closed the connection"``, …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(CONNECTION_LOST, reason)


class _Protocol(asyncio.Protocol):
    __slots__ = ("_ch",)

    def __init__(self, channel: Channel) -> None:
        self._ch = channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (asyncio's or uvloop's: uvloop's is not an asyncio.Transport)
        self._ch._on_connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._ch._on_data(data)

    def eof_received(self) -> None:
        self._ch._close("peer closed the connection", abort=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ch._on_lost(exc)

    def resume_writing(self) -> None:
        self._ch._wake_drainers()


class Channel:
    """A msgpack-rpc session over one stream socket; both ends may call and be called."""

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        name: str = "",
        max_frame: int = MAX_FRAME_DEFAULT,
        on_notification: Callable[[str, list[Any]], None] | None = None,
        max_unsent: int | None = None,  # a peer leaving more than this unread is cut off
        max_incoming: int | None = None,  # a cap on the peer's frames below max_frame
        on_read: Callable[[Channel], None] | None = None,  # after each read is handled
    ) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.name = name
        self._max_unsent = max_unsent
        self._on_notification = on_notification
        self._on_read = on_read
        self._conn = Connection(max_frame=max_frame)
        if max_incoming is not None:
            self._conn.max_incoming = max_incoming
        self._protocol = _Protocol(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}  # our requests awaiting answers
        self._serving: dict[int, asyncio.Task[None]] = {}  # the peer's requests, async handlers
        self._background: set[asyncio.Task[None]] = set()  # async notification handlers
        # messages in, messages out, bytes in, bytes out: the cheap traffic summary that
        # DEBUG=extensions:<name> logs
        self.stats = [0, 0, 0, 0]
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._in_read = False
        self._drainers: list[asyncio.Future[None]] = []
        self._saved_limits: tuple[int, int] | None = None  # (low, high) while draining
        self._close_reason: str | None = None
        self._closed_event = asyncio.Event()

    def __repr__(self) -> str:
        state = f"closed: {self._close_reason}" if self._close_reason else "open"
        return f"<Channel {self.name!r} {state}, {len(self._pending)} pending>"

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def partial_bytes(self) -> int:
        """Bytes received of a frame not complete yet (what the codec buffers for the peer)."""
        return self._conn.partial_bytes

    @property
    def max_incoming(self) -> int:
        return self._conn.max_incoming

    @max_incoming.setter
    def max_incoming(self, value: int) -> None:
        """Raise or lower the cap on the peer's frames (ValueError above ``max_frame``)."""
        self._conn.max_incoming = value

    # -- public API -----------------------------------------------------------------------

    async def connect(self, sock: socket.socket) -> None:
        """Start reading and writing ``sock`` (a connected stream socket) on the running loop.

        Raises ChannelClosed if the channel was closed, RuntimeError if already connected.
        """
        if self._close_reason is not None:
            raise ChannelClosed(self._close_reason)
        if self._loop is not None:
            raise RuntimeError(f"channel {self.name!r} is already connected")
        self._loop = loop = asyncio.get_running_loop()
        sock.setblocking(False)
        await loop.create_connection(lambda: self._protocol, sock=sock)

    async def request(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the peer and return its result.

        Raises RpcError (the peer's error), ChannelClosed (the channel is or becomes closed),
        TimeoutError; on timeout or cancellation the peer is sent ``$cancel``. Params that
        cannot be packed raise TypeError/ValueError, an oversized frame LocalProtocolError.
        """
        if self._close_reason is not None:
            raise ChannelClosed(self._close_reason)
        msgid, data = self._conn.send_request(method, params)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msgid] = fut
        self._write(data)
        try:
            if timeout is None:
                return await fut
            async with asyncio.timeout(timeout):
                return await fut
        except BaseException:  # CancelledError or TimeoutError: the answer will not be awaited
            if self._pending.pop(msgid, None) is not None:
                self._conn.forget(msgid)
                if self._close_reason is None:
                    self._write(self._conn.send_notification(CANCEL_METHOD, (msgid,)))
            raise

    def notify(self, method: str, *params: Any) -> None:
        """Send a notification. Raises ChannelClosed if the channel is closed."""
        if self._close_reason is not None:
            raise ChannelClosed(self._close_reason)
        self._write(self._conn.send_notification(method, params))

    def close(self, reason: str = "closed locally") -> None:
        """Close (idempotent): pending requests fail with ChannelClosed(reason), handlers are
        cancelled, queued frames are handed to the transport, which closes once it has sent them."""
        self._close(reason, abort=False)

    def abort(self, reason: str) -> None:
        """Close at once (idempotent), dropping whatever is queued: for a peer not trusted with
        another byte. Pending requests fail with ChannelClosed(reason)."""
        self._close(reason, abort=True)

    async def wait_closed(self) -> str:
        """Wait until the channel is closed; return the reason."""
        await self._closed_event.wait()
        assert self._close_reason is not None
        return self._close_reason

    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet written (0 when closed)."""
        transport = self._transport
        queued = sum(len(b) for b in self._out)
        if transport is None or transport.is_closing():
            return queued
        return transport.get_write_buffer_size() + queued

    async def drain(self) -> None:
        """Wait until every queued frame has been written to the socket, or the channel closes."""
        self._send_out()
        transport = self._transport
        while (
            transport is not None
            and self._close_reason is None
            and transport.get_write_buffer_size() > 0
        ):
            # asyncio has no "buffer empty" callback; with a zero high-water mark the transport
            # pauses us now and resumes us exactly when the buffer is empty.
            waiter = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            if self._saved_limits is None:
                self._saved_limits = transport.get_write_buffer_limits()
                transport.set_write_buffer_limits(high=0, low=0)
            await waiter

    # -- writer ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._queue(data)
        if self._max_unsent is not None and self.write_buffer_size() > self._max_unsent:
            self._close(f"peer left over {self._max_unsent} bytes unread", abort=True)

    def _queue(self, data: bytes) -> None:
        stats = self.stats
        stats[1] += 1
        stats[3] += len(data)
        if self._flush_handle is not None or self._in_read or self._loop is None:
            out = self._out
            out.append(data)  # a batch is open; it goes out with the others
            if (len(out) >= _BATCH_FRAMES or len(data) >= _BATCH_BYTES) and not self._in_read:
                self._send_out()  # measured: a peer on another core starts on these sooner
            return
        # The first frame of a loop iteration goes out at once (the peer can start on it while
        # we produce more); the call_soon marks the iteration, and frames written during the
        # rest of it are joined and sent together when it fires.
        self._flush_handle = self._loop.call_soon(self._flush)
        transport = self._transport
        if transport is not None and not self._out and not transport.is_closing():
            transport.write(data)
        else:
            self._out.append(data)

    def _flush(self) -> None:
        self._flush_handle = None
        self._send_out()

    def _send_out(self) -> None:
        out = self._out
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _wake_drainers(self) -> None:
        transport, limits = self._transport, self._saved_limits
        if limits is not None and transport is not None and not transport.is_closing():
            self._saved_limits = None
            transport.set_write_buffer_limits(high=limits[1], low=limits[0])
        drainers, self._drainers = self._drainers, []
        for waiter in drainers:
            if not waiter.done():
                waiter.set_result(None)

    # -- protocol callbacks ---------------------------------------------------------------

    def _on_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        if self._close_reason is not None:
            transport.abort()
        elif self._out and self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)  # frames queued before connect

    def _on_lost(self, exc: Exception | None) -> None:
        reason = "peer closed the connection" if exc is None else f"connection lost: {exc!r}"
        self._close(reason, abort=False)
        self._wake_drainers()

    def _on_data(self, data: bytes) -> None:
        stats = self.stats
        stats[2] += len(data)
        try:
            events = self._conn.receive_data(data)
        except RemoteProtocolError as e:
            self._close(f"protocol error: {e}", abort=True)
            return
        # Frames written while handling one read (answers from plain handlers) are one batch,
        # sent at the end of this callback rather than an iteration later.
        stats[0] += len(events)
        self._in_read = True
        try:
            for event in events:
                if self._close_reason is not None:
                    return
                if type(event) is Response:
                    self._on_response(event)
                elif type(event) is Request:
                    self._on_request(event)
                else:
                    self._on_notify(event.method, event.params)
        finally:
            self._in_read = False
        self._send_out()
        if self._on_read is not None and self._close_reason is None:
            self._on_read(self)

    def _on_response(self, event: Response) -> None:
        fut = self._pending.pop(event.msgid, None)
        if fut is None or fut.done():  # its caller was cancelled in this same iteration
            return
        if event.error is None:
            fut.set_result(event.result)
        else:
            fut.set_exception(RpcError.from_wire(event.error))

    def _on_request(self, event: Request) -> None:
        msgid = event.msgid
        handler = self.handlers.get(event.method)
        if handler is None:
            self._respond_error(msgid, RpcError(METHOD_NOT_FOUND, f"no method {event.method!r}"))
            return
        try:
            result = handler(*event.params)
        except Exception as e:
            self._respond_error(msgid, _as_rpc_error(e))
            return
        if _is_awaitable(result):
            assert self._loop is not None
            self._serving[msgid] = self._loop.create_task(self._serve(msgid, result))
        else:
            self._respond(msgid, result)

    async def _serve(self, msgid: int, awaitable: Awaitable[Any]) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if self._close_reason is None:
                self._respond_error(msgid, RpcError(CANCELLED, "cancelled by the caller"))
            raise
        except Exception as e:
            self._respond_error(msgid, _as_rpc_error(e))
        else:
            self._respond(msgid, result)
        finally:
            self._serving.pop(msgid, None)

    def _respond(self, msgid: int, result: Any) -> None:
        if self._close_reason is not None:
            return
        try:
            data = self._conn.send_response(msgid, result=result)
        except Exception as e:  # unpackable or oversized result
            err = RpcError(INTERNAL_ERROR, f"result not sendable: {type(e).__name__}: {e}")
            data = self._conn.send_response(msgid, error=err)
        self._write(data)

    def _respond_error(self, msgid: int, error: RpcError) -> None:
        if self._close_reason is not None:
            return
        try:
            data = self._conn.send_response(msgid, error=error)
        except Exception:  # error.data not packable: keep code and message
            data = self._conn.send_response(msgid, error=RpcError(error.code, error.message))
        self._write(data)

    def _on_notify(self, method: str, params: list[Any]) -> None:
        if method == CANCEL_METHOD:
            ok = len(params) == 1 and type(params[0]) is int
            task = self._serving.get(params[0]) if ok else None
            if task is not None:
                task.cancel()
            return
        try:
            if self._on_notification is not None:
                self._on_notification(method, params)
                return
            handler = self.handlers.get(method)
            if handler is None:
                _log.debug("channel %r: no handler for notification %r", self.name, method)
                return
            result = handler(*params)
        except Exception:
            _log.debug("channel %r: notification %r failed", self.name, method, exc_info=True)
            return
        if _is_awaitable(result):
            assert self._loop is not None
            task = self._loop.create_task(self._notified(method, result))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _notified(self, method: str, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            _log.debug("channel %r: notification %r failed", self.name, method, exc_info=True)

    # -- closing --------------------------------------------------------------------------

    def _close(self, reason: str, *, abort: bool) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed(reason))
        for task in (*self._serving.values(), *self._background):
            task.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        transport = self._transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                self._send_out()
                transport.close()
        self._out.clear()
        self._conn.close()  # frees an unfinished frame's buffer at once
        self._closed_event.set()
        self._wake_drainers()


def _is_awaitable(obj: object) -> bool:
    return type(obj) is CoroutineType or (obj is not None and inspect.isawaitable(obj))


def _as_rpc_error(e: Exception) -> RpcError:
    if isinstance(e, RpcError):
        return e
    tb = e.__traceback__
    if isinstance(e, TypeError) and tb is not None and tb.tb_next is None:
        # Raised by the call itself, before the handler's body ran: the arguments didn't bind.
        return RpcError(INVALID_PARAMS, str(e))
    lines = "".join(traceback.format_exception(e)).splitlines()
    tail = "\n".join(lines[-_TRACEBACK_LINES:])
    return RpcError(APPLICATION_ERROR, f"{type(e).__name__}: {e}", {"traceback": tail})
