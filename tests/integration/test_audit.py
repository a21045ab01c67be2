"""The audit log on a real ``spctl serve``: every routed call is one line of
``<state dir>/audit.jsonl``, nothing lost, no argument values unless asked for and never a
secret; rotation keeps its cap; ``spctl audit`` reads and filters it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from supervisor.control.client import ControlClient, RpcError
from tests.helpers import SPCTL, Serve, make_extensions, module_entry, server_entry, wait_for

SECRET = "s3cr3t-do-not-log-7f3a"
CALLS = 1000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def entries() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kv = module_entry("kv-store", "plugin_kv", moduleType="plugin", provides=["kv"])
    return [kv], [server_entry("echo", "mcp_echo"), server_entry("other", "mcp_echo")]


def start(root: Path, *args: str) -> Serve:
    modules, servers = entries()
    ext = make_extensions(root, modules, servers)
    s = Serve(root, ext, root / "run" / "control.sock", extra_args=list(args))
    s.start()
    for name in ("echo", "other", "kv-store"):
        s.wait_state(name, "running")
    return s


def audit_path(s: Serve) -> Path:
    return s.root / "state" / "audit.jsonl"


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_records(path: Path, n: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        got = records(path)
        return got if len(got) >= n else None

    return wait_for(enough, 20, f"{n} records in {path}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    s = start(tmp_path_factory.mktemp("audit-plain"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    s = start(tmp_path_factory.mktemp("audit-bodies"), "--audit-bodies", "--audit-max-bytes=8192")
    try:
        yield s
    finally:
        s.stop()


def test_a_thousand_calls_are_a_thousand_lines_without_arguments(plain: Serve) -> None:
    args = {"text": SECRET}
    with ControlClient(plain.socket, timeout=30) as c:
        for _ in range(CALLS):
            assert c.call("call", "echo", "echo", args)["content"][0]["text"] == SECRET
    got = wait_records(audit_path(plain), CALLS)
    assert len(got) == CALLS
    assert len({r["seq"] for r in got}) == CALLS
    me = f"cli uid={os.getuid()} pid={os.getpid()}"
    assert all(
        r["client"] == me
        and r["extension"] == "echo"
        and r["method"] == "tools/call"
        and r["tool"] == "echo"
        and r["outcome"] == "ok"
        and r["duration_ms"] >= 0
        and r["time"].endswith("Z")
        for r in got
    )
    assert SECRET not in audit_path(plain).read_text()
    assert stat.S_IMODE(audit_path(plain).stat().st_mode) == 0o600


def test_faces_errors_services_and_trace_context(plain: Serve) -> None:
    path = audit_path(plain)
    before = len(records(path))
    meta = {"traceparent": TRACEPARENT}
    with ControlClient(plain.socket, timeout=30) as c:
        c.call("mcp", "other", "tools/call", {"name": "boom", "arguments": {}}, meta)
        c.call("mcp", "other", "resources/read", {"uri": "echo://readme"}, {"client": "alice"})
        c.call("mcp", "other", "prompts/get", {"name": "greet", "arguments": {"name": "x"}}, {})
        c.call("mcp", "other", "tools/list", {}, {})  # not audited: names no tool
        with pytest.raises(RpcError):
            c.call("mcp", "other", "tools/call", {"name": "no-such-tool", "arguments": {}}, {})
        with pytest.raises(RpcError):
            c.call("call", "nobody", "echo", {})
        c.call("call", "kv-store", "kv.put", {"key": "a", "value": SECRET})
    new = wait_records(path, before + 6)[before:]
    assert len(new) == 6
    boom, read, prompt, unknown, nobody, service = new
    face = f"spctl mcp pid={os.getpid()} uid={os.getuid()}"
    assert boom["client"] == face and boom["outcome"] == "isError"
    assert boom["traceparent"] == TRACEPARENT and boom["tool"] == "boom"
    assert read["client"] == "alice" and read["via"] == face
    assert read["uri"] == "echo://readme" and read["outcome"] == "ok"
    assert prompt["prompt"] == "greet" and prompt["method"] == "prompts/get"
    assert unknown["outcome"] == "error" and isinstance(unknown["code"], int)
    assert nobody["extension"] == "nobody" and nobody["outcome"] == "error"
    assert service["method"] == "service" and service["service"] == "kv.put"
    assert service["extension"] == "kv-store" and service["outcome"] == "ok"
    assert SECRET not in path.read_text()


def test_spctl_audit_filters(plain: Serve) -> None:
    before = len(records(audit_path(plain)))
    plain.call("mcp", "other", "prompts/get", {"name": "greet", "arguments": {}}, {})
    plain.call("call", "kv-store", "kv.put", {"key": "b", "value": 1})
    plain.call("call", "echo", "echo", {"text": "x"})
    wait_records(audit_path(plain), before + 3)
    out = plain.spctl("audit", "--json", "--extension", "other")
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert got and all(r["extension"] == "other" for r in got)
    assert len(plain.spctl("audit", "--since", "1h").stdout.splitlines()) == len(
        records(audit_path(plain))
    )
    text = plain.spctl("audit", "--extension", "kv-store").stdout
    assert " kv-store service kv.put ok " in text
    bad = plain.spctl("audit", "--since", "ten minutes")
    assert bad.returncode == 2 and "duration" in bad.stderr


def test_spctl_audit_since_leaves_out_older_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = {"time": "2020-01-01T00:00:00.000Z", "extension": "a", "method": "tools/call"}
    new = {**old, "time": "2999-01-01T00:00:00.000Z", "extension": "b"}
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    out = subprocess.run(
        [SPCTL, "audit", "--json", "--since", "10m", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["extension"] for line in out.stdout.splitlines()] == ["b"]


def test_spctl_audit_follow_prints_new_records(plain: Serve, tmp_path: Path) -> None:
    plain.call("call", "echo", "echo", {"text": "x"})  # the file exists before -f starts
    wait_records(audit_path(plain), 1)
    out_path = tmp_path / "follow.out"
    with open(out_path, "wb") as out:
        follower = subprocess.Popen(
            [SPCTL, "audit", "-f", "--json", "--extension", "other"],
            env=plain.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        marker = "follow-marker"

        def seen() -> bool:
            plain.call("mcp", "other", "prompts/get", {"name": "greet", "arguments": {}}, {})
            return any(
                json.loads(line).get("traceparent") == marker
                for line in out_path.read_text().splitlines()
                if line.startswith("{")
            )

        meta = {"traceparent": marker}
        plain.call("mcp", "other", "tools/call", {"name": "echo", "arguments": {}}, meta)
        wait_for(seen, 20, "spctl audit -f to print the new record")
    finally:
        follower.terminate()
        follower.wait(10)


def test_bodies_are_recorded_redacted_and_rotation_keeps_the_cap(bodies: Serve) -> None:
    path = audit_path(bodies)
    args = {"text": "visible", "api_key": SECRET, "nested": {"password": SECRET}}
    with ControlClient(bodies.socket, timeout=30) as c:
        for _ in range(200):
            c.call("call", "echo", "echo", args)
        c.call("call", "kv-store", "kv.put", {"key": "k", "value": {"token": SECRET}})
    wait_for(
        lambda: any(r.get("service") == "kv.put" for r in records(path)), 20, "the last record"
    )
    files = sorted(path.parent.glob("audit.jsonl*"))
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for f in files:
        assert f.stat().st_size <= 8192
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert SECRET not in f.read_text()
    last = records(path)[-2]
    assert last["arguments"] == {
        "text": "visible",
        "api_key": "[redacted]",
        "nested": {"password": "[redacted]"},
    }


def test_no_audit_writes_nothing(tmp_path: Path) -> None:
    s = start(tmp_path, "--no-audit")
    try:
        s.call("call", "echo", "echo", {"text": "x"})
        assert s.wait_state("echo", "running")
    finally:
        s.stop()
    assert not audit_path(s).exists()
    assert '"audit log"' not in s.log_path.read_text()


def _front_port(serve: Serve) -> int | None:
    st = serve.try_status()
    front = st["supervisor"]["mcp_front"] if st else None
    if not front or front["state"] != "running" or not front.get("url"):
        return None
    return urllib.parse.urlsplit(front["url"]).port


def test_calls_through_the_front_say_front_and_keep_the_trace(tmp_path: Path) -> None:
    """The official SDK client over /mcp: the record names the front and the traceparent the
    client sent in ``_meta``; the argument's value is not there."""
    ext = make_extensions(tmp_path, [], [server_entry("echo", "mcp_echo")])
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    try:
        s.start()
        s.wait_state("echo", "running")
        port = wait_for(lambda: _front_port(s), 60, f"the front (log: {s.log_path})")

        async def body() -> None:
            url = f"http://127.0.0.1:{port}/mcp"
            async with Client(streamable_http_client(url)) as c:
                result = await c.call_tool(
                    "echo__echo", {"text": SECRET}, meta={"traceparent": TRACEPARENT}
                )
                assert not result.is_error

        anyio.run(body)
        (got,) = wait_records(audit_path(s), 1)
    finally:
        s.stop()
    assert got["client"] == "front" and got["extension"] == "echo" and got["tool"] == "echo"
    assert got["traceparent"] == TRACEPARENT and got["outcome"] == "ok"
    assert SECRET not in audit_path(s).read_text()
