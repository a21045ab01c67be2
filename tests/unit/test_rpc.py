"""The sans-IO msgpack-rpc codec: round trips, stream splits, malformed and oversized input."""

from __future__ import annotations

import math
import re
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.protocol import INTERNAL_ERROR
from worker.rpc import (
    MAX_FRAME_DEFAULT,
    Connection,
    Event,
    LocalProtocolError,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    RpcError,
)

MiB = 1024 * 1024


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def feed_in_pieces(conn: Connection, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed data split at the given offsets and collect every event."""
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += conn.receive_data(data[start:cut])
        start = cut
    return events


def asking(*msgids: int) -> Connection:
    """A connection that has sent requests with the given ids (so responses to them are valid)."""
    conn = Connection()
    sent = {conn.send_request("m", [])[0] for _ in range(max(msgids, default=-1) + 1)}
    assert set(msgids) <= sent
    return conn


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=12,
)
params = st.lists(values, max_size=4)
methods = st.text(max_size=12)


class TestRoundTrip:
    """Every message type comes out of the peer's connection as it went in."""

    @pytest.mark.parametrize(
        "args",
        [[], [1, "two", b"three", None, 4.5, True], [{"a": [1, {2: b"x"}]}], ["é" * 100]],
    )
    def test_request(self, args: list[Any]) -> None:
        a, b = Connection(), Connection()
        msgid, data = a.send_request("do.it", args)
        assert a.outstanding == {msgid}
        assert b.receive_data(data) == [Request(msgid, "do.it", args)]

    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({"result": [1, 2]}, (None, [1, 2])),
            ({"result": None}, (None, None)),
            ({"error": "plain"}, ("plain", None)),
            (
                {"error": RpcError(-1, "no", {"k": 1})},
                ({"code": -1, "message": "no", "data": {"k": 1}}, None),
            ),
            (
                {"error": {"code": 5, "message": "m"}, "result": 9},
                ({"code": 5, "message": "m"}, None),
            ),
        ],
    )
    def test_response(self, kwargs: dict[str, Any], expected: tuple[Any, Any]) -> None:
        a, b = Connection(), Connection()
        msgid, data = a.send_request("m", [])
        b.receive_data(data)
        assert a.receive_data(b.send_response(msgid, **kwargs)) == [Response(msgid, *expected)]
        assert a.outstanding == frozenset()

    def test_notification(self) -> None:
        a, b = Connection(), Connection()
        assert b.receive_data(a.send_notification("tick", (1, b"2"))) == [
            Notification("tick", [1, b"2"])
        ]

    def test_ids_count_up_and_wrap_at_2_32(self) -> None:
        conn = Connection()
        assert [conn.send_request("m", [])[0] for _ in range(3)] == [0, 1, 2]
        for msgid in range(3):
            conn.forget(msgid)
        conn._next_id = 2**32 - 1  # reaching the wrap honestly takes 4 billion requests
        assert [conn.send_request("m", [])[0] for _ in range(2)] == [2**32 - 1, 0]

    def test_wrapped_id_skips_one_still_outstanding(self) -> None:
        conn = Connection()
        conn.send_request("m", [])  # id 0 stays outstanding
        conn._next_id = 2**32 - 1
        assert [conn.send_request("m", [])[0] for _ in range(2)] == [2**32 - 1, 1]

    @given(
        st.lists(
            st.tuples(st.sampled_from(["request", "notification"]), methods, params),
            max_size=8,
        )
    )
    @settings(deadline=None)
    def test_property_round_trip(self, messages: list[tuple[str, str, list[Any]]]) -> None:
        a, b = Connection(), Connection()
        for kind, method, args in messages:
            if kind == "request":
                msgid, data = a.send_request(method, args)
                assert b.receive_data(data) == [Request(msgid, method, args)]
            else:
                assert b.receive_data(a.send_notification(method, args)) == [
                    Notification(method, args)
                ]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[Connection, bytes, list[Event]]:
    """A receiver plus the byte stream a peer sent it and the events that stream means."""
    receiver, sender = Connection(), Connection()
    asked = [receiver.send_request("ask", [])[0] for _ in range(draw(st.integers(0, 4)))]
    for msgid in asked:
        sender.receive_data(pack([0, msgid, "ask", []]))
    stream, expected = b"", list[Event]()
    unanswered = list(asked)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["request", "notification", "response"]))
        if kind == "response" and unanswered:
            msgid = unanswered.pop(draw(st.integers(0, len(unanswered) - 1)))
            result = draw(values)
            stream += sender.send_response(msgid, result=result)
            expected.append(Response(msgid, None, result))
        elif kind == "request":
            method, args = draw(methods), draw(params)
            msgid, data = sender.send_request(method, args)
            stream += data
            expected.append(Request(msgid, method, args))
        else:
            method, args = draw(methods), draw(params)
            stream += sender.send_notification(method, args)
            expected.append(Notification(method, args))
    return receiver, stream, expected


def test_empty_feed_is_harmless() -> None:
    assert Connection().receive_data(b"") == []


class TestSplits:
    """However the stream is cut, the same events come out in the same order."""

    @given(conversations())
    @settings(deadline=None)
    def test_whole(self, conv: tuple[Connection, bytes, list[Event]]) -> None:
        receiver, stream, expected = conv
        assert receiver.receive_data(stream) == expected

    @given(conversations())
    @settings(max_examples=30, deadline=None)
    def test_byte_by_byte(self, conv: tuple[Connection, bytes, list[Event]]) -> None:
        receiver, stream, expected = conv
        assert feed_in_pieces(receiver, stream, list(range(len(stream)))) == expected

    @given(conversations(), st.data())
    @settings(deadline=None)
    def test_random_splits(
        self, conv: tuple[Connection, bytes, list[Event]], data: st.DataObject
    ) -> None:
        receiver, stream, expected = conv
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
        assert feed_in_pieces(receiver, stream, cuts) == expected


class TestHostileInput:
    """Anything the peer sends either decodes or raises RemoteProtocolError, within the cap."""

    @given(st.binary(max_size=300), st.data())
    @settings(max_examples=300, deadline=None)
    def test_random_bytes(self, junk: bytes, data: st.DataObject) -> None:
        conn = Connection(max_frame=256)
        cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=5))
        try:
            feed_in_pieces(conn, junk, cuts)
        except RemoteProtocolError:
            with pytest.raises(RemoteProtocolError):  # and it stays dead
                conn.receive_data(b"")

    @pytest.mark.parametrize(
        ("header", "what"),
        [
            (b"\xc6" + (100 * MiB).to_bytes(4, "big"), "bin 32"),
            (b"\xdb" + (100 * MiB).to_bytes(4, "big"), "str 32"),
            (b"\xc9" + (100 * MiB).to_bytes(4, "big") + b"\x01", "ext 32"),
            # A request whose params hold a 100 MB blob: the frame is a valid prefix all along.
            (b"\x94\x00\x01\xa1m\x91\xc6" + (100 * MiB).to_bytes(4, "big"), "bin in params"),
        ],
    )
    def test_huge_length_header_is_cut_off_at_the_cap(self, header: bytes, what: str) -> None:
        cap = 64 * 1024
        conn = Connection(max_frame=cap)
        fed = 0
        tracemalloc.start()
        try:
            with pytest.raises(RemoteProtocolError, match="frame exceeds 64 KiB cap"):  # noqa: PT012
                conn.receive_data(header)
                fed += len(header)
                chunk = bytes(4096)
                while fed < 100 * MiB:
                    conn.receive_data(chunk)
                    fed += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert fed <= cap, what
        assert peak < 4 * cap, what

    @pytest.mark.parametrize(
        "stalled",
        [
            b"\xc6" + (100 * MiB).to_bytes(4, "big") + bytes(4096),
            b"\xdb" + (100 * MiB).to_bytes(4, "big") + bytes(20),
            b"\xc9" + (100 * MiB).to_bytes(4, "big") + b"\x01" + bytes(20),
            b"\x94\x00\x01\xa6method\x92\xa1a\xc6" + (MiB + 1).to_bytes(4, "big") + bytes(20),
        ],
    )
    def test_oversized_header_of_a_stalled_frame_is_refused_at_once(self, stalled: bytes) -> None:
        # A peer that declares too much and then sends nothing more must not wedge the stream.
        with pytest.raises(RemoteProtocolError, match=r"frame exceeds 1 MiB cap: \d+ exceeds max_"):
            Connection(max_frame=MiB).receive_data(stalled)

    def test_header_far_into_a_frame_falls_to_the_byte_count(self) -> None:
        cap = 64 * 1024
        conn = Connection(max_frame=cap)
        prefix = b"\x94\x00\x01\xa1m\x92" + pack(b"x" * 2000)  # the header lies beyond 512 bytes
        assert (
            conn.receive_data(prefix + b"\xc6" + (100 * MiB).to_bytes(4, "big") + bytes(99)) == []
        )
        for _ in range(cap // 4096 - 1):
            conn.receive_data(bytes(4096))
        with pytest.raises(RemoteProtocolError, match=r"^frame exceeds 64 KiB cap$"):
            conn.receive_data(bytes(4096))

    @pytest.mark.parametrize("cut", [9, 20, 60, 200])
    def test_split_inside_a_blob_near_look_alike_bytes(self, cut: int) -> None:
        # 0xc6 (the bin 32 tag) sits inside a uint16 just before a bin 16: a header look-alike.
        frame = pack([0, 1, "m", [0xC600, b"\xc6\xff\xff\xff\xff" * 60]])
        conn = Connection(max_frame=1024)
        assert conn.receive_data(frame[:cut]) == []
        assert conn.receive_data(frame[cut:]) == [
            Request(1, "m", [0xC600, b"\xc6\xff\xff\xff\xff" * 60])
        ]

    def test_frame_streamed_past_the_cap_in_small_pieces(self) -> None:
        # Nested small arrays are decoded as they arrive, so no single buffer grows; the byte
        # count of the frame still has to stop it.
        conn = Connection(max_frame=4096)
        frame = b"\x94\x00\x01\xa1m\x91\xdc\x01\xff" + (b"\xaf" + b"x" * 15) * 511
        with pytest.raises(RemoteProtocolError, match="frame exceeds 4 KiB cap"):
            feed_in_pieces(conn, frame, list(range(0, len(frame), 7)))

    def test_one_huge_recv_of_many_small_frames_is_fine(self) -> None:
        conn = Connection(max_frame=1024)
        one = pack([2, "tick", [b"x" * 100]])
        events = conn.receive_data(one * 1000)  # 100 KB at once, each frame far below the cap
        assert events == [Notification("tick", [b"x" * 100])] * 1000

    @pytest.mark.parametrize("extra", [0, 1])
    def test_frame_exactly_at_the_cap_passes_one_byte_more_fails(self, extra: int) -> None:
        cap = 1000
        head = pack([2, "n", [b""]])
        blob = b"x" * (cap - len(head) - 1 + extra)  # bin 16 header is 2 bytes longer than bin 8
        frame = pack([2, "n", [blob]])
        assert len(frame) == cap + extra
        conn = Connection(max_frame=cap)
        if extra:
            with pytest.raises(RemoteProtocolError, match="exceeds"):
                conn.receive_data(frame)
        else:
            assert conn.receive_data(frame) == [Notification("n", [blob])]

    def test_default_cap_is_16_mib(self) -> None:
        assert Connection().max_frame == MAX_FRAME_DEFAULT == 16 * MiB


MALFORMED = [
    (pack(5), "not a non-empty array"),
    (pack({"a": 1}), "not a non-empty array"),
    (pack([]), "not a non-empty array"),
    (pack([0, 1, "m"]), "type 0 needs 4 elements, got 3"),
    (pack([0, 1, "m", [], 5]), "type 0 needs 4 elements"),
    (pack([1, 0, None]), "type 1 needs 4 elements"),
    (pack([2, "m"]), "type 2 needs 3 elements"),
    (pack([2, "m", [], 1]), "type 2 needs 3 elements"),
    (pack([3, 1, "m", []]), "unknown message type 3"),
    (pack([-1, 1, "m", []]), "unknown message type -1"),
    (pack([True, 1, "m", []]), "unknown message type True"),
    (pack(["0", 1, "m", []]), "unknown message type '0'"),
    (pack([0, "1", "m", []]), "request msgid is not a uint32: '1'"),
    (pack([0, -1, "m", []]), "request msgid is not a uint32: -1"),
    (pack([0, 2**32, "m", []]), "request msgid is not a uint32"),
    (pack([0, True, "m", []]), "request msgid is not a uint32: True"),
    (pack([0, 1.0, "m", []]), "request msgid is not a uint32: 1.0"),
    (pack([0, 1, b"m", []]), "request method is not a str: b'm'"),
    (pack([0, 1, 7, []]), "request method is not a str: 7"),
    (pack([0, 1, "m", {}]), "request params is not an array: {}"),
    (pack([0, 1, "m", None]), "request params is not an array: None"),
    (pack([0, 1, "m", "p"]), "request params is not an array"),
    (pack([1, "0", None, None]), "response msgid is not a uint32"),
    (pack([2, None, []]), "notification method is not a str"),
    (pack([2, "m", 1]), "notification params is not an array"),
    (b"\xa2\xff\xfe", "undecodable data"),  # invalid UTF-8 in a str
    (b"\xc1", "undecodable data"),  # the one byte msgpack never uses
    (pack([1, 7, None, None]), "response to unknown msgid 7"),
]


class TestMalformed:
    """Each kind of bad message names what was wrong, and kills the connection."""

    @pytest.mark.parametrize(("data", "message"), MALFORMED)
    def test_rejected(self, data: bytes, message: str) -> None:
        conn = Connection()
        with pytest.raises(RemoteProtocolError, match=re.escape(message)):
            conn.receive_data(data)
        with pytest.raises(RemoteProtocolError, match=re.escape(message)):
            conn.receive_data(pack([2, "fine", []]))

    @pytest.mark.parametrize(("data", "message"), MALFORMED)
    def test_rejected_byte_by_byte(self, data: bytes, message: str) -> None:
        with pytest.raises(RemoteProtocolError, match=re.escape(message)):
            feed_in_pieces(Connection(), data, list(range(len(data))))

    def test_trailing_garbage_after_a_valid_message(self) -> None:
        conn = Connection()
        good = pack([2, "ok", []])
        assert conn.receive_data(good) == [Notification("ok", [])]
        with pytest.raises(RemoteProtocolError, match="undecodable"):
            conn.receive_data(b"\xc1")

    def test_garbage_in_the_same_read_as_a_valid_message(self) -> None:
        with pytest.raises(RemoteProtocolError, match="unknown message type"):
            Connection().receive_data(pack([2, "ok", []]) + pack([9]))

    def test_incomplete_message_is_not_an_error(self) -> None:
        data = pack([2, "ok", [1, 2, 3]])
        conn = Connection()
        assert conn.receive_data(data[:-1]) == []
        assert conn.receive_data(data[-1:]) == [Notification("ok", [1, 2, 3])]


class TestIds:
    """The two id tables: requests we await, requests we owe an answer."""

    def test_second_response_to_the_same_id(self) -> None:
        conn = asking(0)
        assert conn.receive_data(pack([1, 0, None, 1])) == [Response(0, None, 1)]
        with pytest.raises(RemoteProtocolError, match="unknown msgid 0"):
            conn.receive_data(pack([1, 0, None, 1]))

    def test_response_to_forgotten_id_is_dropped(self) -> None:
        conn = asking(0, 1)
        conn.forget(0)
        assert conn.outstanding == {1}
        late = pack([1, 0, {"code": -32002, "message": "cancelled"}, None])
        assert conn.receive_data(late + pack([1, 1, None, "ok"])) == [Response(1, None, "ok")]
        with pytest.raises(RemoteProtocolError, match="unknown msgid 0"):  # dropped only once
            conn.receive_data(late)

    def test_forget_is_a_noop_for_ids_not_outstanding(self) -> None:
        conn = asking(0)
        conn.receive_data(pack([1, 0, None, None]))
        conn.forget(0)
        conn.forget(12345)
        assert conn.outstanding == frozenset()

    def test_duplicate_incoming_request_id(self) -> None:
        conn = Connection()
        conn.receive_data(pack([0, 3, "m", []]))
        with pytest.raises(RemoteProtocolError, match="msgid 3 is already in use"):
            conn.receive_data(pack([0, 3, "m", []]))

    def test_request_id_reusable_once_answered(self) -> None:
        conn = Connection()
        conn.receive_data(pack([0, 3, "m", []]))
        conn.send_response(3, result=1)
        assert conn.receive_data(pack([0, 3, "m", []])) == [Request(3, "m", [])]

    @pytest.mark.parametrize("answered", [False, True])
    def test_response_to_id_never_received_or_already_answered(self, answered: bool) -> None:
        conn = Connection()
        if answered:
            conn.receive_data(pack([0, 3, "m", []]))
            conn.send_response(3)
        with pytest.raises(LocalProtocolError, match="no request 3"):
            conn.send_response(3, result=1)


class TestSendErrors:
    """Failures to send leave the id tables as they were, so the caller can recover."""

    def test_unpackable_params(self) -> None:
        conn = Connection()
        with pytest.raises(TypeError):
            conn.send_request("m", [object()])
        assert conn.outstanding == frozenset()
        assert conn.send_request("m", [])[0] == 0

    def test_oversized_request(self) -> None:
        conn = Connection(max_frame=100)
        with pytest.raises(LocalProtocolError, match="exceeds 100 bytes cap"):
            conn.send_request("m", [b"x" * 200])
        assert conn.outstanding == frozenset()

    @pytest.mark.parametrize("result", [object(), b"x" * 200])
    def test_unsendable_result_keeps_id_for_an_error(self, result: object) -> None:
        conn = Connection(max_frame=100)
        conn.receive_data(pack([0, 1, "m", []]))
        with pytest.raises((TypeError, LocalProtocolError)):
            conn.send_response(1, result=result)
        data = conn.send_response(1, error=RpcError(INTERNAL_ERROR, "unsendable"))
        assert msgpack.unpackb(data) == [
            1,
            1,
            {"code": INTERNAL_ERROR, "message": "unsendable", "data": None},
            None,
        ]

    @pytest.mark.parametrize("params", ["abc", b"abc"])
    def test_params_must_not_be_a_string(self, params: Any) -> None:
        with pytest.raises(TypeError, match="params must be a sequence"):
            Connection().send_notification("m", params)

    def test_params_any_sequence(self) -> None:
        data = Connection().send_notification("m", range(3))
        assert Connection().receive_data(data) == [Notification("m", [0, 1, 2])]


class TestRpcError:
    """Errors on the wire are {code, message, data}; odd shapes from peers are tolerated."""

    def test_round_trip(self) -> None:
        err = RpcError(-32601, "no method", {"m": "x"})
        back = RpcError.from_wire(err.to_wire())
        assert (back.code, back.message, back.data) == (-32601, "no method", {"m": "x"})
        assert str(back) == "[-32601] no method"

    @pytest.mark.parametrize(
        ("wire", "message"),
        [
            ("boom", "boom"),
            (["list", 1], "['list', 1]"),
            ({"code": "x", "message": "m"}, "{'code': 'x', 'message': 'm'}"),
            ({"code": 1}, "{'code': 1}"),
            (math.inf, "inf"),
        ],
    )
    def test_tolerant_from_wire(self, wire: Any, message: str) -> None:
        err = RpcError.from_wire(wire)
        assert (err.code, err.message) == (INTERNAL_ERROR, message)


class TestIncomingCap:
    """``max_incoming`` caps the peer's frames below ``max_frame``; ours may use all of it."""

    def test_a_frame_over_the_incoming_cap_is_refused(self) -> None:
        conn = Connection()
        conn.max_incoming = 64 * 1024
        assert conn.receive_data(pack([0, 1, "m", [b"x" * 1000]])) == [
            Request(1, "m", [b"x" * 1000])
        ]
        with pytest.raises(RemoteProtocolError, match="frame exceeds 64 KiB cap"):
            conn.receive_data(pack([0, 2, "m", [b"x" * (64 * 1024)]]))

    def test_the_partial_frame_is_counted_and_the_cap_can_be_raised(self) -> None:
        conn = Connection()
        conn.max_incoming = 64 * 1024
        frame = pack([0, 1, "m", [b"x" * (100 * 1024)]])
        assert conn.receive_data(frame[:60_000]) == []
        assert conn.partial_bytes == 60_000
        conn.max_incoming = MAX_FRAME_DEFAULT  # an MCP face: whole frames
        assert conn.receive_data(frame[60_000:]) == [Request(1, "m", [b"x" * (100 * 1024)])]
        assert conn.partial_bytes == 0
        assert len(conn.send_response(1, result=b"y" * (2 * MiB))) > 2 * MiB  # ours: max_frame

    @pytest.mark.parametrize("value", [15, MAX_FRAME_DEFAULT + 1])
    def test_the_cap_stays_within_the_frame_cap(self, value: int) -> None:
        with pytest.raises(ValueError, match="max_incoming"):
            Connection().max_incoming = value

    def test_decoding_goes_on_after_the_buffer_of_a_large_frame_is_renewed(self) -> None:
        conn = Connection()
        big = pack([2, "big", [b"z" * (3 * MiB)]])
        small = pack([2, "small", [1]])
        stream = big + small + big[:100]
        events = feed_in_pieces(conn, stream, [len(big) // 2, len(big), len(big) + 3])
        assert events == [Notification("big", [b"z" * (3 * MiB)]), Notification("small", [1])]
        assert conn.partial_bytes == 100
        assert conn.receive_data(big[100:] + small) == [
            Notification("big", [b"z" * (3 * MiB)]),
            Notification("small", [1]),
        ]
        assert conn.partial_bytes == 0

    def test_close_frees_the_partial_frame(self) -> None:
        conn = asking(0)
        assert conn.receive_data(pack([2, "n", [b"z" * MiB]])[:-1]) == []
        conn.close()
        assert conn.partial_bytes == 0
        with pytest.raises(RemoteProtocolError, match="connection closed"):
            conn.receive_data(b"\x90")
        with pytest.raises(LocalProtocolError, match="connection closed"):
            conn.send_notification("no more", [])
