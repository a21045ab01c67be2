"""The MCP front's limits against a hostile local client (#17, item 5): a real ``spctl serve``
with one MCP server, and real fronts (``python -m supervisor.mcp.front``) started with small
limits, attacked over raw sockets and then used by the official MCP SDK client.

Probes of the issue: connections dripping request headers were never timed out (only
RLIMIT_NOFILE bounded them); 20,000 legacy sessions took the front to 830 MB (10,000 allowed
per URL); two ``Origin`` headers let the last one decide.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import psutil
import pytest
from mcp import Client

from supervisor.mcp.http_conn import HTTP_IMPLEMENTATIONS
from tests.e2e.test_mcp_front import INIT, Front, start_front
from tests.helpers import Serve, make_extensions, server_entry, wait_for


class Listening(Protocol):
    """Where a front listens (a :class:`Front` we started, or the one ``spctl serve`` did)."""

    port: int


@dataclass
class Port:
    port: int


PING = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("front-limits")
    markers = root / "markers"
    markers.mkdir()
    servers = [server_entry("echo", "mcp_echo", config={"markers": str(markers)})]
    s = Serve(root, make_extensions(root, [], servers), root / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("echo", "running")
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def default_front(serve: Serve) -> Iterator[Front]:
    with front(serve) as f:
        yield f


@contextlib.contextmanager
def front(serve: Serve, *flags: str) -> Iterator[Front]:
    f = start_front(serve.socket, serve.root / "front.log", *flags)
    try:
        yield f
    finally:
        f.stop()


def open_fds(f: Front) -> int:
    return len(os.listdir(f"/proc/{f.proc.pid}/fd"))


def accepted(f: Front) -> int:
    """The client connections the front has accepted (its own descriptors of other kinds come
    and go while it settles, so a descriptor count taken at start is no baseline for these)."""
    conns = psutil.Process(f.proc.pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.laddr and c.laddr[1] == f.port and c.raddr)


def rss_mib(f: Front) -> float:
    rss: int = psutil.Process(f.proc.pid).memory_info().rss
    return rss / 2**20


_OPENED: list[Raw] = []


@pytest.fixture(autouse=True)
def close_raw_sockets() -> Iterator[None]:
    """A failed test must not leave its sockets to a later test's garbage collection."""
    yield
    while _OPENED:
        _OPENED.pop().close()


@dataclass
class Raw:
    """A raw client socket: what it sent, what came back, whether the front closed it."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    closed: bool = False

    @classmethod
    def connect(cls, f: Listening, first: bytes = b"") -> Raw:
        sock = socket.create_connection(("127.0.0.1", f.port), timeout=10)
        sock.setblocking(False)
        raw = cls(sock)
        _OPENED.append(raw)  # closed by close_raw_sockets, also when the test fails
        if first:
            raw.send(first)
        return raw

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the front may have closed it already
            self.sock.send(data)

    def poll(self) -> bool:
        """Read what has arrived; True once the front closed the connection."""
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # reset
                self.closed = True
                break
            if not chunk:
                self.closed = True
            self.received += chunk
        return self.closed

    def close(self) -> None:
        self.sock.close()


def head(f: Listening, method: str = "POST", path: str = "/mcp", **extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{f.port}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def request(f: Listening, body: str = INIT, path: str = "/mcp", **extra: str) -> bytes:
    data = body.encode()
    more = {
        "Content_Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Content_Length": str(len(data)),
        **extra,
    }
    return head(f, "POST", path, **more) + b"\r\n" + data


def post(
    f: Listening, headers: dict[str, str], body: str = INIT, path: str = "/mcp"
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
    try:
        base = {
            "Host": f"127.0.0.1:{f.port}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        conn.request("POST", path, body=body, headers={**base, **headers})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def sdk_client_works(f: Front) -> None:
    async def body() -> None:
        for mode in ("auto", "legacy"):
            async with Client(f.url(), mode=mode) as c:
                result = await c.call_tool("echo__echo", {"text": "still here"})
                assert result.content[0].text == "still here"  # type: ignore[union-attr]

    anyio.run(body)


# -- connections -----------------------------------------------------------------------------

# Each limit is kept by both HTTP parsers the front can run (--http httptools, the default, and
# --http h11): each has its own subclass in supervisor.mcp.http_conn.
parsers = pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)


@parsers
def test_connections_dripping_headers_are_closed_after_the_header_timeout(
    serve: Serve, http: str
) -> None:
    """200 connections that drip a request head byte by byte (probe: never timed out) are
    answered 408 and closed once --header-timeout (1 s) has passed, however they drip."""
    with front(serve, "--http", http, "--header-timeout", "1") as f:
        base = open_fds(f)
        start = time.monotonic()
        drippers = [
            Raw.connect(f, b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ") for _ in range(200)
        ]

        def dripped_and_all_closed() -> bool:
            for raw in drippers:
                raw.send(b"a")  # one more byte of the head at each poll: still never complete
            return all([raw.poll() for raw in drippers])

        wait_for(dripped_and_all_closed, 30, "the front to close every dripping connection")
        assert time.monotonic() - start >= 1.0  # not before the timeout
        assert all(b"408 Request Timeout" in raw.received for raw in drippers)
        assert b"--header-timeout" in drippers[0].received
        wait_for(lambda: open_fds(f) <= base + 2, 10, "the front's descriptors back to base")
        for raw in drippers:
            raw.close()
        sdk_client_works(f)


@parsers
def test_a_connection_dripping_its_body_is_closed(serve: Serve, http: str) -> None:
    """A whole head, then a body dripped a byte at a time: closed once --header-timeout has
    passed since the head (it would otherwise hold its slot under the cap for ever)."""
    with front(serve, "--http", http, "--header-timeout", "1") as f:
        # The clock starts before the head is sent: a lower bound of the front's own (counting
        # descriptors to see the accept raced a front still settling its own at start).
        start = time.monotonic()
        dripper = Raw.connect(f, request(f, body="{", Content_Length="100000"))

        def dripped_and_closed() -> bool:
            dripper.send(b" ")
            return dripper.poll()

        wait_for(dripped_and_closed, 30, "the front to close the dripping body")
        assert time.monotonic() - start >= 1.0  # not before the timeout
        dripper.close()
        sdk_client_works(f)


@parsers
def test_a_kept_alive_connection_is_closed_when_idle_and_when_it_drips_the_next_request(
    serve: Serve, http: str
) -> None:
    """After a response a connection may idle for --keepalive-timeout; one that instead
    drips the next request's head (which stopped uvicorn's keep-alive timer, and nothing
    timed the head) is closed by --header-timeout."""
    with front(serve, "--http", http, "--keepalive-timeout", "1", "--header-timeout", "1") as f:
        idle = Raw.connect(f, request(f))
        dripper = Raw.connect(f, request(f))
        for raw in (idle, dripper):
            wait_for(lambda r=raw: r.poll() or b"protocolVersion" in r.received, 10, "answer")  # type: ignore[misc]
            assert not raw.closed
        answered = len(dripper.received)
        dripper.send(b"POST /mcp HTTP/1.1\r\n")

        def dripping() -> bool:
            dripper.send(b"X")
            return dripper.poll() and idle.poll()

        wait_for(dripping, 30, "both connections closed by the front")
        assert b"408 Request Timeout" in dripper.received[answered:]
        # (not a bare b"408": the Date header or a session id may hold those digits)
        assert idle.closed and b"408 Request Timeout" not in idle.received
        for raw in (idle, dripper):
            raw.close()


@parsers
def test_connections_beyond_the_cap_are_refused_and_a_client_gets_through_afterwards(
    serve: Serve, http: str
) -> None:
    """With --max-connections 20: the 21st connection's request is answered 503 with a clear
    message; past twice the cap new connections are closed at once; once the hoarders are
    timed out a normal MCP client works."""
    # the hoarders hold their slots for the header timeout: long enough on a loaded machine
    with front(serve, "--http", http, "--max-connections", "20", "--header-timeout", "6") as f:
        base = open_fds(f)
        hoarders = [Raw.connect(f, b"GET /mcp HTTP/1.1\r\n") for _ in range(20)]
        wait_for(lambda: accepted(f) >= 20, 6, "the front to accept the hoarders")
        refused = Raw.connect(f, request(f))
        wait_for(refused.poll, 10, "the refused connection to be answered and closed")
        assert refused.received.startswith(b"HTTP/1.1 503 ")
        assert b"too many connections" in refused.received
        assert b"--max-connections is 20" in refused.received
        more = [Raw.connect(f, b"GET /mcp HTTP/1.1\r\n") for _ in range(30)]  # to 2x the cap
        wait_for(lambda: all(r.poll() for r in more[20:]), 10, "those past 2x the cap closed")
        assert not any(r.received for r in more[20:])  # unanswered
        wait_for(lambda: all(r.poll() for r in hoarders + more), 30, "the hoarders timed out")
        for raw in [*hoarders, *more, refused]:
            raw.close()
        wait_for(lambda: open_fds(f) <= base + 2, 10, "the front's descriptors back to base")
        sdk_client_works(f)


# -- legacy sessions -------------------------------------------------------------------------


def initialize(conn: http.client.HTTPConnection, f: Listening, path: str) -> tuple[int, str, bytes]:
    headers = {
        "Host": f"127.0.0.1:{f.port}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    conn.request("POST", path, body=INIT, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheader("mcp-session-id") or "", response.read()


@dataclass
class Stream:
    """A session's standalone GET stream, held open (the session is busy while it is)."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse

    @classmethod
    def open(cls, f: Listening, path: str, session: str) -> Stream:
        conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        headers = {
            "Host": f"127.0.0.1:{f.port}",
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-11-25",
        }
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        return cls(conn, response)

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def ping(f: Listening, session: str, path: str) -> int:
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    return post(f, headers, PING, path).status


def open_sessions(f: Listening, path: str, count: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
    try:
        sessions = []
        for _ in range(count):
            status, session, _ = initialize(conn, f, path)
            assert status == 200 and session
            sessions.append(session)
        return sessions
    finally:
        conn.close()


def test_legacy_sessions_share_one_cap_across_urls_and_the_oldest_idle_goes(
    serve: Serve,
) -> None:
    """--max-sessions 10 holds across /mcp and /mcp/echo (it was 10,000 per URL): the 11th
    and 12th sessions drop the two oldest idle ones (404, the client re-initializes); when
    every session is busy (a GET stream open) a new one gets a 503 saying why."""
    with front(serve, "--max-sessions", "10") as f:
        first = open_sessions(f, "/mcp", 6)
        second = open_sessions(f, "/mcp/echo", 6)
        assert [ping(f, s, "/mcp") for s in first] == [404, 404, 200, 200, 200, 200]
        assert [ping(f, s, "/mcp/echo") for s in second] == [200] * 6
        live = [("/mcp", s) for s in first[2:]] + [("/mcp/echo", s) for s in second]
        # every session busy: a standalone GET stream each
        streams = [Stream.open(f, path, session) for path, session in live]
        refused = post(f, {})
        assert refused.status == 503
        assert refused.getheader("retry-after") == "5"
        streams.pop(0).close()  # that session's stream ends: it is idle, so it can go
        conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        wait_for(lambda: initialize(conn, f, "/mcp/echo")[0] == 200, 10, "a session admitted")
        conn.close()
        assert ping(f, live[0][1], live[0][0]) == 404
        assert ping(f, live[1][1], live[1][0]) == 200  # busy: kept
        for stream in streams:
            stream.close()


def test_the_front_refuses_with_a_clear_message_when_every_session_is_busy(serve: Serve) -> None:
    """The 503's body names the limit and what to do."""
    with front(serve, "--max-sessions", "1") as f:
        (session,) = open_sessions(f, "/mcp", 1)
        stream = Stream.open(f, "/mcp", session)
        c2 = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        status, _, body = initialize(c2, f, "/mcp/echo")
        assert status == 503
        message = json.loads(body)["error"]["message"]
        assert "too many MCP sessions" in message and "--max-sessions" in message
        c2.close()
        stream.close()


def test_front_rss_stays_bounded_under_a_flood_of_legacy_sessions(serve: Serve) -> None:
    """1,500 sessions over two URLs with --max-sessions 100 (probe: 20,000 → 830 MB, ~41 kB
    each): the front keeps 100 and its RSS grows by far less than 1,400 more sessions cost."""
    with front(serve, "--max-sessions", "100") as f:
        open_sessions(f, "/mcp", 100)
        warm = rss_mib(f)
        for _ in range(7):
            open_sessions(f, "/mcp", 100)
            open_sessions(f, "/mcp/echo", 100)
        after = rss_mib(f)
        print(f"front RSS: {warm:.1f} MiB at 100 sessions, {after:.1f} MiB after 1,500")
        assert after - warm < 20, (warm, after)  # uncapped, 1,400 more: ~55 MiB
        sdk_client_works(f)


def test_idle_legacy_sessions_expire(serve: Serve) -> None:
    """--session-idle-timeout 1: an idle session answers 404 once it has passed; one with its
    GET stream open is kept."""
    with front(serve, "--session-idle-timeout", "1") as f:
        idle, busy = open_sessions(f, "/mcp", 2)
        stream = Stream.open(f, "/mcp", busy)
        last = time.monotonic()

        def expired() -> bool:
            # A ping is a request, which restarts the idle countdown: ask only once the
            # session has been left alone for twice its timeout.
            nonlocal last
            if time.monotonic() - last < 2:
                return False
            status = ping(f, idle, "/mcp")
            last = time.monotonic()
            return status == 404

        wait_for(expired, 30, "the idle session to expire")
        assert ping(f, busy, "/mcp") == 200
        stream.close()


# -- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origins",
    [
        ("http://evil.example.com", "http://localhost"),
        ("http://localhost", "http://evil.example.com"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_duplicate_origin_headers_are_refused(
    default_front: Front, origins: tuple[str, str]
) -> None:
    """Two Origin headers are a 400 whatever they say (the last one used to decide)."""
    f = default_front
    raw = Raw.connect(f)
    lines = [f"Origin: {o}" for o in origins]
    data = INIT.encode()
    message = head(f, "POST", "/mcp") + "\r\n".join(lines).encode() + b"\r\n"
    message += b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
    message += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    raw.send(message)
    wait_for(raw.poll, 10, "the answer")
    assert raw.received.startswith(b"HTTP/1.1 400 "), raw.received[:200]
    assert b"Duplicate Origin header" in raw.received
    raw.close()


# -- through spctl serve ---------------------------------------------------------------------


def test_spctl_serve_hands_the_limits_to_its_front(tmp_path: Path) -> None:
    """``spctl serve --front-max-sessions 2 --front-header-timeout 1``: the front it starts
    runs with them (a third session drops the first; a silent connection is closed)."""
    servers = [server_entry("echo", "mcp_echo", config={"markers": str(tmp_path)})]
    flags = ["--listen", "127.0.0.1:0", "--front-max-sessions", "2", "--front-header-timeout", "1"]
    s = Serve(tmp_path, make_extensions(tmp_path, [], servers), tmp_path / "run" / "control.sock")
    s.front, s.extra_args = True, flags
    try:
        s.start()
        url = wait_for(
            lambda: (s.try_status() or {}).get("supervisor", {}).get("mcp_front", {}).get("url"),
            30,
            "the front's URL",
        )
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        f = Port(port)
        sessions = open_sessions(f, "/mcp", 3)
        assert [ping(f, sid, "/mcp") for sid in sessions] == [404, 200, 200]
        silent = Raw.connect(f)
        wait_for(silent.poll, 10, "the silent connection closed")
        assert b"408 Request Timeout" in silent.received
        silent.close()
    finally:
        s.stop()
