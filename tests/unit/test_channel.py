"""The asyncio channel over real socketpairs, Unix sockets and a real child process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack
import pytest

from worker.channel import Channel, ChannelClosed, Handler
from worker.protocol import (
    APPLICATION_ERROR,
    CANCELLED,
    CONNECTION_LOST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
)
from worker.rpc import RpcError

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def pair(
    a_handlers: Mapping[str, Handler] | None = None,
    b_handlers: Mapping[str, Handler] | None = None,
    **b_options: Any,
) -> AsyncIterator[tuple[Channel, Channel]]:
    """Two channels joined by a socketpair; ``b_options`` go to b's constructor."""
    sa, sb = socket.socketpair()
    a, b = Channel(a_handlers, name="a"), Channel(b_handlers, name="b", **b_options)
    await a.connect(sa)
    await b.connect(sb)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@contextlib.asynccontextmanager
async def raw_peer(
    sndbuf: int | None = None, **options: Any
) -> AsyncIterator[tuple[Channel, socket.socket]]:
    """A channel whose peer is a bare non-blocking socket the test drives byte by byte."""
    sa, sb = socket.socketpair()
    sb.setblocking(False)
    if sndbuf is not None:
        sa.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    channel = Channel(name="ch", **options)
    await channel.connect(sa)
    try:
        yield channel, sb
    finally:
        channel.close()
        sb.close()


async def read_messages(sock: socket.socket, count: int) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False)
    loop = asyncio.get_running_loop()
    out: list[Any] = []
    while len(out) < count:
        data = await loop.sock_recv(sock, 65536)
        assert data, "peer closed"
        unpacker.feed(data)
        out += list(unpacker)
    return out


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


class TestCalls:
    """Requests and responses, in both directions, and the errors handlers produce."""

    @pytest.mark.parametrize(
        "args", [(), (1,), ("s", b"b", None, 1.5, [1, [2]], {"k": {3: 4}}), (2**64 - 1,)]
    )
    async def test_both_directions(self, args: tuple[Any, ...]) -> None:
        def echo(*a: Any) -> list[Any]:
            return list(a)

        async with pair({"echo": echo}, {"echo": echo}) as (a, b):
            assert await a.request("echo", *args) == list(args)
            assert await b.request("echo", *args) == list(args)

    async def test_async_handler(self) -> None:
        async def add(x: int, y: int) -> int:
            await asyncio.sleep(0)
            return x + y

        async with pair(b_handlers={"add": add}) as (a, _):
            assert await a.request("add", 2, 3) == 5

    async def test_handlers_added_after_construction(self) -> None:
        async with pair() as (a, b):
            b.handlers["late"] = lambda: "here"
            assert await a.request("late") == "here"

    @staticmethod
    def failing_value_error() -> None:
        raise ValueError("bad input")

    @staticmethod
    async def failing_async() -> None:
        await asyncio.sleep(0)
        raise KeyError("k")

    @staticmethod
    def failing_rpc() -> None:
        raise RpcError(-5, "custom", {"x": 1})

    @staticmethod
    def failing_rpc_unpackable_data() -> None:
        raise RpcError(-6, "odd data", object())

    @pytest.mark.parametrize(
        ("method", "args", "code", "message", "data"),
        [
            ("value_error", (), APPLICATION_ERROR, "ValueError: bad input", "failing_value_error"),
            ("async_error", (), APPLICATION_ERROR, "KeyError: 'k'", "failing_async"),
            ("rpc_error", (), -5, "custom", {"x": 1}),
            ("odd_data", (), -6, "odd data", None),
            ("two_args", (1,), INVALID_PARAMS, "missing 1 required positional argument", None),
            ("two_args", (1, 2, 3), INVALID_PARAMS, "takes 2 positional arguments", None),
            ("unpackable", (), INTERNAL_ERROR, "result not sendable: TypeError", None),
            ("nope", (), METHOD_NOT_FOUND, "no method 'nope'", None),
        ],
    )
    async def test_errors(
        self, method: str, args: tuple[Any, ...], code: int, message: str, data: Any
    ) -> None:
        handlers: dict[str, Handler] = {
            "value_error": self.failing_value_error,
            "async_error": self.failing_async,
            "rpc_error": self.failing_rpc,
            "odd_data": self.failing_rpc_unpackable_data,
            "two_args": lambda x, y: x + y,
            "unpackable": lambda: object(),
        }
        async with pair(b_handlers=handlers) as (a, _):
            with pytest.raises(RpcError) as info:
                await a.request(method, *args)
            assert info.value.code == code
            assert message in info.value.message
            if isinstance(data, str):  # the traceback tail names the failing function
                assert data in info.value.data["traceback"]
            else:
                assert info.value.data == data
            assert await a.request("two_args", 1, 2) == 3  # the channel survives

    async def test_slow_handler_does_not_block_others(self) -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def slow() -> str:
            started.set()
            await release.wait()
            return "slow"

        async with pair(b_handlers={"slow": slow, "ping": lambda: "pong"}) as (a, _):
            async with asyncio.timeout(5):
                call = asyncio.create_task(a.request("slow"))
                await started.wait()
                assert await a.request("ping") == "pong"
                assert not call.done()
                release.set()
                assert await call == "slow"

    async def test_many_in_flight_get_their_own_answers(self) -> None:
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        async with pair(b_handlers={"double": double, "inc": lambda x: x + 1}) as (a, _):
            doubled = [a.request("double", i) for i in range(300)]
            incremented = [a.request("inc", i) for i in range(300)]
            assert await asyncio.gather(*doubled) == [2 * i for i in range(300)]
            assert await asyncio.gather(*incremented) == [i + 1 for i in range(300)]


class TestNotifications:
    """Notifications go to on_notification, else to the handler of that name."""

    async def test_on_notification_sees_them_in_order(self) -> None:
        seen: list[tuple[str, list[Any]]] = []
        done = asyncio.Event()

        def record(method: str, params: list[Any]) -> None:
            seen.append((method, params))
            if method == "last":
                done.set()

        async with pair(on_notification=record) as (a, _):
            a.notify("one", 1)
            a.notify("two", b"2", [3])
            a.notify("last")
            async with asyncio.timeout(5):
                await done.wait()
        assert seen == [("one", [1]), ("two", [b"2", [3]]), ("last", [])]

    async def test_handlers_sync_async_and_failing(self, caplog: pytest.LogCaptureFixture) -> None:
        got: list[Any] = []
        done = asyncio.Event()

        async def async_tick(x: int) -> None:
            await asyncio.sleep(0)
            got.append(("async", x))
            done.set()

        def broken() -> None:
            raise RuntimeError("handler bug")

        handlers: dict[str, Handler] = {
            "tick": lambda x: got.append(("sync", x)),
            "async_tick": async_tick,
            "broken": broken,
        }
        caplog.set_level(logging.DEBUG, logger="worker.channel")
        async with pair(b_handlers=handlers) as (a, _):
            for method in ("tick", "broken", "unknown"):
                a.notify(method, 1)
            a.notify("async_tick", 2)
            async with asyncio.timeout(5):
                await done.wait()
        assert got == [("sync", 1), ("async", 2)]
        assert any("'broken' failed" in r.getMessage() and r.exc_info for r in caplog.records)
        assert any(
            "no handler for notification 'unknown'" in r.getMessage() for r in caplog.records
        )


class TestCancellation:
    """A caller that stops waiting tells the peer, whose handler sees CancelledError."""

    @staticmethod
    def cancellable() -> tuple[Callable[[], Any], asyncio.Event, asyncio.Event]:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def wait_forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        return wait_forever, started, cancelled

    async def test_timeout(self) -> None:
        handler, started, cancelled = self.cancellable()
        async with pair(b_handlers={"wait": handler, "ping": lambda: "pong"}) as (a, _):
            with pytest.raises(TimeoutError):
                await a.request("wait", timeout=1.0)  # long enough for the handler to start
            assert started.is_set()
            async with asyncio.timeout(5):
                await cancelled.wait()
            assert await a.request("ping") == "pong"  # the late CANCELLED answer was dropped
            assert not a.closed

    async def test_cancelled_task(self) -> None:
        handler, started, cancelled = self.cancellable()
        async with pair(b_handlers={"wait": handler, "ping": lambda: "pong"}) as (a, _):
            async with asyncio.timeout(5):
                call = asyncio.create_task(a.request("wait"))
                await started.wait()
                call.cancel()
                await cancelled.wait()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await a.request("ping") == "pong"

    async def test_on_the_wire(self) -> None:
        async with raw_peer() as (ch, peer):
            with pytest.raises(TimeoutError):
                await ch.request("m", 1, timeout=0.05)
            request, cancel = await read_messages(peer, 2)
            assert request[0] == 0
            assert request[2:] == ["m", [1]]
            assert cancel == [2, "$cancel", [request[1]]]
            # The answer the peer sends as it gets the $cancel is dropped, not a protocol error.
            await asyncio.get_running_loop().sock_sendall(
                peer, pack([1, request[1], [CANCELLED, "cancelled"], None])
            )
            await asyncio.get_running_loop().sock_sendall(peer, pack([0, 0, "x", []]))
            (answer,) = await read_messages(peer, 1)
            assert answer[:2] == [1, 0]
            assert answer[2]["code"] == METHOD_NOT_FOUND
            assert not ch.closed

    async def test_cancel_for_unknown_id_is_ignored(self) -> None:
        async with raw_peer() as (ch, peer):
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(peer, pack([2, "$cancel", [42]]) + pack([2, "$cancel", []]))
            await loop.sock_sendall(peer, pack([0, 1, "x", []]))
            (answer,) = await read_messages(peer, 1)
            assert answer[1] == 1
            assert not ch.closed


class TestClosing:
    """Whatever ends the connection, pending calls fail at once with ChannelClosed."""

    async def test_peer_close(self) -> None:
        handler, started, cancelled = TestCancellation.cancellable()
        async with pair(b_handlers={"wait": handler}) as (a, b):
            async with asyncio.timeout(2):
                call = asyncio.create_task(a.request("wait"))
                await started.wait()
                b.close("stopping")
                with pytest.raises(ChannelClosed, match="peer closed the connection") as info:
                    await call
                await cancelled.wait()  # b's own handler task was cancelled by its close
            assert info.value.code == CONNECTION_LOST
            assert await a.wait_closed() == "peer closed the connection"
            assert a.closed
            assert a.close_reason == "peer closed the connection"

    async def test_local_close(self) -> None:
        handler, started, _ = TestCancellation.cancellable()
        async with pair(b_handlers={"wait": handler}) as (a, _):
            async with asyncio.timeout(2):
                call = asyncio.create_task(a.request("wait"))
                await started.wait()
                a.close("shutting down")
                a.close("again")  # idempotent: the first reason stands
                with pytest.raises(ChannelClosed, match="shutting down"):
                    await call
            assert await a.wait_closed() == "shutting down"
            with pytest.raises(ChannelClosed, match="shutting down"):
                await a.request("wait")
            with pytest.raises(ChannelClosed, match="shutting down"):
                a.notify("x")

    async def test_close_flushes_queued_frames(self) -> None:
        async with raw_peer() as (ch, peer):
            ch.notify("bye", 1)
            ch.close()
            assert await read_messages(peer, 1) == [[2, "bye", [1]]]

    @pytest.mark.parametrize(
        ("garbage", "reason"),
        [
            (b"\xc1", "protocol error: undecodable data"),
            (pack([7, 0]), "protocol error: unknown message type 7"),
            (pack([1, 99, None, None]), "protocol error: response to unknown msgid 99"),
        ],
    )
    async def test_garbage(self, garbage: bytes, reason: str) -> None:
        async with raw_peer() as (ch, peer):
            loop = asyncio.get_running_loop()
            call = asyncio.create_task(ch.request("m"))
            await read_messages(peer, 1)
            await loop.sock_sendall(peer, garbage)
            async with asyncio.timeout(2):
                with pytest.raises(ChannelClosed, match=reason):
                    await call
                assert await loop.sock_recv(peer, 10) == b""  # cut off
            assert (ch.close_reason or "").startswith(reason)

    @pytest.mark.parametrize("max_frame", [1 * MiB, None])
    async def test_huge_frame_header(self, max_frame: int | None) -> None:
        cap = max_frame or 16 * MiB
        options = {} if max_frame is None else {"max_frame": max_frame}
        sent = 0
        async with raw_peer(**options) as (ch, peer):
            loop = asyncio.get_running_loop()
            chunk = bytes(256 * 1024)
            if max_frame:
                tracemalloc.start()
            try:
                async with asyncio.timeout(10):
                    await loop.sock_sendall(peer, b"\xc6" + (100 * MiB).to_bytes(4, "big"))
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        while sent < 100 * MiB:
                            await loop.sock_sendall(peer, chunk)
                            sent += len(chunk)
                    reason = await ch.wait_closed()
                peak = tracemalloc.get_traced_memory()[1] if max_frame else 0
            finally:
                tracemalloc.stop()
        assert reason.startswith("protocol error: frame exceeds")
        assert sent < cap + 4 * MiB  # the socket buffers hold a little more
        assert peak < 4 * cap

    async def test_stalled_oversized_header(self) -> None:
        # The peer declares 100 MB, sends a little and stops: cut off now, not at the cap.
        async with raw_peer() as (ch, peer):
            call = asyncio.create_task(ch.request("m"))
            header = b"\xc6" + (100 * MiB).to_bytes(4, "big")
            await asyncio.get_running_loop().sock_sendall(peer, header + bytes(4096))
            async with asyncio.timeout(2):
                reason = await ch.wait_closed()
                with pytest.raises(ChannelClosed, match="frame exceeds 16 MiB cap"):
                    await call
            assert reason.startswith("protocol error: frame exceeds 16 MiB cap: 104857600")

    @pytest.mark.parametrize(
        ("size", "sndbuf"),
        [
            (8 * MiB, None),  # far above the transport's high-water mark: it pauses us anyway
            (32 * 1024, 4096),  # below it, with the kernel buffer full: only drain's own wait
        ],
    )
    async def test_drain_waits_for_the_socket(self, size: int, sndbuf: int | None) -> None:
        async with raw_peer(sndbuf) as (ch, peer):
            loop = asyncio.get_running_loop()
            ch.notify("big", bytes(size))
            received = 0
            at_drain: list[int] = []
            drained = asyncio.create_task(ch.drain())
            drained.add_done_callback(lambda _: at_drain.append(received))
            async with asyncio.timeout(10):
                while not drained.done() or received < size:
                    data = await loop.sock_recv(peer, 1 * MiB)
                    assert data
                    received += len(data)
                await drained
            # drain returned only once the kernel had taken all but what its buffer holds
            assert at_drain[0] > size // 2
            ch.notify("small")
            await ch.drain()


class TestSockets:
    """Kinds of socket the channel is handed: accepted Unix, inherited fd in a child."""

    async def test_accepted_unix_socket(self, tmp_path: Path) -> None:
        loop = asyncio.get_running_loop()
        path = str(tmp_path / "s")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen()
            listener.setblocking(False)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            await loop.sock_connect(client, path)
            accepted, _ = await loop.sock_accept(listener)
        server, caller = Channel({"hi": lambda n: f"hi {n}"}), Channel()
        await server.connect(accepted)
        await caller.connect(client)
        try:
            assert await caller.request("hi", "there") == "hi there"
        finally:
            caller.close()
            server.close()


CHILD = """
import asyncio, os, socket, sys
from worker.channel import Channel

async def main():
    ch = Channel(name="child")
    async def hang():
        ch.notify("hanging")
        await asyncio.Event().wait()
    async def ask_parent():
        return ["child", await ch.request("name")]
    ch.handlers.update(echo=lambda *a: list(a), hang=hang, ask_parent=ask_parent)
    await ch.connect(socket.socket(fileno=int(sys.argv[1])))
    ch.notify("ready", os.getpid())
    print(await ch.wait_closed(), flush=True)

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def child() -> AsyncIterator[tuple[Channel, asyncio.subprocess.Process, asyncio.Queue[str]]]:
    """A real child process serving a Channel on an inherited socketpair end.

    Yields our channel to it, the process, and a queue of the notifications it sends.
    """
    ours, theirs = socket.socketpair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(theirs.fileno()),
        pass_fds=[theirs.fileno()],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    theirs.close()
    notes: asyncio.Queue[str] = asyncio.Queue()
    channel = Channel(
        {"name": lambda: "parent"},
        name="parent",
        on_notification=lambda method, params: notes.put_nowait(f"{method} {params}"),
    )
    await channel.connect(ours)
    try:
        async with asyncio.timeout(10):
            assert await notes.get() == f"ready [{proc.pid}]"
        yield channel, proc, notes
    finally:
        channel.close()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


class TestChildProcess:
    """One channel across a real process boundary, as supervisor and worker use it."""

    async def test_calls_both_ways_then_clean_exit(self) -> None:
        async with child() as (channel, proc, _):
            async with asyncio.timeout(10):
                assert await channel.request("echo", 1, b"2") == [1, b"2"]
                assert await channel.request("ask_parent") == ["child", "parent"]
                channel.close("done")
                assert proc.stdout is not None
                assert await proc.stdout.read() == b"peer closed the connection\n"
                assert await proc.wait() == 0

    async def test_child_killed_fails_pending_at_once(self) -> None:
        async with child() as (channel, proc, notes):
            async with asyncio.timeout(5):
                calls = [asyncio.create_task(channel.request("hang")) for _ in range(3)]
                for _ in calls:  # every call is being served in the child
                    assert await notes.get() == "hanging []"
                os.kill(proc.pid, signal.SIGKILL)
                for call in calls:
                    with pytest.raises(ChannelClosed, match="peer closed the connection"):
                        await call
                assert await proc.wait() == -signal.SIGKILL
