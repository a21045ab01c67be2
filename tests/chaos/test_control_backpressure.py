"""A control client that pipelines requests and reads nothing is cut off once the answers it
leaves unread pass the cap; the supervisor does not buffer them without bound (3,000 `logs`
requests used to pile up 1.9 GB, and the next `spctl status` took seconds)."""

from __future__ import annotations

import socket
from pathlib import Path

import msgpack

from supervisor.control.server import MAX_UNSENT
from tests.helpers import Serve, make_extensions, module_entry, wait_for


def test_a_client_that_reads_nothing_is_cut_off(tmp_path: Path) -> None:
    # one 64 KiB line (a longer one is cut there) in its log: each `logs` answer carries it
    mods = [module_entry("big", "bigline", config={"size": 100_000})]
    s = Serve(tmp_path, make_extensions(tmp_path, mods), tmp_path / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("big", "running")
        wait_for(lambda: "[line cut]" in s.spctl("logs", "big").stdout, 20, "the long line")
        hog = socket.socket(socket.AF_UNIX)
        hog.connect(str(s.socket))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ask = [msgpack.packb([0, i, "logs", ["big", 1000, False]]) for i in range(3000)]
        requests = b"".join(ask)
        assert 2 * MAX_UNSENT < 3000 * 64 * 1024  # far more than the cap is asked for
        hog.settimeout(30)
        hog.sendall(requests)
        assert s.call("ping") == "pong"  # others are served meanwhile
        wait_for(
            lambda: any(e.get("event") == "control connection cut off" for e in s.logs()),
            30,
            "the reader-less client to be cut off",
        )
        got = 0  # what reached us before the cut is bounded by the cap and the socket buffers
        while chunk := _recv(hog):
            got += len(chunk)
        assert got < 2 * MAX_UNSENT, got
        hog.close()
        assert s.call("ping") == "pong"
        assert s.stop() == 0
    finally:
        s.kill()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except ConnectionResetError:
        return b""
