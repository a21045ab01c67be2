"""The front's /metrics, /healthz and /readyz and ``spctl status --check``, on a real
``spctl serve`` with its supervised front, real workers and a bearer token.

/metrics is read with prometheus-client's own parser and compared with what
``spctl status --json`` says at the same moment (the front keeps no copy of its own).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from supervisor.rules.states import INSTALLING, State
from tests.helpers import Serve, make_extensions, module_entry, server_entry, wait_for

TOKEN = "obs-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Env:
    serve: Serve
    port: int

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=AUTH if headers is None else headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """name of each sample → its labels (sorted pairs) → value."""
        status, body = self.get("/metrics")
        assert status == 200, body
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[labels] = sample.value
        return out

    def status(self) -> dict[str, Any]:
        done = self.serve.spctl("status", "--json")
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def ext(self, name: str) -> dict[str, Any]:
        return next(e for e in self.status()["extensions"] if e["name"] == name)


def _front_port(serve: Serve) -> int | None:
    st = serve.try_status()
    front = st["supervisor"]["mcp_front"] if st else None
    if not front or front["state"] != "running" or not front.get("url"):
        return None
    return urllib.parse.urlsplit(front["url"]).port


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("obs")
    servers = [
        server_entry("echo", "mcp_echo"),
        server_entry("victim", "mcp_echo"),
        server_entry("sleepy", "mcp_echo", lazy=True),
        server_entry("passing", "mcp_echo"),
    ]
    modules = [module_entry("daemon", "ok_daemon")]
    token = root / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    serve = Serve(root, make_extensions(root, modules, servers), root / "run" / "control.sock")
    serve.front = True
    serve.extra_args = ["--listen", "127.0.0.1:0", "--token-file", str(token)]
    try:
        serve.start()
        for name in ("echo", "victim", "daemon", "passing"):
            serve.wait_state(name, "running")
        port = wait_for(lambda: _front_port(serve), 60, f"the front (log: {serve.log_path})")
        yield Env(serve, port)
    finally:
        serve.stop()


def call_tools(env: Env, calls: list[tuple[str, dict[str, Any]]]) -> list[bool]:
    """Each (tool, arguments) through the front with the token; isError of each (an MCP error
    counts as True)."""

    async def body() -> list[bool]:
        out = []
        http = httpx2.AsyncClient(headers=AUTH)
        url = f"http://127.0.0.1:{env.port}/mcp"
        async with http, Client(streamable_http_client(url, http_client=http)) as c:
            for tool, arguments in calls:
                try:
                    result = await c.call_tool(tool, arguments)
                    out.append(bool(result.is_error))
                except MCPError:
                    out.append(True)
        return out

    return anyio.run(body)


# -- the guard --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({**AUTH, "Host": "evil.example.com"}, 421),
        ({**AUTH, "Origin": "http://evil.example.com"}, 403),
        (AUTH, 200),
    ],
)
def test_every_endpoint_is_behind_the_guard(
    env: Env, path: str, headers: dict[str, str], status: int
) -> None:
    if status == 200 and path == "/readyz":
        wait_for(lambda: env.get(path)[0] == 200, 20, "ready")  # a test may have killed one
    got, body = env.get(path, headers)
    assert got == status, body
    if status != 200:
        assert b"obs-token" not in body


# -- /healthz and /readyz ---------------------------------------------------------------------


def test_healthz_says_ok_while_the_core_answers(env: Env) -> None:
    status, body = env.get("/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_readyz_ignores_a_lazy_server_that_has_not_started(env: Env) -> None:
    assert env.ext("sleepy")["state"] == "stopped"
    status, body = env.get("/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready", "not_ready": []})
    done = env.serve.spctl("status", "--check")
    assert (done.returncode, done.stdout.strip()) == (0, "ready")


def test_readyz_flips_within_a_second_of_a_death_and_back(env: Env) -> None:
    wait_for(lambda: env.get("/readyz")[0] == 200, 20, "ready before the kill")
    pid = env.ext("daemon")["pid"]
    stop_here = env.serve.spctl("stop", "daemon")  # stopped by hand: not ready, reason given
    assert stop_here.returncode == 0, stop_here.stderr
    status, body = env.get("/readyz")
    assert status == 503
    (who,) = json.loads(body)["not_ready"]
    assert (who["name"], who["state"]) == ("daemon", "stopped")
    check = env.serve.spctl("status", "--check")
    assert check.returncode == 1
    assert check.stdout.startswith("not ready: daemon is stopped"), check.stdout
    as_json = json.loads(env.serve.spctl("status", "--check", "--json").stdout)
    assert as_json["ready"] is False
    assert [w["name"] for w in as_json["not_ready"]] == ["daemon"]

    assert env.serve.spctl("start", "daemon").returncode == 0
    wait_for(lambda: env.get("/readyz")[0] == 200, 20, "ready after start")
    pid = env.ext("daemon")["pid"]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # The deadline is the contract: 503 within 1 s of the worker's death.
    wait_for(lambda: env.get("/readyz")[0] == 503, 1.0, "503 within 1 s of a kill -9")
    wait_for(lambda: env.get("/readyz")[0] == 200, 30, "200 once it runs again")
    assert env.serve.spctl("status", "--check").returncode == 0


# -- /metrics ---------------------------------------------------------------------------------


def test_extension_metrics_match_status_json(env: Env) -> None:
    metrics = env.metrics()
    status = env.status()
    for ext in status["extensions"]:
        name = ext["name"]
        key = (("extension", name),)
        assert metrics["spctl_extension_up"][key] == (1.0 if ext["state"] == "running" else 0.0)
        hot = {
            dict(labels)["state"]
            for labels, value in metrics["spctl_extension_state"].items()
            if dict(labels)["extension"] == name and value == 1.0
        }
        assert hot == {ext["state"]}
        every = {
            dict(labels)["state"]
            for labels in metrics["spctl_extension_state"]
            if dict(labels)["extension"] == name
        }
        assert every == {s.value for s in State} | {INSTALLING}
        assert metrics["spctl_extension_restarts_total"][key] == ext["restarts"]
        if ext["start_duration"] is None:  # never started (lazy)
            assert key not in metrics["spctl_extension_start_duration_seconds"]
        else:
            assert metrics["spctl_extension_start_duration_seconds"][key] == ext["start_duration"]
            assert 0 < ext["start_duration"] < 60
        if ext["usage"]:
            # RSS and processes move between two reads; a scrape is its own moment.
            assert metrics["spctl_extension_memory_bytes"][key] > 0
            assert metrics["spctl_extension_processes"][key] == ext["usage"]["processes"]
            assert metrics["spctl_extension_cpu_seconds_total"][key] >= 0
        else:
            assert key not in metrics.get("spctl_extension_memory_bytes", {})
    about = status["supervisor"]
    assert metrics["spctl_supervisor_memory_bytes"][()] > 0
    assert metrics["spctl_supervisor_cpu_seconds_total"][()] <= about["cpu_seconds"] + 5
    assert metrics["spctl_supervisor_uptime_seconds"][()] > 0
    assert metrics["spctl_front_restarts_total"][()] == about["mcp_front"]["restarts"]
    assert metrics["spctl_front_process_resident_memory_bytes"][()] > 0


def test_usage_matches_status_when_sampled_together(env: Env) -> None:
    """Memory and CPU are the core's sample: two reads inside its cache period agree."""

    def agree() -> bool:
        metrics = env.metrics()
        ext = env.ext("echo")
        key = (("extension", "echo"),)
        return bool(ext["usage"]) and (
            metrics["spctl_extension_memory_bytes"][key] == ext["usage"]["rss"]
            and metrics["spctl_extension_cpu_seconds_total"][key] == ext["usage"]["cpu_seconds"]
        )

    wait_for(agree, 20, "one sample seen by /metrics and status --json")


def test_a_crash_shows_in_restarts_total(env: Env) -> None:
    key = (("extension", "victim"),)
    signalled = (("extension", "victim"), ("reason", "signal"))
    before = env.metrics()["spctl_extension_restarts_total"][key]
    crashes = env.metrics()["spctl_extension_crashes_total"][signalled]
    pid = env.ext("victim")["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        ext = env.ext("victim")
        return ext["state"] == "running" and ext["pid"] != pid

    wait_for(restarted, 30, "victim restarted")
    metrics = env.metrics()
    assert metrics["spctl_extension_restarts_total"][key] == before + 1
    assert metrics["spctl_extension_restarts_total"][key] == env.ext("victim")["restarts"]
    assert metrics["spctl_extension_up"][key] == 1.0
    assert metrics["spctl_extension_crashes_total"][signalled] == crashes + 1
    assert env.ext("victim")["crashes"]["signal"] == crashes + 1


def test_a_hung_worker_is_counted_as_a_health_crash(tmp_path: Path) -> None:
    """Killed for missed health pings: the crash counts under ``health``, not ``signal``."""
    ext = make_extensions(tmp_path, [], [server_entry("stuck", "mcp_echo")])
    serve = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    serve.extra_args = ["--health-interval", "0.3", "--health-timeout", "0.5"]
    try:
        serve.start()
        pid = serve.wait_state("stuck", "running")["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive, answering nothing
        crashes = wait_for(
            lambda: serve.ext("stuck").get("crashes", {}).get("health"), 30, "a health crash"
        )
        assert crashes == 1
        assert not serve.ext("stuck")["crashes"].get("signal")
    finally:
        serve.stop()


def test_operations_are_measured_with_bounded_labels(env: Env) -> None:
    errors = call_tools(
        env,
        [
            ("echo__echo", {"text": "a"}),
            ("echo__echo", {"text": "b"}),
            ("echo__boom", {}),
            ("echo__no-such-tool", {}),
            ("made-up-name", {}),
        ],
    )
    assert errors == [False, False, True, True, True]
    counts = {
        dict(labels)["gen_ai_tool_name"]: (dict(labels), value)
        for labels, value in env.metrics()["mcp_server_operation_duration_seconds_count"].items()
        if dict(labels)["mcp_method_name"] == "tools/call"
    }
    ok = counts["echo"]
    assert ok[0] == {
        "mcp_method_name": "tools/call",
        "gen_ai_tool_name": "echo",
        "error_type": "",
        "extension": "echo",
    }
    assert ok[1] >= 2
    assert counts["boom"][0]["error_type"] in ("tool_error", "-32603")
    assert counts["other"][0]["error_type"] == "-32602"  # unknown tool: folded, never named
    assert not any("no-such-tool" in t or "made-up" in t for t in counts)
    metrics = env.metrics()
    assert metrics["mcp_server_operations_in_flight"][(("mcp_method_name", "tools/call"),)] == 0
    buckets = metrics["mcp_server_operation_duration_seconds_bucket"]
    inf = [v for labels, v in buckets.items() if dict(labels).get("le") == "+Inf"]
    assert inf and all(v >= 1 for v in inf)


def test_probes_say_503_when_the_core_does_not_answer(tmp_path: Path) -> None:
    """A stopped core (SIGSTOP: alive, answering nothing) makes every probe 503 once the
    front's probe deadline passes, and 200 again when it goes on."""
    from tests.e2e.test_mcp_front import start_front

    ext = make_extensions(tmp_path, [], [server_entry("echo", "mcp_echo")])
    serve = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    front = None
    try:
        serve.start()
        serve.wait_state("echo", "running")
        front = start_front(serve.socket, tmp_path / "front.log")
        probe = Env(serve, front.port)
        assert probe.get("/healthz", {})[0] == 200
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGSTOP)
        try:
            for path in ("/healthz", "/readyz", "/metrics"):
                status, body = probe.get(path, {})
                assert status == 503, body
                assert "unreachable" in json.loads(body)["reason"]
        finally:
            serve.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: probe.get("/healthz", {})[0] == 200, 20, "healthy again")
    finally:
        if front is not None:
            front.stop()
        serve.stop()


def test_a_tool_leaves_the_labels_when_it_leaves_the_catalog(env: Env) -> None:
    def tools() -> set[str]:
        counts = env.metrics().get("mcp_server_operation_duration_seconds_count", {})
        return {dict(k)["gen_ai_tool_name"] for k in counts if dict(k)["extension"] == "passing"}

    assert call_tools(env, [("passing__echo", {"text": "x"})]) == [False]
    assert tools() == {"echo"}
    try:
        assert env.serve.spctl("stop", "passing").returncode == 0
        wait_for(lambda: not tools(), 10, "the series gone with the catalog")
    finally:
        assert env.serve.spctl("start", "passing").returncode == 0


def test_metrics_content_type_is_the_classic_text_format(env: Env) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=AUTH)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        conn.close()


def test_a_cancelled_call_is_counted_as_cancelled(env: Env) -> None:
    def cancelled() -> float:
        labels = {
            "mcp_method_name": "tools/call",
            "gen_ai_tool_name": "slow",
            "error_type": "cancelled",
            "extension": "echo",
        }
        counts = env.metrics().get("mcp_server_operation_duration_seconds_count", {})
        return counts.get(tuple(sorted(labels.items())), 0.0)

    before = cancelled()

    async def body() -> None:
        http = httpx2.AsyncClient(headers=AUTH)
        url = f"http://127.0.0.1:{env.port}/mcp"
        async with http, Client(streamable_http_client(url, http_client=http)) as c:
            with anyio.move_on_after(0.5):
                await c.call_tool("echo__slow", {"seconds": 30})

    anyio.run(body)
    wait_for(lambda: cancelled() == before + 1, 10, "the cancelled call in the histogram")
    in_flight = env.metrics()["mcp_server_operations_in_flight"]
    assert in_flight[(("mcp_method_name", "tools/call"),)] == 0
