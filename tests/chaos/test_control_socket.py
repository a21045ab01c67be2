"""The control socket under attack from a local client: what it buffers is bounded and given
back, a stalled frame is cut off, and ``status`` keeps answering meanwhile.

Used to be (issue #17): 30 connections each sending a legal 15 MiB frame minus 10 bytes and
stalling held +486 MiB in the supervisor, never given back after they closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from tests.helpers import Serve, make_extensions, module_entry, server_entry, wait_for

MiB = 1 << 20


def _rss(pid: int) -> int:
    """The process's resident set in bytes (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the supervisor has closed ``sock`` (EOF or reset); never blocks."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # (MSG_DONTWAIT alone would still wait out the socket's timeout)
    try:
        data = sock.recv(1 << 16)
    except BlockingIOError:  # nothing to read yet: still open
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.settimeout(timeout)
    return data == b""


def _wait_cut_off_logged(s: Serve, reason: str) -> None:
    """Wait for the "control connection cut off" line whose reason holds ``reason``: it is
    logged once the connection is closed, in a later loop step (do not race it)."""
    wait_for(
        lambda: any(
            e.get("event") == "control connection cut off" and reason in e.get("reason", "")
            for e in s.logs()
        ),
        5,
        f"the cut-off logged with {reason!r} in its reason",
    )


def _send(sock: socket.socket, data: bytes) -> bool:
    """sendall, True unless the supervisor closed the connection meanwhile."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))  # blocking: waits for room in the listen backlog
    sock.settimeout(30)
    return sock


Connect = Callable[[Path], socket.socket]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(path)``: a blocking client socket, closed when the test ends."""
    opened: list[socket.socket] = []

    def connect_(path: Path) -> socket.socket:
        opened.append(_connect(path))
        return opened[-1]

    yield connect_
    for sock in opened:
        sock.close()


def _ask(sock: socket.socket, msgid: int, method: str, *params: object) -> object:
    """One request, its answer (a bare-socket client: no library retries or framing help)."""
    sock.sendall(msgpack.packb([0, msgid, method, list(params)]))
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        chunk = sock.recv(1 << 16)
        assert chunk, f"connection closed before the answer to {method}"
        unpacker.feed(chunk)
        for message in unpacker:
            assert message[0] == 1 and message[1] == msgid, message
            return message[3] if message[2] is None else message[2]


@contextlib.contextmanager
def _serve(tmp_path: Path, **env: str) -> Iterator[Serve]:
    mods = [module_entry("quiet", "ok_daemon")]
    s = Serve(tmp_path, make_extensions(tmp_path, mods), tmp_path / "run" / "control.sock")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Serve.env copies os.environ at start
    try:
        s.start()
        s.wait_state("quiet", "running")
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s.kill()


def _near_cap_frame() -> bytes:
    """A legal request of 15 MiB (under the 16 MiB frame cap), the kind an MCP call may be."""
    args = {"name": "echo", "arguments": {"blob": b"\0" * (15 * MiB)}}
    return msgpack.packb([0, 7, "mcp", ["quiet", "tools/call", args, {}]])


class TestBoundedPartialFrames:
    """Stalled partial frames cost a bounded amount of memory, for a bounded time."""

    def test_stalled_near_cap_frames_are_cut_off_and_the_memory_is_given_back(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        with _serve(tmp_path, SPCTL_CONTROL_FRAME_TIMEOUT="2") as s:
            assert s.proc is not None
            pid = s.proc.pid
            for _ in range(20):  # warm up: the status path's allocations are made once
                assert s.try_status() is not None
            start = _rss(pid)
            frame = _near_cap_frame()[:-10]  # all but the last 10 bytes: it never completes
            conns = [connect(s.socket) for _ in range(30)]
            # half of them first subscribe as an MCP face would (the front, `spctl mcp`):
            # those may send whole 16 MiB frames, the others only small requests
            for i, c in enumerate(conns[:15]):
                assert "version" in _ask(c, i, "mcp_watch")
            peak = start
            for c in conns:
                _send(c, frame)
                peak = max(peak, _rss(pid))
                assert s.try_status() is not None  # status answers while the attack runs
            print(
                f"\nRSS start {start / MiB:.1f} MiB, with 30 stalled frames {_rss(pid) / MiB:.1f}"
            )
            status = s.try_status()
            assert status is not None and s.ext("quiet")["state"] == "running"
            wait_for(
                lambda: all(_closed_by_peer(c) for c in conns), 20, "every stalled frame cut off"
            )
            for c in conns:
                c.close()  # (closing again at the end of the test is harmless)
            after = wait_for(
                lambda: (r := _rss(pid)) < start + 16 * MiB and r,
                10,
                f"RSS back near {start / MiB:.0f} MiB (now {_rss(pid) / MiB:.0f} MiB)",
            )
            print(
                f"\nRSS start {start / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, "
                f"after close {after / MiB:.1f} MiB"
            )
            assert peak < start + 128 * MiB, (start, peak)
            assert s.call("ping") == "pong"
            cut = [e for e in s.logs() if e.get("event") == "control connection cut off"]
            assert len(cut) >= 30, cut[:3]
            reasons = " ".join(e["reason"] for e in cut)
            # plain connections at 1 MiB, MCP faces by the 64 MiB budget, the rest timed out
            assert "frame exceeds 1 MiB cap" in reasons, reasons[:500]
            assert "budget for unfinished frames" in reasons, reasons[:500]
            assert "partial frame stalled" in reasons, reasons[:500]
            assert s.stop() == 0

    def test_rounds_of_stalled_requests_under_the_cap_leave_the_rss_where_it_was(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        """60 plain connections, each 100 bytes short of a 1 MiB request, three times over."""
        with _serve(tmp_path, SPCTL_CONTROL_FRAME_TIMEOUT="1") as s:
            assert s.proc is not None
            pid = s.proc.pid
            for _ in range(20):
                assert s.try_status() is not None
            start = _rss(pid)
            blob = {"a": b"\0" * MiB}
            frame = msgpack.packb([0, 1, "call", ["quiet", "t", blob]])[: MiB - 100]
            for round_ in range(3):
                conns = [connect(s.socket) for _ in range(60)]
                for c in conns:
                    assert _send(c, frame)  # under the cap: held until the timeout
                assert s.try_status() is not None
                cut = lambda conns=conns: all(_closed_by_peer(c) for c in conns)  # noqa: E731
                wait_for(cut, 20, "all cut off")
                for c in conns:
                    c.close()
                wait_for(
                    lambda: _rss(pid) < start + 8 * MiB,
                    10,
                    f"RSS back near {start / MiB:.0f} MiB after round {round_} "
                    f"(now {_rss(pid) / MiB:.0f} MiB)",
                )

    def test_a_partial_frame_over_the_connection_cap_is_cut_off_at_once(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        with _serve(tmp_path) as s:  # the default frame timeout (10 s) is far off
            c = connect(s.socket)
            sent = _send(c, _near_cap_frame()[: 2 * MiB])
            wait_for(lambda: not sent or _closed_by_peer(c), 5, "the 2 MiB partial frame cut off")
            _wait_cut_off_logged(s, "1 MiB")
            assert s.call("ping") == "pong"

    def test_a_stalled_partial_frame_is_closed_after_the_timeout(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        with _serve(tmp_path, SPCTL_CONTROL_FRAME_TIMEOUT="0.5") as s:
            idle, stalled = connect(s.socket), connect(s.socket)
            request = msgpack.packb([0, 1, "status", [None]])
            stalled.sendall(request[: len(request) // 2])
            wait_for(lambda: _closed_by_peer(stalled), 10, "the stalled connection closed")
            _wait_cut_off_logged(s, "stalled")
            # an idle connection (no partial frame) is not cut off: it is served as before
            assert not _closed_by_peer(idle)
            assert _ask(idle, 1, "ping") == "pong"

    def test_a_slow_but_complete_request_is_served(self, tmp_path: Path, connect: Connect) -> None:
        """Sent in pieces, each well within the timeout: nothing is cut."""
        with _serve(tmp_path, SPCTL_CONTROL_FRAME_TIMEOUT="5") as s:
            c = connect(s.socket)
            request = msgpack.packb([0, 3, "ping", []])
            c.sendall(request[:2])
            assert s.call("ping") == "pong"  # a round trip elsewhere while this one is partial
            c.sendall(request[2:])
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(c.recv(1 << 16))
            assert next(unpacker) == [1, 3, None, "pong"]


class TestMcpFacesSendWholeFrames:
    """The 1 MiB cap is for plain control requests: an MCP face's tool arguments may be large."""

    def test_a_3_mib_tool_argument_passes_on_a_face_and_is_cut_on_a_plain_connection(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        servers = [server_entry("echo", "mcp_echo", config={"markers": str(tmp_path)})]
        s = Serve(
            tmp_path, make_extensions(tmp_path, [], servers), tmp_path / "run" / "control.sock"
        )
        try:
            s.start()
            s.wait_state("echo", "running")
            text = "x" * (3 * MiB)
            call = ["echo", "tools/call", {"name": "echo", "arguments": {"text": text}}, {}]
            face = connect(s.socket)
            assert "version" in _ask(face, 1, "mcp_watch")
            result = _ask(face, 2, "mcp", *call)
            assert result["content"][0]["text"] == text, str(result)[:200]
            plain = connect(s.socket)
            _send(plain, msgpack.packb([0, 1, "mcp", call]))
            wait_for(lambda: _closed_by_peer(plain), 5, "the plain connection cut off")
            assert s.call("ping") == "pong"
        finally:
            s.kill()


class TestHeldWell:
    """What held before the bounds and must keep holding."""

    @pytest.mark.parametrize(
        "garbage",
        # The random bytes start with 0xc1, a byte msgpack never uses: random bytes afresh on
        # each run began with the head of an unfinished frame in 3 % of runs, which is
        # cut only at the frame timeout (10 s; the stalled-frame tests above cover that).
        [
            b"\xc1" + random.Random(4096).randbytes(4095),
            b"\xc6\xff\xff\xff\xff" + b"\0" * 64,
            b"\xdd\xff\xff\xff\xff",
        ],
        ids=["random bytes", "bin32 of 4 GiB", "array32 of 4G items"],
    )
    def test_garbage_is_cut_off(self, tmp_path: Path, connect: Connect, garbage: bytes) -> None:
        with _serve(tmp_path) as s:
            c = connect(s.socket)
            _send(c, garbage)
            wait_for(lambda: _closed_by_peer(c), 5, "the garbage-sending connection closed")
            assert s.call("ping") == "pong"

    def test_500_idle_connections_leave_status_unchanged(
        self, tmp_path: Path, connect: Connect
    ) -> None:
        with _serve(tmp_path) as s:
            before = s.ext("quiet")
            idle = [connect(s.socket) for _ in range(500)]
            after = s.ext("quiet")
            assert (after["state"], after["pid"]) == (before["state"], before["pid"])
            assert _ask(idle[-1], 1, "ping") == "pong"


class TestExtensionsAreRefused:
    """A process of an extension's tree or cgroup is refused whatever its uid (here: root)."""

    @pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "no-cgroups"])
    def test_a_worker_and_its_double_forked_orphan_cannot_stop_a_neighbour(
        self, tmp_path: Path, cgroups: bool
    ) -> None:
        out = tmp_path / "report.json"
        sock = tmp_path / "run" / "control.sock"
        probe = {"socket": str(sock), "victim": "victim", "out": str(out)}
        mods = [
            module_entry("victim", "ok_daemon"),
            module_entry("intruder", "control_peer", config=probe, dependsOn=["victim"]),
        ]
        extra = [] if cgroups else ["--no-cgroups"]
        s = Serve(tmp_path, make_extensions(tmp_path, mods), sock, extra_args=extra)
        try:
            s.start()
            text = wait_for(lambda: out.exists() and out.read_text(), 30, "the intruder's report")
            report = json.loads(text)
            intruder = s.wait_state("intruder", "running")
            assert s.ext("victim")["state"] == "running"  # neither attempt stopped it
            direct, orphan = report["direct"], report["orphan"]
            tree = f"pid {intruder['pid']} is in extension intruder's process tree"
            assert direct == {
                "pid": intruder["pid"],
                "ppid": s.proc.pid if s.proc else None,
                "outcome": "error",
                "message": f"refused: {tree}",
            }, report
            assert orphan["outcome"] == "error", report
            assert orphan["ppid"] == s.proc.pid if s.proc else None  # adopted by the subreaper
            mode = s.try_status()["supervisor"]["limits_enforcement"]  # type: ignore[index]
            if mode.startswith("cgroup"):
                want = f"refused: pid {orphan['pid']} is in extension intruder's cgroup"
            else:
                want = (
                    f"refused: pid {orphan['pid']} was adopted by the supervisor: "
                    "a process an extension left behind"
                )
            assert orphan["message"] == want, (mode, report)
            refused = [e for e in s.logs() if e.get("event") == "control connection refused"]
            reasons = {e["peer_pid"]: "refused: " + e["reason"] for e in refused}
            assert reasons == {direct["pid"]: direct["message"], orphan["pid"]: want}, refused
            # the operator's CLI (not a descendant of the supervisor) is let in
            r = s.spctl("stop", "victim")
            assert r.returncode == 0, r.stderr
            s.wait_state("victim", "stopped")
            assert s.stop() == 0
        finally:
            s.kill()
