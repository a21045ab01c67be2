"""Fuzzing the control socket's msgpack-rpc framing (hypothesis, each run bounded).

The codec with the control socket's settings: valid streams decode the same however they are
cut, with or without large frames (whose buffer is renewed); any stream, garbage included,
either decodes or raises RemoteProtocolError, never buffering past the connection's cap. Then
a live supervisor: whatever a client sends, it is answered with well-formed messages or cut off,
and the supervisor keeps answering everyone else.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.control.intake import IntakeLimits
from tests.helpers import Serve, make_extensions, module_entry
from worker.rpc import Connection, Event, Notification, RemoteProtocolError, Request

MiB = 1 << 20
CAP = IntakeLimits().per_connection

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
_methods = st.sampled_from(
    ["ping", "status", "tools", "services", "mcp_catalogs", "nope"]
) | st.text(max_size=8)
_requests = st.builds(
    lambda msgid, method, params: [0, msgid, method, params],
    st.integers(0, 2**32 - 1),
    _methods,
    st.lists(_values, max_size=3),
)
_notifications = st.builds(
    lambda method, params: [2, method, params], _methods, st.lists(_values, max_size=3)
)
_messages = st.lists(_requests | _notifications, max_size=6, unique_by=lambda m: (m[0], m[1]))


def _expected(messages: list[list[Any]]) -> list[Event]:
    return [Request(m[1], m[2], m[3]) if m[0] == 0 else Notification(m[1], m[2]) for m in messages]


def _feed(conn: Connection, data: bytes, cuts: list[int], cap: int) -> list[Event]:
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += conn.receive_data(data[start:cut])
        assert conn.partial_bytes < cap  # never buffering a frame past the connection's cap
        start = cut
    return events


class TestCodec:
    @given(_messages, st.data())
    @settings(max_examples=200, deadline=None)
    def test_valid_streams_decode_the_same_however_cut(
        self, messages: list[list[Any]], data: st.DataObject
    ) -> None:
        stream = b"".join(msgpack.packb(m) for m in messages)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        conn = Connection()
        conn.max_incoming = CAP
        assert _feed(conn, stream, cuts, CAP) == _expected(messages)
        assert conn.partial_bytes == 0

    @given(st.lists(st.sampled_from([0, 100, 70_000, 2 * MiB]), min_size=1, max_size=4), st.data())
    @settings(max_examples=25, deadline=None)
    def test_large_frames_of_an_mcp_face_decode_across_buffer_renewals(
        self, sizes: list[int], data: st.DataObject
    ) -> None:
        messages = [[2, "mcp", [b"\x01" * n]] for n in sizes]
        stream = b"".join(msgpack.packb(m) for m in messages)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
        conn = Connection()
        conn.max_incoming = IntakeLimits().mcp_face
        assert _feed(conn, stream, cuts, conn.max_incoming) == _expected(messages)

    @given(_messages, st.binary(min_size=1, max_size=64), st.data())
    @settings(max_examples=300, deadline=None)
    def test_garbage_anywhere_decodes_or_is_refused(
        self, messages: list[list[Any]], junk: bytes, data: st.DataObject
    ) -> None:
        stream = b"".join(msgpack.packb(m) for m in messages)
        at = data.draw(st.integers(0, len(stream)))
        stream = stream[:at] + junk + stream[at:]
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
        conn = Connection()
        conn.max_incoming = CAP
        try:
            _feed(conn, stream, cuts, CAP)
        except RemoteProtocolError:
            with pytest.raises(RemoteProtocolError):  # and it stays dead
                conn.receive_data(b"\x90")

    @given(
        st.sampled_from([b"\xc6", b"\xdb", b"\xc9", b"\xdd", b"\xdf"]), st.integers(CAP, 2**32 - 1)
    )
    @settings(max_examples=100, deadline=None)
    def test_a_length_header_over_the_cap_is_refused_within_it(self, kind: bytes, n: int) -> None:
        conn = Connection()
        conn.max_incoming = CAP
        header = b"\x94\x00\x01\xa1m\x91" + kind + n.to_bytes(4, "big")
        with pytest.raises(RemoteProtocolError):  # noqa: PT012
            conn.receive_data(header + b"\x01")  # ext's type byte, or an element
            fed = 0
            while fed <= CAP:
                conn.receive_data(bytes(64 * 1024))
                fed += 64 * 1024


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("fuzz")
    mods = [module_entry("quiet", "ok_daemon")]
    s = Serve(root, make_extensions(root, mods), root / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("quiet", "running")
        yield s
    finally:
        s.kill()


def _exchange(path: Path, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, and read until the supervisor closes (or cuts us off)."""
    got = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return got
                got += chunk
        except (BrokenPipeError, ConnectionResetError):
            return got
    raise AssertionError(f"no end of the answers within {timeout}s")


class TestLiveSocket:
    @given(_messages, st.binary(max_size=64), st.booleans(), st.data())
    @settings(
        max_examples=40,
        deadline=None,  # a round trip to a real process on a shared machine; bounded by examples
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def test_any_stream_is_answered_well_formed_or_cut_off(
        self,
        serve: Serve,
        messages: list[list[Any]],
        junk: bytes,
        with_junk: bool,
        data: st.DataObject,
    ) -> None:
        stream = b"".join(msgpack.packb(m) for m in messages)
        if with_junk:
            at = data.draw(st.integers(0, len(stream)))
            stream = stream[:at] + junk + stream[at:]
        answers = msgpack.Unpacker(raw=False, strict_map_key=False)
        answers.feed(_exchange(serve.socket, stream))
        asked = {m[1] for m in messages if m[0] == 0}
        for message in answers:  # what came back is well-formed msgpack-rpc
            assert type(message) is list and message[0] in (1, 2), message
            if message[0] == 1:  # (junk may decode as a request of its own)
                assert len(message) == 4 and (with_junk or message[1] in asked), message
        assert serve.call("ping", timeout=10) == "pong"  # everyone else is still served
        assert serve.proc is not None and serve.proc.poll() is None
