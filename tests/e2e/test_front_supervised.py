"""The real MCP front under a real ``spctl serve``: health-pinged like a worker, shown in
``spctl status`` like an extension (kind ``front``)."""

from __future__ import annotations

import json
import os
import signal
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from tests.helpers import Serve, make_extensions, pid_gone, server_entry, wait_for


def running_front(s: Serve, not_pid: int | None = None) -> dict[str, Any] | None:
    st = s.try_status()
    f = st["supervisor"]["mcp_front"] if st else None
    if f and f["state"] == "running" and f["pid"] not in (None, not_pid):
        return dict(f)
    return None


def echo_through(url: str) -> str:
    async def body() -> str:
        async with Client(url) as c:
            result = await c.call_tool("echo__echo", {"text": "hi"})
            return str(result.content[0].text)  # type: ignore[union-attr]

    return anyio.run(body)


def test_a_hung_front_is_killed_by_the_health_ping_and_comes_back(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [], [server_entry("echo", "mcp_echo")])
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0", "--health-interval", "0.5"]
    s.extra_args += ["--health-timeout", "1"]
    try:
        s.start()
        s.wait_state("echo", "running")
        first = wait_for(lambda: running_front(s), 60, "the MCP front")
        assert first["kind"] == "front"
        assert first["name"] == "mcp-front"
        assert first["restarts"] == 0
        assert urllib.parse.urlsplit(first["url"]).path == "/mcp"
        assert echo_through(first["url"]) == "hi"

        table = s.spctl("status")
        assert table.returncode == 0, table.stderr
        row = next(line.split() for line in table.stdout.splitlines() if "mcp-front" in line)
        assert row[:4] == ["mcp-front", "front", "running", str(first["pid"])]
        assert row[-1] == first["url"]  # "listening on <url>"
        js = json.loads(s.spctl("status", "--json").stdout)
        assert js["supervisor"]["mcp_front"]["kind"] == "front"

        os.kill(first["pid"], signal.SIGSTOP)  # alive, but its loop answers nothing
        again = wait_for(lambda: running_front(s, first["pid"]), 60, "the front restarted")
        assert pid_gone(first["pid"])
        assert again["restarts"] == 1
        assert again["last_exit"].startswith("health check timeout")
        assert echo_through(again["url"]) == "hi"
    finally:
        assert s.stop() == 0
