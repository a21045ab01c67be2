"""Sans-IO msgpack-rpc: bytes in, events out; calls in, bytes out. No sockets, no event loop.

Theory of operation
-------------------
A :class:`Connection` is one end of a msgpack-rpc stream (spec: request ``[0, msgid, method,
params]``, response ``[1, msgid, error, result]``, notification ``[2, method, params]``). Both ends
may send requests, so it keeps two id tables: ``outstanding`` (requests we sent and await) and the
requests we received and have not answered yet.

``receive_data`` feeds a streaming ``msgpack.Unpacker`` and turns every complete message into a
frozen :class:`Request`, :class:`Response` or :class:`Notification`, validated strictly. Anything
wrong with what the peer sent raises :class:`RemoteProtocolError` and kills the connection: the
stream has no resynchronisation point, so nothing after a bad byte can be trusted.

The frame cap is enforced by counting, before memory is committed: ``Unpacker.tell()`` marks
where each message starts, input is fed in slices no larger than the room left under the cap,
and a message that has used up the cap without ending is refused. That stops a frame streaming
past the cap in small pieces (msgpack decodes them as they arrive, so no buffer limit would) and
a declared 100 MB blob after at most ``max_frame`` bytes. msgpack checks ``max_bin_len`` only once
a body is complete, so a peer that declares too much and then stalls would wedge the stream
below the cap: ``_watch_partial`` reads the header of the element decoding is stuck on (near a
frame's start, cheaply) and refuses it at once. Array and map headers are limited to
``max_frame // 8`` entries (a list spends 8 bytes a slot); msgpack preallocates at most ~10k slots
per container, so a lying header costs little.

``max_incoming`` (settable, at most ``max_frame``) caps incoming frames only: the control socket
accepts small requests from most clients while its answers may use the whole frame. The
unpacker never shrinks its buffer, so one large frame would pin up to ``max_frame`` bytes for the
connection's lifetime: once a frame larger than :data:`_RENEW_ABOVE` is decoded and nothing
follows it, a fresh unpacker replaces the old one and the memory is freed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from worker.protocol import INTERNAL_ERROR  # every wire code lives in worker.protocol

__all__ = [
    "MAX_FRAME_DEFAULT",
    "Connection",
    "Event",
    "LocalProtocolError",
    "Notification",
    "RemoteProtocolError",
    "Request",
    "Response",
    "RpcError",
]

MAX_FRAME_DEFAULT: Final = 16 * 1024 * 1024

_MSGID_LIMIT: Final = 2**32
_LONGEST_HEADER: Final = 9  # bytes: a float64, or ext32's type, length and tag
_PROBE_SPAN: Final = 512  # how far into a frame _watch_partial looks for a header
_PROBES_PER_FRAME: Final = 2
_READ_SIZE: Final = 64 * 1024  # the unpacker's initial buffer
_RENEW_ABOVE: Final = 1024 * 1024  # an unpacker that buffered more is replaced once empty
_REQUEST: Final = 0
_RESPONSE: Final = 1
_NOTIFICATION: Final = 2


class RpcError(Exception):
    """An error carried on the wire as ``{code, message, data}``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.data!r})"

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}

    @classmethod
    def from_wire(cls, obj: Any) -> RpcError:
        """Rebuild an error from the peer's ``error`` field; never raises.

        A dict with an int ``code`` and str ``message`` keeps them; anything else (a bare string,
        a list as some msgpack-rpc peers send) becomes ``INTERNAL_ERROR`` with ``str(obj)``.
        """
        if isinstance(obj, dict):
            code, message = obj.get("code"), obj.get("message")
            if type(code) is int and isinstance(message, str):
                return cls(code, message, obj.get("data"))
        return cls(INTERNAL_ERROR, str(obj))


class LocalProtocolError(Exception):
    """We misused the API (answering an id we never received, an oversized outgoing frame)."""


class RemoteProtocolError(Exception):
    """The peer misbehaved: malformed or oversized frame, a response to an id never sent."""


@final
@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    params: list[Any]


@final
@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: Any
    result: Any


@final
@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: list[Any]


Event = Request | Response | Notification


def _is_msgid(x: object) -> bool:
    # type() rather than isinstance(): msgpack's true/false decode to bool, a subclass of int.
    return type(x) is int and 0 <= x < _MSGID_LIMIT


class Connection:
    """One end of a msgpack-rpc stream; see the module docstring."""

    def __init__(self, *, max_frame: int = MAX_FRAME_DEFAULT) -> None:
        if max_frame < 16:
            raise ValueError(f"max_frame must be at least 16 bytes, got {max_frame}")
        self._max_frame = max_frame
        self._limits: dict[str, Any] = {
            "raw": False,
            "use_list": True,
            "strict_map_key": False,
            "max_str_len": max_frame,
            "max_bin_len": max_frame,
            "max_ext_len": max_frame,
            "max_array_len": max(max_frame // 8, 16),
            "max_map_len": max(max_frame // 8, 16),
        }
        self._max_incoming = max_frame
        self._unpacker = self._new_unpacker()
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._fed = 0  # bytes handed to the unpacker so far
        self._frame_start = 0  # stream offset where the message being decoded began
        self._buffered = 0  # the most the unpacker has held at once (its buffer grew to that)
        self._error: str | None = None
        self._head = b""  # the first bytes of a frame still arriving, for _watch_partial
        self._probes = 0
        self._probed_at = -1
        self._next_id = 0
        self._outstanding: set[int] = set()
        self._forgotten: set[int] = set()
        self._unanswered: set[int] = set()

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def max_incoming(self) -> int:
        """The cap on frames from the peer (``max_frame`` unless lowered)."""
        return self._max_incoming

    @max_incoming.setter
    def max_incoming(self, value: int) -> None:
        """Raises ValueError outside 16 … ``max_frame``; a partial frame already over a new,
        lower cap is refused with the peer's next byte."""
        if not 16 <= value <= self._max_frame:
            raise ValueError(f"max_incoming must be 16 … {self._max_frame}, got {value}")
        self._max_incoming = value

    @property
    def partial_bytes(self) -> int:
        """Bytes of a frame that has begun to arrive and is not complete yet."""
        return self._fed - self._frame_start

    def close(self) -> None:
        """Free the buffers (an unfinished frame's, the packer's) now, not when the garbage
        collector gets to this object: its owner may sit in a reference cycle, and an idle
        process collects rarely. Afterwards receiving raises RemoteProtocolError and sending
        LocalProtocolError."""
        if self._error is None:
            self._error = "connection closed"
        self._unpacker = None
        self._packer = None
        self._fed = self._frame_start = self._buffered = 0
        self._head = b""

    def _new_unpacker(self) -> Any:
        # read_size is the unpacker's *initial* buffer (msgpack's default is 1 MiB per
        # connection); it grows on demand up to max_frame. A small start keeps the supervisor's
        # RSS flat with many workers and avoids heap fragmentation across restarts.
        return msgpack.Unpacker(
            max_buffer_size=self._max_frame,
            read_size=min(self._max_frame, _READ_SIZE),
            **self._limits,
        )

    @property
    def outstanding(self) -> frozenset[int]:
        """Ids of requests we sent and still await (forgotten ones excluded)."""
        return frozenset(self._outstanding)

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Decode every complete message in the stream so far.

        Raises RemoteProtocolError if the peer sent something invalid; the connection is then
        dead and every later call raises it again. Events decoded earlier in the same call are
        discarded with it: nothing from a peer that has broken the protocol is acted on.
        """
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        events: list[Event] = []
        try:
            self._receive(data, events)
        except RemoteProtocolError as e:
            self._error = str(e)
            raise
        except msgpack.BufferFull:  # unreachable by construction; kept as a backstop
            self._error = f"frame exceeds {_size(self._max_frame)} cap"
            raise RemoteProtocolError(self._error) from None
        except Exception as e:  # anything msgpack raises on bad input
            self._error = f"undecodable data: {type(e).__name__}: {e}"
            raise RemoteProtocolError(self._error) from None
        return events

    def _receive(self, data: bytes | memoryview, events: list[Event]) -> None:
        unpacker = self._unpacker
        decode = self._decode
        cap = self._max_incoming
        while data:
            room = cap - (self._fed - self._frame_start)
            if room <= 0:
                raise RemoteProtocolError(f"frame exceeds {_size(cap)} cap")
            if len(data) <= room:  # the usual case: all of it fits under the cap
                chunk, data = data, b""
            else:
                data = memoryview(data)  # slice without copying
                chunk, data = data[:room], data[room:]
            chunk_start = self._fed
            unpacker.feed(chunk)
            self._fed += len(chunk)
            self._buffered = max(self._buffered, self._fed - self._frame_start)
            for obj in unpacker:
                self._frame_start = unpacker.tell()
                event = decode(obj)
                if event is not None:
                    events.append(event)
            if self._fed != self._frame_start:
                self._watch_partial(chunk, chunk_start)
        # A partial frame that has already used the whole cap can only grow past it: say so now
        # rather than when (if ever) the peer sends its next byte.
        if self._fed - self._frame_start >= cap:
            raise RemoteProtocolError(f"frame exceeds {_size(cap)} cap")
        if self._buffered > _RENEW_ABOVE and self._fed == self._frame_start:
            # Everything fed is decoded: a fresh unpacker frees the grown buffer (offsets restart).
            self._unpacker = self._new_unpacker()
            self._fed = self._frame_start = self._buffered = 0
            self._head, self._probes, self._probed_at = b"", 0, -1

    def _watch_partial(self, chunk: bytes | memoryview, chunk_start: int) -> None:
        """Refuse an oversized str/bin/ext as soon as its header is in, when that is cheap.

        msgpack checks ``max_bin_len`` only once the whole body has arrived, so a peer that
        declares 100 MB and stalls would hold the stream hostage without breaking the cap. When
        decoding is stuck waiting for a body (more buffered bytes than any header needs) whose
        header lies near the start of the frame, msgpack's pure-Python unpacker re-reads that
        prefix: it checks the lengths at the header. Bounded (a short prefix, twice a frame), so
        a hostile peer cannot turn it into work; further out, the byte count still applies.
        """
        if self._frame_start >= chunk_start:  # the partial frame begins in this chunk
            offset = self._frame_start - chunk_start
            self._head = bytes(chunk[offset : offset + _PROBE_SPAN])
            self._probes = 0
        elif len(self._head) < _PROBE_SPAN:
            self._head += bytes(chunk[: _PROBE_SPAN - len(self._head)])
        stuck = self._unpacker.tell()
        prefix = stuck - self._frame_start
        if (
            self._fed - stuck > _LONGEST_HEADER
            and prefix < len(self._head)  # the header, and ext's type byte after it
            and self._probes < _PROBES_PER_FRAME
            and stuck != self._probed_at
        ):
            self._probes += 1
            self._probed_at = stuck
            from msgpack import fallback  # pure Python, only ever needed here

            probe = fallback.Unpacker(**self._limits)
            probe.feed(self._head)
            try:
                probe.unpack()
            except ValueError as e:
                if "exceeds max_" in str(e):
                    raise RemoteProtocolError(
                        f"frame exceeds {_size(self._max_frame)} cap: {e}"
                    ) from None
            except Exception:  # OutOfData, as expected; the probe is advisory
                pass

    def _decode(self, obj: Any) -> Event | None:
        if type(obj) is not list or not obj:
            raise RemoteProtocolError(f"message is not a non-empty array: {_brief(obj)}")
        kind = obj[0]
        n = len(obj)
        if type(kind) is int:
            if kind == _REQUEST and n == 4:
                _, msgid, method, params = obj
                if not _is_msgid(msgid):
                    raise RemoteProtocolError(f"request msgid is not a uint32: {_brief(msgid)}")
                if type(method) is not str:
                    raise RemoteProtocolError(f"request method is not a str: {_brief(method)}")
                if type(params) is not list:
                    raise RemoteProtocolError(f"request params is not an array: {_brief(params)}")
                if msgid in self._unanswered:
                    raise RemoteProtocolError(f"request msgid {msgid} is already in use")
                self._unanswered.add(msgid)
                return Request(msgid, method, params)
            if kind == _RESPONSE and n == 4:
                _, msgid, error, result = obj
                if not _is_msgid(msgid):
                    raise RemoteProtocolError(f"response msgid is not a uint32: {_brief(msgid)}")
                if msgid in self._outstanding:
                    self._outstanding.remove(msgid)
                    return Response(msgid, error, result)
                if msgid in self._forgotten:
                    self._forgotten.remove(msgid)
                    return None
                raise RemoteProtocolError(f"response to unknown msgid {msgid}")
            if kind == _NOTIFICATION and n == 3:
                _, method, params = obj
                if type(method) is not str:
                    raise RemoteProtocolError(f"notification method is not a str: {_brief(method)}")
                if type(params) is not list:
                    raise RemoteProtocolError(
                        f"notification params is not an array: {_brief(params)}"
                    )
                return Notification(method, params)
            if kind in (_REQUEST, _RESPONSE, _NOTIFICATION):
                want = 3 if kind == _NOTIFICATION else 4
                raise RemoteProtocolError(
                    f"message type {kind} needs {want} elements, got {n}: {_brief(obj)}"
                )
        raise RemoteProtocolError(f"unknown message type {_brief(kind)}")

    # -- sending --------------------------------------------------------------------------

    def send_request(self, method: str, params: Sequence[Any]) -> tuple[int, bytes]:
        """Allocate a msgid (wrapping at 2**32), record it as outstanding, return it and the bytes.

        Raises TypeError/ValueError if params cannot be packed, LocalProtocolError if the frame
        exceeds the cap; no id is consumed in either case.
        """
        msgid = self._next_id
        while msgid in self._outstanding:  # only after 2**32 requests with one still pending
            msgid = (msgid + 1) % _MSGID_LIMIT
        data = self._pack((_REQUEST, msgid, method, _as_list(params)))
        self._next_id = (msgid + 1) % _MSGID_LIMIT
        self._forgotten.discard(msgid)  # reusing the id: a late answer to the old one is moot
        self._outstanding.add(msgid)
        return msgid, data

    def send_response(self, msgid: int, *, result: Any = None, error: Any = None) -> bytes:
        """Answer a request we received and have not answered yet.

        ``error`` may be an RpcError (sent as its wire dict) or any packable value; a non-None
        error means failure and the result is then sent as nil. Raises LocalProtocolError for
        an id we never received or already answered, or an oversized frame; TypeError/ValueError
        if the result cannot be packed. On any exception the id stays unanswered, so the caller
        can send an error instead.
        """
        if msgid not in self._unanswered:
            raise LocalProtocolError(f"no request {msgid} awaiting a response")
        if error is not None:
            if isinstance(error, RpcError):
                error = error.to_wire()
            data = self._pack((_RESPONSE, msgid, error, None))
        else:
            data = self._pack((_RESPONSE, msgid, None, result))
        self._unanswered.remove(msgid)
        return data

    def send_notification(self, method: str, params: Sequence[Any]) -> bytes:
        return self._pack((_NOTIFICATION, method, _as_list(params)))

    def forget(self, msgid: int) -> None:
        """Give up on an outstanding request: a later response to it is dropped silently.

        A no-op for an id that is not outstanding (its response may just have arrived).
        """
        if msgid in self._outstanding:
            self._outstanding.remove(msgid)
            self._forgotten.add(msgid)

    def _pack(self, message: tuple[Any, ...]) -> bytes:
        if self._packer is None:
            raise LocalProtocolError("connection closed")
        data: bytes = self._packer.pack(message)
        if len(data) > self._max_frame:
            raise LocalProtocolError(
                f"outgoing frame of {len(data)} bytes exceeds {_size(self._max_frame)} cap"
            )
        return data


def _as_list(params: Sequence[Any]) -> list[Any] | tuple[Any, ...]:
    if type(params) is list or type(params) is tuple:
        return params
    if isinstance(params, str | bytes | bytearray):
        raise TypeError(f"params must be a sequence of values, not {type(params).__name__}")
    return list(params)


def _brief(obj: object, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"
