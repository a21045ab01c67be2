"""The JSON-RPC line peer (:class:`worker.mcp.jsonrpc.LinePeer`) without a process: bytes in
(whole, byte by byte, with junk), lines out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from worker.mcp.jsonrpc import LinePeer
from worker.protocol import CONNECTION_LOST
from worker.rpc import RpcError

pytestmark = pytest.mark.anyio


class Wire:
    """A peer, what it wrote and what it passed on."""

    def __init__(self, max_line: int = 1 << 20) -> None:
        self.written: list[bytes] = []
        self.notes: list[tuple[str, Any]] = []
        self._wrote = asyncio.Event()
        self.peer = LinePeer(self._write, lambda m, p: self.notes.append((m, p)), "fake", max_line)

    def _write(self, data: bytes) -> None:
        self.written.append(data)
        self._wrote.set()

    async def wrote(self, n: int) -> None:
        """Wait until ``n`` lines have been written."""
        async with asyncio.timeout(5):
            while len(self.written) < n:
                self._wrote.clear()
                await self._wrote.wait()

    def sent(self) -> list[Any]:
        return [json.loads(line) for line in self.written]

    def start(self, method: str = "x", **kw: Any) -> asyncio.Task[Any]:
        """A request in a task of its own (its line is written when the task first runs)."""
        return asyncio.ensure_future(self.peer.request(method, **kw))


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def answer(rid: Any, result: Any = None) -> bytes:
    return line({"jsonrpc": "2.0", "id": rid, "result": result if result is not None else {}})


async def settled(task: asyncio.Task[Any]) -> Any:
    async with asyncio.timeout(5):
        return await task


@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytewise", "chunks-of-7"])
async def test_messages_in_any_chunking(chunk: int | None) -> None:
    w = Wire()
    first, second = w.start("a", params={"k": 1}), w.start("b")
    await w.wrote(2)
    assert w.sent() == [
        {"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"k": 1}},
        {"jsonrpc": "2.0", "id": 2, "method": "b"},
    ]
    data = (
        b"junk\n"
        + line({"jsonrpc": "2.0", "method": "notifications/message", "params": {"x": 1}})
        + answer(2, {"two": 2}).replace(b"\n", b"\r\n")
        + answer(1, {"one": 1})
    )
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        w.peer.feed(piece)
    assert await settled(first) == {"one": 1}
    assert await settled(second) == {"two": 2}
    assert w.notes == [("notifications/message", {"x": 1})]


async def test_a_partial_line_waits_for_its_newline() -> None:
    w = Wire()
    task = w.start()
    await w.wrote(1)
    w.peer.feed(answer(1)[:-1])
    assert w.peer.pending == 1
    w.peer.feed(b"\n")
    assert w.peer.pending == 0
    assert await settled(task) == {}


@pytest.mark.parametrize("chunk", [None, 5])
async def test_an_overlong_line_is_skipped_whole(
    chunk: int | None, capfd: pytest.CaptureFixture[str]
) -> None:
    w = Wire(max_line=60)
    task = w.start()
    await w.wrote(1)
    big = line({"jsonrpc": "2.0", "id": 1, "result": {"pad": "x" * 100}})
    data = big + answer(1, {"ok": True})
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        w.peer.feed(piece)
    assert await settled(task) == {"ok": True}
    assert capfd.readouterr().err.count("a line of more than 60 bytes from the fake: skipped") == 1


@pytest.mark.parametrize(
    "stray",
    [
        answer(99),  # nobody asked
        answer(True),  # a bool is not the id 1
        answer([1]),  # not an id at all
        line({"jsonrpc": "2.0", "id": 1}),  # neither result nor error
        line({"jsonrpc": "2.0", "method": 5}),
        line([]),
        line([1, "two"]),
        line("text"),
        b"[[[[[[[[[[[[[[[[[[[[" * 5000 + b"\n",  # too deep for the parser
        b"\xff\xfe\n",
    ],
)
async def test_strays_change_nothing(stray: bytes) -> None:
    w = Wire()
    task = w.start()
    await w.wrote(1)
    w.peer.feed(stray)
    assert w.peer.pending == 1
    w.peer.feed(answer("1", {"late": True}))  # an id echoed as a string still matches
    assert await settled(task) == {"late": True}


async def test_the_servers_requests_are_answered() -> None:
    w = Wire()
    w.peer.feed(line({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
    w.peer.feed(line({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage"}))
    assert w.sent() == [
        {"jsonrpc": "2.0", "id": "p", "result": {}},
        {"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "Method not found"}},
    ]


async def test_progress_goes_to_its_call_until_answered() -> None:
    w = Wire()
    reports: list[tuple[float, float | None, str | None]] = []
    task = w.start(on_progress=lambda *r: reports.append(r), params={"_meta": {"a": 1}})
    await w.wrote(1)
    assert w.sent()[0]["params"] == {"_meta": {"a": 1, "progressToken": 1}}

    def progress(**params: Any) -> bytes:
        return line({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    w.peer.feed(progress(progressToken=1, progress=0.5, total=1, message="half"))
    w.peer.feed(progress(progressToken=1, progress=True))  # not a number
    w.peer.feed(progress(progressToken=2, progress=1))  # not ours
    w.peer.feed(progress(progressToken="1", progress=1, message=7))
    w.peer.feed(answer(1) + progress(progressToken=1, progress=2))  # after the answer
    await settled(task)
    assert reports == [(0.5, 1, "half"), (1, None, None)]


async def test_cancelling_a_call_tells_the_server() -> None:
    w = Wire()
    task, init = w.start("slow"), w.start("initialize", cancellable=False)
    await w.wrote(2)
    task.cancel()
    init.cancel()
    for t in (task, init):
        with pytest.raises(asyncio.CancelledError):
            await t
    assert w.sent()[2:] == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 1, "reason": "caller cancelled"},
        }
    ]
    assert w.peer.pending == 0
    w.peer.feed(answer(1))  # too late: dropped


async def test_the_end_fails_every_call_now_and_later() -> None:
    w = Wire()
    tasks = [w.start(), w.start()]
    await w.wrote(2)
    w.peer.fail_all(RpcError(CONNECTION_LOST, "the fake exited"))
    w.peer.fail_all(RpcError(CONNECTION_LOST, "second reason: ignored"))
    for task in tasks:
        with pytest.raises(RpcError, match="the fake exited"):
            await settled(task)
    with pytest.raises(RpcError, match="the fake exited"):
        await w.peer.request("later")
    w.peer.notify("notifications/x")
    assert len(w.written) == 2  # nothing is written once the connection has ended


async def test_a_calls_tag_is_known_while_it_is_pending() -> None:
    """The owner's object for a call (the remote kind's: who may be asked for it), by id."""
    w = Wire()
    mine, other, untagged = object(), object(), w.start("plain")
    tasks = [w.start(tag=mine), w.start(tag=other)]
    await w.wrote(3)
    assert (w.peer.tag(1), w.peer.tag(2), w.peer.tag(3), w.peer.tag(9)) == (None, mine, other, None)
    w.peer.feed(answer(2))
    await settled(tasks[0])
    assert w.peer.tag(2) is None and w.peer.tag(3) is other
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert w.peer.tag(3) is None
    w.peer.feed(answer(1))
    await settled(untagged)
