"""JSON-RPC 2.0 over lines, the client's end: ids, pending calls, framing. No I/O of its own.

Theory of operation. A :class:`LinePeer` is given a ``write(bytes)`` callable (the transport's,
non-blocking) and fed what the server sends (:meth:`LinePeer.feed`, any chunking). Every
complete line is one JSON-RPC message: a response settles the future of its pending call (an
unknown id is ignored); ``notifications/progress`` goes to the progress callback of the call
whose request id is the token (the request id doubles as the progress token, as in the SDK);
other notifications go to the owner's ``on_notification``; the server's own requests get
``ping`` → ``{}``; any other goes to the owner's ``on_request`` (which answers it with
:meth:`LinePeer.respond`), or gets -32601 when there is none. A line
longer than :data:`MAX_LINE`, a line that is not JSON and JSON that is not a message are
logged and skipped: nothing the server sends ends the session but its end (:meth:`fail_all`,
called by the owner). A call cancelled while pending sends ``notifications/cancelled`` and
forgets its id, so a late answer is dropped.

Only the standard library's :mod:`json` is used, and results stay plain JSON data: the worker
forwards, it never needs models (the SDK costs ~1.5 s of import and ~40 MB per process).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from worker.log import say
from worker.protocol import INTERNAL_ERROR, METHOD_NOT_FOUND
from worker.rpc import RpcError

__all__ = ["MAX_LINE", "LinePeer", "OnRequest", "Progress"]

MAX_LINE = 64 * 1024 * 1024
"""Longest JSON-RPC line accepted from the server (a big resource read is one line)."""
Progress = Callable[[float, float | None, str | None], None]
"""A call's progress callback: ``(progress, total, message)``."""
OnRequest = Callable[[Any, str, Any], None]
"""The owner's handler of a server's request: ``(id, method, params)``; it must answer."""
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads
_NUMBER = (int, float)


class LinePeer:
    """The client end of one line-delimited JSON-RPC 2.0 connection; see the module docstring."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        on_notification: Callable[[str, Any], None],
        label: str = "server",
        max_line: int = MAX_LINE,
        on_request: OnRequest | None = None,
    ) -> None:
        self._write = write
        self.on_request = on_request
        self.max_line = max_line
        self._on_notification = on_notification
        self.label = label
        self._loop = asyncio.get_running_loop()
        self._next_id = 0
        # id → (future of the response, progress callback or None)
        self._pending: dict[int, tuple[asyncio.Future[Any], Progress | None]] = {}
        self._tags: dict[int, Any] = {}  # id → what the owner tied to the call (request(tag=))
        self._partial = bytearray()
        self._skipping = False  # inside an overlong line: drop up to its newline
        self.ended: RpcError | None = None
        """Why the connection ended (:meth:`fail_all`); None while it is up."""

    # -- sending --------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Write one message; dropped once the connection has ended."""
        if self.ended is None:
            self._write(_dumps(message).encode() + b"\n")

    def respond(self, rid: Any, result: Any = None, error: RpcError | None = None) -> None:
        """Answer the server's request ``rid`` with ``result``, or ``error``."""
        if error is None:
            self.send({"jsonrpc": "2.0", "id": rid, "result": result})
            return
        wire: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.data is not None:
            wire["data"] = error.data
        self.send({"jsonrpc": "2.0", "id": rid, "error": wire})

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
        *,
        cancellable: bool = True,
        tag: Any = None,
    ) -> Any:
        """Send a request and wait for its result. Raises RpcError: the server's error, or why
        the connection ended. If cancelled, tells the server (``notifications/cancelled``).
        ``tag``: the owner's own object for this call while it is pending (:meth:`tag`)."""
        if self.ended is not None:
            raise self._error()
        self._next_id = rid = self._next_id + 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if on_progress is not None:
            params = dict(params) if params else {}
            params["_meta"] = {**(params.get("_meta") or {}), "progressToken": rid}
        if params:
            message["params"] = params
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = (future, on_progress)
        if tag is not None:
            self._tags[rid] = tag
        try:
            self.send(message)
            return await future
        except asyncio.CancelledError:
            # initialize must not be cancelled (MCP); a settled call is no longer the server's.
            if cancellable and rid in self._pending:
                self.notify(
                    "notifications/cancelled", {"requestId": rid, "reason": "caller cancelled"}
                )
            raise
        finally:
            self._pending.pop(rid, None)
            if tag is not None:
                del self._tags[rid]

    def fail_all(self, error: RpcError) -> None:
        """The connection has ended: fail every pending call, and every later one, with
        ``error``. The first call wins."""
        if self.ended is not None:
            return
        self.ended = error
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(self._error())

    def _error(self) -> RpcError:
        # A fresh exception for each caller: one raised in many tasks would pile up tracebacks.
        assert self.ended is not None
        return RpcError(self.ended.code, self.ended.message, self.ended.data)

    def tag(self, rid: int) -> Any:
        """The ``tag`` the pending call ``rid`` was sent with; None if none (or not pending)."""
        return self._tags.get(rid)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def fail(self, rid: int, error: Exception) -> bool:
        """Fail the pending call ``rid`` with ``error`` (its transport could not deliver the
        answer); False if it is not pending."""
        entry = self._pending.pop(rid, None)
        if entry is None or entry[0].done():
            return False
        entry[0].set_exception(error)
        return True

    # -- receiving ------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Take one whole message (or batch) the server sent, framed by its transport (an HTTP
        body, an SSE event): newlines inside it are JSON whitespace, not frames."""
        if len(data) > self.max_line:
            say(f"a message of more than {self.max_line} bytes from the {self.label}: skipped")
        else:
            self._line(data)

    def feed(self, data: bytes) -> None:
        """Take the next bytes the server wrote; handles every complete line in them."""
        start = 0
        if self._skipping or self._partial:
            newline = data.find(b"\n")
            if newline < 0:
                if not self._skipping:
                    self._partial += data
                    if len(self._partial) > self.max_line:
                        self._overlong()
                return
            start = newline + 1
            if self._skipping:
                self._skipping = False
            else:
                self._partial += data[:newline]
                line = bytes(self._partial)
                self._partial.clear()
                if len(line) > self.max_line:
                    self._overlong(skip=False)
                else:
                    self._line(line)
        while (newline := data.find(b"\n", start)) >= 0:
            if newline - start > self.max_line:
                self._overlong(skip=False)
            else:
                self._line(data[start:newline])
            start = newline + 1
        if start < len(data):
            self._partial += data[start:]
            if len(self._partial) > self.max_line:
                self._overlong()

    def _overlong(self, *, skip: bool = True) -> None:
        say(f"a line of more than {self.max_line} bytes from the {self.label}: skipped")
        self._partial.clear()
        self._skipping = skip

    def _line(self, line: bytes) -> None:
        try:
            message = _loads(line)
        except (ValueError, RecursionError):
            if line.strip():
                say(f"not a JSON-RPC message from the {self.label}: {line[:200]!r}")
            return
        try:
            if isinstance(message, dict):
                self._message(message, line)
            elif isinstance(message, list) and message:  # a batch (2025-03-26 allowed them)
                for item in message:
                    if isinstance(item, dict):
                        self._message(item, line)
                    else:
                        say(f"not a JSON-RPC message from the {self.label}: {item!r:.200}")
            else:
                say(f"not a JSON-RPC message from the {self.label}: {line[:200]!r}")
        except Exception as e:  # never let the server's data end the session
            say(f"cannot handle a message from the {self.label}: {type(e).__name__}: {e}")

    def _message(self, message: dict[str, Any], line: bytes) -> None:
        method = message.get("method")
        if method is None:
            self._response(message, line)
        elif not isinstance(method, str):
            say(f"not a JSON-RPC message from the {self.label}: {line[:200]!r}")
        elif "id" in message:
            self._server_request(message["id"], method, message.get("params"))
        elif method == "notifications/progress":
            self._progress(message.get("params"))
        else:
            self._on_notification(method, message.get("params"))

    def _response(self, message: dict[str, Any], line: bytes) -> None:
        rid = message.get("id")
        if type(rid) is str and rid.isascii() and rid.isdigit():  # echoed as a string
            rid = int(rid)
        if type(rid) is not int or ("result" not in message and "error" not in message):
            if rid is None and isinstance(message.get("error"), dict):
                say(f"the {self.label} reports an error: {message['error']!r:.300}")
            else:
                say(f"not a JSON-RPC message from the {self.label}: {line[:200]!r}")
            return
        entry = self._pending.pop(rid, None)
        if entry is None or entry[0].done():
            return  # not ours, or no longer wanted (cancelled)
        future = entry[0]
        if "error" not in message:
            future.set_result(message["result"])
            return
        error = message["error"]
        if isinstance(error, dict) and type(error.get("code")) is int:
            text = error.get("message")
            future.set_exception(
                RpcError(
                    error["code"], text if isinstance(text, str) else str(text), error.get("data")
                )
            )
        else:
            future.set_exception(
                RpcError(INTERNAL_ERROR, f"malformed error from the {self.label}: {error!r:.200}")
            )

    def _server_request(self, rid: Any, method: str, params: Any) -> None:
        if method == "ping":
            self.send({"jsonrpc": "2.0", "id": rid, "result": {}})
        elif self.on_request is not None:
            self.on_request(rid, method, params)
        else:
            error = {"code": METHOD_NOT_FOUND, "message": "Method not found"}
            self.send({"jsonrpc": "2.0", "id": rid, "error": error})

    def _progress(self, params: Any) -> None:
        if not isinstance(params, dict):
            return
        token = params.get("progressToken")
        if type(token) is str and token.isascii() and token.isdigit():
            token = int(token)
        entry = self._pending.get(token) if type(token) is int else None
        if entry is None or entry[1] is None or entry[0].done():
            return  # not a call of ours that asked for progress, or already answered
        progress, total, text = params.get("progress"), params.get("total"), params.get("message")
        if (
            isinstance(progress, _NUMBER)
            and not isinstance(progress, bool)
            and (total is None or (isinstance(total, _NUMBER) and not isinstance(total, bool)))
        ):
            entry[1](progress, total, text if isinstance(text, str) else None)
