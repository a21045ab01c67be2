"""The front's uvicorn server without a tick: nothing is scheduled while it idles, it still
exits at once on ``should_exit`` (from a thread, or uvicorn's SIGTERM handler), and the
``Date`` header is current on a request after an idle spell. Real uvicorn on a real socket,
the front's own protocol, HTTP over a socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate, parsedate_to_datetime

import pytest
import uvicorn

from supervisor.mcp import quiet_server
from supervisor.mcp.http_conn import HTTP_IMPLEMENTATIONS, limited_protocol
from supervisor.mcp.limits import FrontLimits
from supervisor.mcp.quiet_server import QuietServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def _running(
    cls: type[uvicorn.Server] = QuietServer, http: str = "h11"
) -> AsyncIterator[tuple[uvicorn.Server, str, asyncio.Task[None]]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app,  # type: ignore[arg-type]
        http=limited_protocol(FrontLimits(), http),
        lifespan="off",
        log_level="warning",
        server_header=False,
    )
    server = cls(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.01)  # polling a flag with a deadline, not synchronisation by time
    try:
        yield server, f"http://127.0.0.1:{port}/", task
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def _timers_soon(within: float) -> list[asyncio.TimerHandle]:
    loop = asyncio.get_running_loop()
    at = loop.time() + within
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [h for h in scheduled if not h.cancelled() and h.when() < at]


async def _settle() -> None:
    for _ in range(20):  # let startup's callbacks run
        await asyncio.sleep(0)


def test_an_idle_quiet_server_schedules_nothing() -> None:
    async def main() -> tuple[int, int]:
        async with _running(uvicorn.Server):
            await _settle()
            ticking = len(_timers_soon(10.0))
        async with _running(QuietServer):
            await _settle()
            quiet = len(_timers_soon(10.0))
        return ticking, quiet

    ticking, quiet = asyncio.run(main())
    assert ticking >= 1  # uvicorn's own loop: a 100 ms sleep, always
    assert quiet == 0


def test_should_exit_from_another_thread_ends_serve_at_once() -> None:
    async def main() -> float:
        async with _running() as (server, _url, task):
            await _settle()
            t0 = time.monotonic()
            threading.Thread(target=setattr, args=(server, "should_exit", True)).start()
            await asyncio.wait_for(asyncio.shield(task), 5)
            return time.monotonic() - t0

    assert asyncio.run(main()) < 5


def test_sigterm_ends_serve() -> None:
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it after
    try:

        async def main() -> None:
            async with _running() as (_server, _url, task):
                await _settle()
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(asyncio.shield(task), 5)

        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_the_date_header_is_current_after_an_idle_spell(http: str) -> None:
    async def main() -> str:
        async with _running(http=http) as (server, url, _task):
            await _settle()
            # As it would be after an hour without a request: the last header written long ago.
            stale = formatdate(time.time() - 3600, usegmt=True).encode()
            server.server_state.default_headers = [(b"date", stale)]
            quiet_server._last_second = int(time.time()) - 3600
            reader, writer = await asyncio.open_connection("127.0.0.1", url.split(":")[2][:-1])
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            response = (await reader.read()).decode()
            writer.close()
            assert response.startswith("HTTP/1.1 200"), response
            return next(
                line.split(":", 1)[1].strip()
                for line in response.splitlines()
                if line.lower().startswith("date:")
            )

    date = parsedate_to_datetime(asyncio.run(main()))
    assert abs(date.timestamp() - time.time()) < 5
