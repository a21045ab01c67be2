"""The embedded default (the repo's own extensions/) validates, serves and does its job."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO, SPCTL, Serve, wait_for

BACKUP = REPO / "extensions" / "modules" / "backup-daemon" / "__init__.py"


def _backup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backup_daemon_under_test", BACKUP)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validate_accepts_the_embedded_default() -> None:
    out = subprocess.run(
        [SPCTL, "validate", "--extensions", str(REPO / "extensions")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 servers, 1 module" in out.stdout


def test_snapshot_copies_with_excludes_and_prunes(tmp_path: Path) -> None:
    mod = _backup_module()
    src = tmp_path / "src"
    (src / "keep" / "__pycache__").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "b.tmp").write_text("b")
    (src / "keep" / "c.txt").write_text("c")
    (src / "keep" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    dest = tmp_path / "dest"
    snaps = [mod.snapshot(src, dest, ["*.tmp", "__pycache__"], keep=2) for _ in range(3)]
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(p.name for p in snaps[1:])  # the oldest was pruned
    files = sorted(str(p.relative_to(snaps[-1])) for p in snaps[-1].rglob("*") if p.is_file())
    assert files == ["a.txt", "keep/c.txt"]


def test_interval_parsing() -> None:
    mod = _backup_module()
    assert mod.parse_interval("30s") == 30
    assert mod.parse_interval("5m") == 300
    assert mod.parse_interval("250ms") == 0.25
    assert mod.parse_interval(2) == 2
    for bad in ("soon", "-1s", 0, True):
        with pytest.raises(ValueError, match="interval"):
            mod.parse_interval(bad)


def test_serve_runs_the_embedded_default(tmp_path: Path) -> None:
    ext = tmp_path / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        e = s.wait_state("backup-daemon", "running")
        assert e["metadata"]["name"] == "backup-daemon"
        backups = tmp_path / "state" / "extensions" / "backup-daemon" / "backups"
        snap = wait_for(
            lambda: backups.is_dir() and next(backups.iterdir(), None), 10, "a snapshot"
        )
        assert (snap / "README.txt").is_file()
        out = s.spctl("status")
        assert "backup-daemon" in out.stdout and "running" in out.stdout
        # the control socket is private
        assert oct(s.socket.stat().st_mode & 0o777) == "0o600"
        assert oct(s.socket.parent.stat().st_mode & 0o777) == "0o700"
    finally:
        assert s.stop() == 0


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    ext = tmp_path / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = tmp_path / "notify.sock"
    notify.bind(str(addr))
    notify.settimeout(20)
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    env = s.env
    env.update(NOTIFY_SOCKET=str(addr), WATCHDOG_USEC="400000")
    log = open(s.log_path, "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [SPCTL, "serve", "--extensions", str(ext), "--no-front"], env=env, stdout=log, stderr=log
    )
    log.close()
    try:
        seen: list[str] = []

        def until(pred: str) -> str:
            while True:
                msg = notify.recv(4096).decode()
                seen.append(msg)
                if pred in msg:
                    return msg

        ready = until("READY=1")
        assert "STATUS=2 running" in ready
        assert s.ext("backup-daemon")["state"] == "running"
        until("WATCHDOG=1")
        until("WATCHDOG=1")  # fed repeatedly (every WATCHDOG_USEC/2)
        proc.send_signal(15)
        stopping = until("STOPPING=1")
        assert "STOPPING=1" in stopping
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_python_key_selects_the_interpreter(tmp_path: Path) -> None:
    """`python:` runs the worker with that interpreter (here a wrapper that leaves a mark)."""
    from tests.helpers import make_extensions, module_entry

    mark = tmp_path / "used"
    wrapper = tmp_path / "mypython"
    wrapper.write_text(f'#!/bin/sh\necho used > {mark}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    ext = make_extensions(tmp_path, [module_entry("ok", "ok_daemon", python=str(wrapper))])
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("ok", "running")
        assert mark.read_text().strip() == "used"
    finally:
        s.kill()
    assert os.path.exists(mark)


def test_notes_server_does_real_work_offline(tmp_path: Path) -> None:
    ext = tmp_path / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        s.wait_state("notes", "running")
        out = s.spctl(
            "call",
            "notes",
            "add_note",
            "--arg",
            "title=groceries",
            "--arg",
            "body=milk, eggs",
            "--json",
            '{"tags": ["home"]}',
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "saved note #1"
        s.spctl("call", "notes", "add_note", "--arg", "title=work", "--arg", "body=ship spctl")
        found = s.spctl("call", "notes", "search_notes", "--arg", "query=milk").stdout
        assert "#1 groceries [home]" in found
        assert "ship spctl" not in found
        tagged = s.spctl("call", "notes", "search_notes", "--arg", "tag=home").stdout
        assert "groceries" in tagged
        assert s.spctl("call", "notes", "delete_note", "--arg", "id=1").returncode == 0
        missing = s.spctl("call", "notes", "get_note", "--arg", "id=1")
        assert missing.returncode == 1
        assert "no note #1" in missing.stdout
        bad = s.spctl("call", "notes", "get_note", "--arg", "id=one")
        assert bad.returncode == 1
        assert "id must be an integer" in bad.stderr
        assert (tmp_path / "state" / "extensions" / "notes" / "notes.db").is_file()
        # the notes survive a restart of the server
        assert s.spctl("restart", "notes").returncode == 0
        assert "ship spctl" in s.spctl("call", "notes", "search_notes").stdout
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_serve_runs_the_mcp_front_and_restarts_it(tmp_path: Path, mode: str) -> None:
    """`spctl serve` starts the MCP front itself; an MCP client (the official SDK) reaches the
    notes server on /mcp; a killed front is restarted by the core."""
    import anyio
    from mcp import Client

    ext = tmp_path / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    try:
        s.start()
        s.wait_state("notes", "running")

        def front() -> dict[str, object] | None:
            st = s.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return f if f and f["state"] == "running" else None

        info = wait_for(front, 30, "the MCP front")
        url = str(info["url"])

        async def body() -> None:
            async with Client(url, mode=mode) as c:
                tools = [t.name for t in (await c.list_tools()).tools]
                assert "notes__add_note" in tools
                result = await c.call_tool("notes__add_note", {"title": "via mcp", "body": "hi"})
                assert not result.is_error
            async with Client(url.replace("/mcp", "/mcp/notes"), mode=mode) as c:
                found = await c.call_tool("search_notes", {"query": "via"})
                assert "via mcp" in found.content[0].text  # type: ignore[union-attr]

        anyio.run(body)
        os.kill(int(info["pid"]), 9)  # type: ignore[call-overload]
        again = wait_for(
            lambda: (f := front()) and f["pid"] not in (None, info["pid"]) and f, 30, "restart"
        )
        assert again["restarts"] >= 1
    finally:
        assert s.stop() == 0


class _WeatherApi:
    """A local stand-in for wttr.in's JSON API (127.0.0.1 only)."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        seen: list[str] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = json.dumps(
                    {
                        "current_condition": [
                            {
                                "temp_C": "12",
                                "temp_F": "54",
                                "humidity": "81",
                                "windspeedKmph": "15",
                                "windspeedMiles": "9",
                                "weatherDesc": [{"value": "Light rain"}],
                            }
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{{location}}?format=j1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_weather_server_against_a_local_api_and_without_network(tmp_path: Path) -> None:
    import yaml

    api = _WeatherApi()
    ext = tmp_path / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    doc = yaml.safe_load((ext / "servers.yaml").read_text())
    for entry in doc["servers"]:
        if entry["name"] == "weather":
            entry["config"]["apiUrl"] = api.url
    doc["servers"].append(
        {
            "name": "weather-offline",
            "type": "local",
            "path": "./servers/weather",
            "config": {"apiUrl": "http://127.0.0.1:1/{location}", "httpTimeout": 2},
        }
    )
    (ext / "servers.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        # lazy: started once to learn its tools (listed from then on), then stopped
        wait_for(lambda: "weather__get_weather" in s.spctl("tools").stdout, 30, "weather listed")
        s.wait_state("weather", "stopped")
        out = s.spctl("call", "weather", "get_weather", "--arg", "location=San Francisco")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "San Francisco: Light rain, 12 °C, humidity 81%, wind 15 km/h"
        assert api.seen == ["/San%20Francisco?format=j1"]
        s.wait_state("weather-offline", "running")
        down = s.spctl("call", "weather-offline", "get_weather", "--arg", "location=Paris")
        assert down.returncode == 1
        assert "no weather: the weather service is unreachable" in down.stdout
    finally:
        s.kill()
        api.close()
