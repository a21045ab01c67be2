"""JSON-RPC 2.0 over MCP's Streamable HTTP transport, the client's end — no SDK, no pydantic.

Theory of operation. An :class:`HttpPeer` is a :class:`worker.mcp.jsonrpc.LinePeer` whose
messages travel as HTTP requests to one URL (on an ``httpx2`` client of the owner's, which
carries the entry's headers and credentials) instead of lines. Every message is one POST
(``Accept: application/json, text/event-stream``); the answer to a request comes back as an
``application/json`` body or as a ``text/event-stream`` whose events carry the server's
messages for that request (progress, log lines, its own requests such as ``ping``) and then the
response; the peer stops reading the stream once the response is in. While a message is
handled, :attr:`HttpPeer.origin` names the call whose stream carried it (None: the GET
stream), so the owner's ``on_request`` knows exactly which call a server's request belongs
to; the owner's answer (:meth:`LinePeer.respond`) is a POST of its own. A notification or a
response of ours is answered ``202 Accepted``. The ``Mcp-Session-Id`` the server gives in its
answer to ``initialize`` goes with every later request, as does ``MCP-Protocol-Version`` (the
version the handshake settled on, :attr:`HttpPeer.protocol_version`). Once
``notifications/initialized`` is accepted and a session exists, a GET stream receives what the
server sends outside any request (``list_changed``); it is opened again after it ends (with
``Last-Event-ID``, after the server's ``retry`` or 1 s), and given up after
:data:`ATTEMPTS` failures in a row or a ``405``. Closing sends ``DELETE`` for the session.

Failures. An HTTP error status for a request fails that call: with the JSON-RPC error in the
body if there is one, else ``Session terminated`` (404 with a session), ``Not Found`` (404
without) or the status; the call's exception is an :class:`HttpStatus` that also keeps the
status line, for messages. A stream that ends before the response fails the call with
``CONNECTION_LOST``, unless its events had ids: then it is resumed (GET with
``Last-Event-ID``, :data:`ATTEMPTS` tries). A request that cannot be sent at all (connection
refused, reset before the answer) calls ``on_lost``: the owner decides what the session's end
means. A cancelled call cancels its POST (the owner's peer has told the server).

TLS is the owner's client's: see :mod:`worker.tls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

import httpx2

from worker.log import say
from worker.mcp.jsonrpc import MAX_LINE, LinePeer, Progress
from worker.protocol import CONNECTION_LOST, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND
from worker.rpc import RpcError

__all__ = ["ATTEMPTS", "HttpPeer", "HttpStatus", "Lost", "status_text"]

ATTEMPTS = 2
"""Reconnections of the GET stream (or of a resumable response stream) before giving up."""
RETRY = 1.0
"""Seconds before reconnecting when the server did not say (SSE ``retry``)."""
CLOSE_TIMEOUT = 5.0
"""How long the session's DELETE may take on close."""
SESSION = "mcp-session-id"
VERSION = "mcp-protocol-version"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def status_text(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


class HttpStatus(RpcError):
    """A request answered with an HTTP error status (``status``: ``"404 Not Found"``);
    ``from_body``: the code and message are the server's JSON-RPC error."""

    def __init__(self, status: str, code: int, message: str, data: Any = None, *, from_body: bool):
        super().__init__(code, message, data)
        self.status = status
        self.from_body = from_body


class Lost(RpcError):
    """The request could not be sent or its answer not read; ``cause``: the transport's error."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(CONNECTION_LOST, message)
        self.cause = cause


class HttpPeer(LinePeer):
    """The client end of one Streamable HTTP session; see the module docstring."""

    def __init__(
        self,
        url: str,
        where: str,
        client: Callable[[], httpx2.AsyncClient],
        on_notification: Callable[[str, Any], None],
        on_lost: Callable[[BaseException], None],
        label: str = "server",
        max_message: int = MAX_LINE,
    ) -> None:
        super().__init__(self._unframed, on_notification, label, max_message)
        self.url = url
        self.where = where
        self._client_factory = client
        self._client: httpx2.AsyncClient | None = None
        self._on_lost = on_lost
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.status: str | None = None
        """The last HTTP status line of the server (``"401 Unauthorized"``), for messages."""
        self._posts: dict[int, asyncio.Task[None]] = {}
        self._others: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Task[None] | None = None
        self._closed = False
        # per stream (a call's id, None: the GET stream): the last event id, the server's retry
        self._last_event: dict[int | None, str] = {}
        self._retry: dict[int | None, float] = {}
        self.origin: int | None = None
        """While a message of the server is handled: the id of the call whose POST's answer
        carried it (None: the GET stream). The owner's ``on_request`` reads it to know which
        call a server's request belongs to (SEP-2260: a server asks on that call's stream)."""

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _unframed(self, data: bytes) -> None:  # pragma: no cover - send() is overridden
        raise AssertionError("an HttpPeer sends messages, not lines")

    def _headers(self) -> dict[str, str]:
        headers = dict(ACCEPT)
        if self.session_id is not None:
            headers[SESSION] = self.session_id
        if self.protocol_version is not None:
            headers[VERSION] = self.protocol_version
        return headers

    # -- sending --------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """POST one message (in a task of its own); dropped once the session has ended."""
        if self.ended is not None or self._closed:
            return
        rid = message.get("id") if "method" in message else None
        task = self._loop.create_task(self._post(message, rid if type(rid) is int else None))
        if type(rid) is int:
            self._posts[rid] = task
            task.add_done_callback(functools.partial(self._forget, rid))
        else:
            self._others.add(task)
            task.add_done_callback(self._others.discard)

    def _forget(self, rid: int, _: object = None) -> None:
        self._posts.pop(rid, None)
        self._last_event.pop(rid, None)
        self._retry.pop(rid, None)

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
        *,
        cancellable: bool = True,
        tag: Any = None,
    ) -> Any:
        rid = self._next_id + 1  # the id LinePeer.request is about to take
        try:
            return await super().request(
                method, params, on_progress, cancellable=cancellable, tag=tag
            )
        except asyncio.CancelledError:
            post = self._posts.get(rid)
            if post is not None:
                post.cancel()  # the server was told; its answer is not wanted
            raise

    async def _post(self, message: dict[str, Any], rid: int | None) -> None:
        body = _dumps(message).encode()
        method = message.get("method")
        try:
            async with self.client.stream(
                "POST", self.url, content=body, headers=self._headers()
            ) as response:
                await self._answer(response, method, rid)
        except httpx2.TransportError as e:
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if rid is not None:
                self.fail(rid, Lost(f"{describe(e, self.where)}", e))
            elif not self._closed:
                say(f"{method or 'a response'} to {self.where} not sent: {detail}")
            if not self._closed:
                self._on_lost(e)
        except Exception as e:  # a bug here must not leave the caller waiting
            if rid is not None:
                self.fail(rid, RpcError(INTERNAL_ERROR, f"{type(e).__name__}: {e}"))
            say(f"POST to {self.where} failed: {type(e).__name__}: {e}")

    async def _answer(self, response: httpx2.Response, method: Any, rid: int | None) -> None:
        self.status = status_text(response)
        code = response.status_code
        if method == "initialize" and code < 300:
            self.session_id = response.headers.get(SESSION) or None
        if code >= 300:
            error = await self._status_error(response)
            if rid is not None:
                self.fail(rid, error)
            else:
                say(f"{method or 'a response'} to {self.where}: {self.status}: {error.message}")
            return
        if rid is None:
            if method == "notifications/initialized" and self.session_id is not None:
                self._listening = self._loop.create_task(self._listen())
            return
        if code == 202:
            self.fail(rid, RpcError(INVALID_REQUEST, f"{self.where} answered a request with 202"))
            return
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        try:
            if kind == "text/event-stream":
                if not await self._events(response, rid):
                    why = f"the event stream from {self.where} ended before the answer"
                    self._resume_or_fail(rid, why)
                return
            if kind != "application/json":
                self.fail(rid, RpcError(INVALID_REQUEST, f"unexpected content type {kind!r}"))
                return
            self._received(await self._body(response), rid)
        except (httpx2.TransportError, httpx2.StreamError) as e:
            self._resume_or_fail(rid, describe(e, self.where))
            return
        if self.fail(rid, RpcError(INTERNAL_ERROR, f"{self.where} sent no answer to {method}")):
            say(f"the answer of {self.where} to {method} did not answer it")

    async def _body(self, response: httpx2.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_line:
                raise httpx2.StreamError(f"an answer of more than {self.max_line} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _status_error(self, response: httpx2.Response) -> HttpStatus:
        status = status_text(response)
        if response.headers.get("content-type", "").lower().startswith("application/json"):
            with contextlib.suppress(httpx2.HTTPError, ValueError, RecursionError):
                body = json.loads(await self._body(response))
                error = body.get("error") if isinstance(body, dict) else None
                if isinstance(error, dict) and type(error.get("code")) is int:
                    text = error.get("message")
                    text = text if isinstance(text, str) else str(text)
                    data = error.get("data")
                    return HttpStatus(status, error["code"], text, data, from_body=True)
        if response.status_code == 404:
            if self.session_id is not None:
                return HttpStatus(status, INVALID_REQUEST, "Session terminated", from_body=False)
            return HttpStatus(status, METHOD_NOT_FOUND, "Not Found", from_body=False)
        if 300 <= response.status_code < 400:
            where = response.headers.get("location", "?")
            text = f"redirect to {where} not followed: use that URL if it is the server"
            return HttpStatus(status, INVALID_REQUEST, text, from_body=False)
        return HttpStatus(status, INTERNAL_ERROR, f"the server answered {status}", from_body=False)

    # -- event streams --------------------------------------------------------------------

    async def _events(self, response: httpx2.Response, rid: int | None) -> bool:
        """Read an event stream; True once the call ``rid`` is answered (reading stops)."""
        source = httpx2.EventSource(response, max_event_size=self.max_line)
        async for event in source:
            if event.id:
                self._last_event[rid] = event.id
            if event.retry is not None:
                self._retry[rid] = event.retry / 1000
            if event.event == "message" and event.data:
                self._received(event.data.encode(), rid)
                if rid is not None and rid not in self._pending:
                    return True
        return False

    def _received(self, data: bytes, stream: int | None) -> None:
        """Handle a message that came on call ``stream``'s answer (None: the GET stream)."""
        self.origin = stream
        try:
            self.receive(data)
        finally:
            self.origin = None

    def _resume_or_fail(self, rid: int, why: str) -> None:
        last = self._last_event.get(rid)
        if rid in self._pending and last and not self._closed:
            retry = self._retry.get(rid, RETRY)
            task = self._loop.create_task(self._resume(rid, why, last, retry))
            self._others.add(task)
            task.add_done_callback(self._others.discard)
        else:
            self.fail(rid, Lost(why))

    async def _resume(self, rid: int, why: str, last: str, retry: float) -> None:
        """GET the rest of call ``rid``'s stream from after event ``last``."""
        try:
            for _ in range(ATTEMPTS):
                await asyncio.sleep(retry)
                if rid not in self._pending:
                    return
                headers = {**self._headers(), "accept": "text/event-stream"}
                headers["last-event-id"] = self._last_event.get(rid, last)
                with contextlib.suppress(httpx2.TransportError, httpx2.StreamError):
                    async with self.client.stream("GET", self.url, headers=headers) as response:
                        if response.status_code == 200 and await self._events(response, rid):
                            return
                retry = self._retry.get(rid, retry)
            self.fail(rid, Lost(f"{why} (not resumed)"))
        finally:
            self._last_event.pop(rid, None)
            self._retry.pop(rid, None)

    async def _listen(self) -> None:
        """The GET stream: what the server sends outside any request."""
        failures = 0
        while failures < ATTEMPTS and not self._closed and self.ended is None:
            headers = {**self._headers(), "accept": "text/event-stream"}
            if self._last_event.get(None):
                headers["last-event-id"] = self._last_event[None]
            try:
                async with self.client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code == 405:
                        return  # the server offers no such stream
                    if response.status_code != 200:
                        failures += 1
                    else:
                        failures = 0
                        await self._events(response, None)
            except (httpx2.TransportError, httpx2.StreamError):
                failures += 1
            await asyncio.sleep(self._retry.get(None, RETRY))

    # -- the end --------------------------------------------------------------------------

    async def close(self) -> None:
        """End the session: stop every stream and POST, DELETE the session, close the client."""
        self._closed = True
        tasks = [*self._posts.values(), *self._others]
        if self._listening is not None:
            tasks.append(self._listening)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is None:
            return
        if self.session_id is not None:
            with contextlib.suppress(httpx2.HTTPError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await client.delete(self.url, headers=self._headers())
        await client.aclose()


def describe(error: BaseException, where: str) -> str:
    """A transport error in words that name the URL (never a secret)."""
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout):
        return f"cannot connect to {where}: {detail}"
    if isinstance(error, httpx2.TimeoutException):
        return f"no answer from {where} in time ({type(error).__name__})"
    return f"the connection to {where} closed: {detail}"
