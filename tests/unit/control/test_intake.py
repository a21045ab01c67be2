"""The control socket's intake: unfinished frames bounded per connection, in total, in time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import msgpack
import pytest

from supervisor.control.intake import Intake, IntakeLimits
from worker.channel import Channel

pytestmark = pytest.mark.anyio

KiB = 1024


@contextlib.asynccontextmanager
async def served(intake: Intake) -> AsyncIterator[tuple[Channel, socket.socket]]:
    """A server-side channel accounted by ``intake`` and the bare client socket driving it."""
    ours, theirs = socket.socketpair()
    channel = Channel({"ping": lambda: "pong"}, on_read=intake.on_read)
    intake.admit(channel)
    await channel.connect(ours)
    theirs.setblocking(False)
    try:
        yield channel, theirs
    finally:
        channel.close()
        intake.release(channel)
        theirs.close()


async def send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def until(cond: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.005)  # polling a condition under a deadline


FRAME = msgpack.packb([0, 1, "ping", [b"x" * (40 * KiB)]])


@pytest.mark.parametrize(
    ("env", "timeout"),
    [({}, 10.0), ({"SPCTL_CONTROL_FRAME_TIMEOUT": "0.25"}, 0.25)],
)
def test_the_frame_timeout_comes_from_the_environment(env: dict[str, str], timeout: float) -> None:
    assert IntakeLimits.from_env(env).frame_timeout == timeout


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_frame_timeout_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="SPCTL_CONTROL_FRAME_TIMEOUT"):
        IntakeLimits.from_env({"SPCTL_CONTROL_FRAME_TIMEOUT": value})


async def test_the_total_budget_cuts_off_the_connection_that_would_pass_it() -> None:
    intake = Intake(IntakeLimits(per_connection=64 * KiB, mcp_face=64 * KiB, total=48 * KiB))
    async with served(intake) as (a, sa), served(intake) as (b, sb):
        await send(sa, FRAME[: 30 * KiB])
        await until(lambda: intake.held == 30 * KiB)
        await send(sb, FRAME[: 30 * KiB])
        reason = await asyncio.wait_for(b.wait_closed(), 5)
        assert reason.startswith("over the control socket's 48 KiB budget"), reason
        assert not a.closed and intake.held == 30 * KiB
        await send(sa, FRAME[30 * KiB :])  # a's frame completes: its share is free again
        await until(lambda: intake.held == 0)
        assert not a.closed


async def test_a_stalled_frame_is_cut_off_and_a_complete_one_is_not() -> None:
    intake = Intake(IntakeLimits(frame_timeout=0.2))
    async with served(intake) as (stalled, s1), served(intake) as (idle, _):
        await send(s1, FRAME[:100])
        reason = await asyncio.wait_for(stalled.wait_closed(), 5)
        assert reason.startswith("partial frame stalled: 100 bytes"), reason
        assert intake.held == 0
        assert not idle.closed  # no unfinished frame: never timed out


async def test_an_mcp_face_may_send_whole_frames() -> None:
    intake = Intake(IntakeLimits(per_connection=16 * KiB))
    async with served(intake) as (face, sock):
        intake.widen(face)
        await send(sock, FRAME)
        await until(lambda: face.stats[0] == 1)
        assert not face.closed
    async with served(intake) as (plain, sock):
        await send(sock, FRAME)
        reason = await asyncio.wait_for(plain.wait_closed(), 5)
        assert "frame exceeds 16 KiB cap" in reason, reason
