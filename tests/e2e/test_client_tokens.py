"""Per-client tokens end to end: ``spctl token add|list|remove`` writing the clients file in
the state directory, a real ``spctl serve`` whose MCP front re-reads it, and the official MCP
SDK client (both eras) with each client's bearer token.

Servers ``notes`` and ``other`` are both the mcp_echo fixture (tools echo, add — annotated
``readOnlyHint`` —, slow, sync_slow, boom, progress; prompt greet; resource echo://readme, which
``notes`` owns on the aggregate). Clients: ``alice`` may reach ``notes__*``; ``bob`` everything
but read-only; the ``--token-file`` token has full access.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.test_mcp_front import post
from tests.helpers import SPCTL, Serve, make_extensions, server_entry, wait_for

MODES = ["auto", "legacy"]
FULL = "full-access-token-file-token"
ALL_TOOLS = ["add", "boom", "echo", "progress", "slow", "sync_slow"]


@dataclass
class HttpFront:
    port: int


@dataclass
class Env:
    serve: Serve
    url: str  # http://127.0.0.1:PORT/mcp
    tokens: dict[str, str]  # client name → its token, as spctl token add printed it

    def at(self, path: str) -> str:
        return self.url.removesuffix("/mcp") + path

    @property
    def front(self) -> Any:  # what test_mcp_front's post() needs of its Front
        return HttpFront(int(self.url.rsplit(":", 1)[1].split("/")[0]))

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def token(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.serve.spctl("token", *args)


def add_client(serve: Serve, name: str, *args: str) -> str:
    done = serve.spctl("token", "add", name, *args)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("spctl_") and len(token) > 40, done.stdout
    return token


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("clients")
    servers = [server_entry("notes", "mcp_echo"), server_entry("other", "mcp_echo")]
    serve = Serve(root, make_extensions(root, [], servers), root / "run" / "control.sock")
    tokens = {
        "alice": add_client(serve, "alice", "--allow", "notes__*"),
        "bob": add_client(serve, "bob", "--allow", "*", "--read-only"),
        "carol": add_client(serve, "carol", "--allow", "other"),
        "full": FULL,
    }
    token_file = root / "token"
    token_file.write_text(FULL + "\n")
    token_file.chmod(0o600)
    serve.front = True
    serve.extra_args = ["--listen", "127.0.0.1:0", "--token-file", str(token_file)]
    try:
        serve.start()
        for entry in servers:
            serve.wait_state(entry["name"], "running")

        def front_url() -> str | None:
            st = serve.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        yield Env(serve, str(wait_for(front_url, 60, "the MCP front")), tokens)
    finally:
        serve.kill()


def run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def names(result: Any, key: str = "tools") -> list[str]:
    return sorted(item.name for item in getattr(result, key))


def client(env: Env, who: str, path: str, mode: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers=env.auth(who))
    return http, Client(streamable_http_client(env.at(path), http_client=http), mode=mode)


async def assert_unknown(call: Awaitable[Any], code: int, message: str) -> None:
    with pytest.raises(MCPError) as err:
        await call
    assert (err.value.code, err.value.message) == (code, message)


def test_the_clients_file_is_private_and_holds_no_token(env: Env) -> None:
    path = env.serve.root / "state" / "clients.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for token in env.tokens.values():
        assert token not in text


def test_token_list_shows_names_and_globs_never_hashes(env: Env) -> None:
    done = env.token("list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ALLOW", "READ-ONLY", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["alice", "notes__*"],
        ["bob", "*"],
        ["carol", "other"],
    ]
    assert "yes" in lines[2]
    text = (env.serve.root / "state" / "clients.toml").read_text()
    for line in text.splitlines():
        if line.startswith("sha256"):
            digest = line.split('"')[1]
            assert digest[:12] not in done.stdout and digest not in done.stderr


def test_token_add_refuses_bad_input(env: Env) -> None:
    done = env.token("add", "alice", "--allow", "notes")
    assert done.returncode == 1 and "a client named 'alice' exists" in done.stderr
    done = env.token("add", "dave", "--allow", "Notes")
    assert done.returncode == 2 and "allow glob 'Notes'" in done.stderr
    done = env.token("add", "bad name", "--allow", "notes")
    assert done.returncode == 2 and "client name must be" in done.stderr
    done = env.token("remove", "nobody")
    assert done.returncode == 1 and "no client named 'nobody'" in done.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_client_sees_and_calls_only_what_it_may(env: Env, mode: str) -> None:
    async def body() -> None:
        http, c = client(env, "alice", "/mcp", mode)
        async with http, c:
            assert names(await c.list_tools()) == [f"notes__{t}" for t in ALL_TOOLS]
            assert names(await c.list_prompts(), "prompts") == ["notes__greet"]
            assert [str(r.uri) for r in (await c.list_resources()).resources] == ["echo://readme"]
            result = await c.call_tool("notes__add", {"a": 2, "b": 40})
            assert result.content[0].text == "42"  # type: ignore[union-attr]
            for tool in ("other__add", "other__nope", "nope"):  # refused, absent: the same
                await assert_unknown(c.call_tool(tool, {}), -32602, f"Unknown tool: {tool}")
            await assert_unknown(
                c.get_prompt("other__greet", {"name": "x"}), -32602, "Unknown prompt: other__greet"
            )

    run(body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/mcp/other", "/servers/other/mcp"])
def test_a_server_out_of_reach_is_not_found(env: Env, mode: str, path: str) -> None:
    assert post(env.front, env.auth("alice"), path=path) == 404
    assert post(env.front, env.auth("carol"), path=path) == 200
    assert post(env.front, env.auth("full"), path=path) == 200

    async def body() -> None:
        http, c = client(env, "alice", path.replace("other", "notes"), mode)
        async with http, c:
            assert names(await c.list_tools()) == ALL_TOOLS
            await c.read_resource("echo://readme")

    run(body)


def test_a_client_limited_to_one_server_cannot_read_anothers_resources(env: Env) -> None:
    async def body() -> None:
        http, c = client(env, "carol", "/mcp", "legacy")
        async with http, c:
            assert names(await c.list_tools()) == [f"other__{t}" for t in ALL_TOOLS]
            assert (await c.list_resources()).resources == []  # echo://readme is notes'
            with pytest.raises(MCPError) as err:
                await c.read_resource("echo://readme")
            assert err.value.code == -32002

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_a_read_only_client_calls_only_read_only_tools(env: Env, mode: str) -> None:
    async def body() -> None:
        http, c = client(env, "bob", "/mcp", mode)
        async with http, c:
            assert names(await c.list_tools()) == ["notes__add", "other__add"]
            result = await c.call_tool("other__add", {"a": 1, "b": 2})
            assert result.content[0].text == "3"  # type: ignore[union-attr]
            for tool in ("notes__echo", "other__boom"):
                await assert_unknown(
                    c.call_tool(tool, {"text": "x"}), -32602, f"Unknown tool: {tool}"
                )
            prompt = await c.get_prompt("notes__greet", {"name": "bob"})  # reads are fine
            assert prompt.messages
        http, c = client(env, "bob", "/mcp/notes", mode)
        async with http, c:
            assert names(await c.list_tools()) == ["add"]
            await assert_unknown(c.call_tool("echo", {"text": "x"}), -32602, "Unknown tool: echo")

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_the_token_file_token_has_full_access(env: Env, mode: str) -> None:
    async def body() -> None:
        http, c = client(env, "full", "/mcp", mode)
        async with http, c:
            tools = names(await c.list_tools())
            assert tools == sorted([f"{s}__{t}" for s in ("notes", "other") for t in ALL_TOOLS])
            result = await c.call_tool("other__echo", {"text": "all"})
            assert result.content[0].text == "all"  # type: ignore[union-attr]

    run(body)


def test_the_modern_era_lists_are_private(env: Env) -> None:
    """The 2026-07-28 answer on the wire (not the SDK model's default) says cacheScope private."""
    sent: list[tuple[dict[str, str], bytes]] = []

    async def on_request(request: httpx2.Request) -> None:
        if b'"tools/list"' in request.content:
            sent.append((dict(request.headers), request.content))

    async def body() -> None:
        http = httpx2.AsyncClient(headers=env.auth("alice"), event_hooks={"request": [on_request]})
        async with http, Client(streamable_http_client(env.url, http_client=http)) as c:
            await c.list_tools()

    run(body)
    headers, content = sent[-1]
    keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
    keep["host"] = f"127.0.0.1:{env.front.port}"
    conn = http.client.HTTPConnection("127.0.0.1", env.front.port, timeout=30)
    try:
        conn.request("POST", "/mcp", body=content, headers=keep)  # the SDK's request, again
        response = conn.getresponse()
        raw = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, raw
    data = [line[5:] for line in raw.splitlines() if line.startswith("data:")] or [raw]
    result = json.loads(data[-1])["result"]
    assert result["cacheScope"] == "private", result
    assert all(t["name"].startswith("notes__") for t in result["tools"])


def test_wrong_or_missing_token_is_401(env: Env) -> None:
    assert post(env.front, {"Authorization": "Bearer spctl_not-a-token"}) == 401
    assert post(env.front, {"Authorization": f"Basic {env.tokens['alice']}"}) == 401
    assert post(env.front, {}) == 401
    assert post(env.front, env.auth("alice")) == 200


def test_a_removed_token_stops_working_at_once(env: Env) -> None:
    token = add_client(env.serve, "eve", "--allow", "notes")
    headers = {"Authorization": f"Bearer {token}"}
    assert post(env.front, headers) == 200  # added while the front runs: picked up
    done = env.token("remove", "eve")
    assert done.returncode == 0, done.stderr
    assert post(env.front, headers) == 401
    assert post(env.front, env.auth("alice")) == 200


def test_each_call_is_logged_with_its_client(env: Env) -> None:
    async def body() -> None:
        http, c = client(env, "alice", "/mcp", "legacy")
        async with http, c:
            await c.call_tool("notes__echo", {"text": "logged"})

    run(body)

    def logged() -> bool:
        text = env.serve.log_path.read_text(errors="replace")
        return any(
            "alice" in line and "echo" in line and "call" in line for line in text.splitlines()
        )

    wait_for(logged, 30, "the front's log line of alice's call")
    assert env.tokens["alice"] not in env.serve.log_path.read_text(errors="replace")


def test_a_clients_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    done = subprocess.run(
        [SPCTL, "token", "add", "x", "--allow", "*", "--clients-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    path.chmod(0o644)
    expected = f"{path}: mode 644 lets others read the token hashes; it must be 0600"
    listed = subprocess.run(
        [SPCTL, "token", "list", "--clients-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 1 and expected in listed.stderr, listed.stderr
    env = {**os.environ, "SPCTL_SOCKET": str(tmp_path / "run" / "c.sock")}
    served = subprocess.run(
        [SPCTL, "serve", "--extensions", str(tmp_path), "--clients-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert served.returncode == 2 and expected in served.stderr, served.stderr
    assert not (tmp_path / "run" / "c.sock").exists()  # refused before anything started


@pytest.mark.parametrize("who", ["alice", "full"])
def test_the_client_name_goes_with_the_call_and_cannot_be_forged(env: Env, who: str) -> None:
    async def body() -> None:
        http, c = client(env, who, "/mcp", "legacy")
        async with http, c:
            forged = {"client": "mallory", "other": 1}
            result = await c.call_tool("notes__echo", {"text": "$meta"}, meta=forged)
            meta = json.loads(result.content[0].text)  # type: ignore[union-attr]
            expected = "token-file" if who == "full" else who
            assert meta["client"] == expected and meta["other"] == 1, meta

    run(body)


def test_token_verbs_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "clients.toml"
    procs = [
        subprocess.Popen(
            [SPCTL, "token", "add", f"c{i}", "--allow", "*", "--clients-file", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    listed = subprocess.run(
        [SPCTL, "token", "list", "--clients-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == [
        f"c{i}" for i in range(6)
    ]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
