"""Remote MCP servers (``type: remote`` with ``url:``/``auth:``/``headers:``): the worker's
``remote`` kind alone, then hosted by a real ``spctl serve`` — against a real Streamable HTTP
server (``tests/fixtures/remote_server``) that answers 401 without the right credentials and
has an OAuth2 token endpoint whose tokens live one second."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import (
    FIXTURES,
    HttpFixture,
    Serve,
    make_extensions,
    serve_fixture,
    start_http_fixture,
    wait_for,
)
from tests.integration.harness import WorkerHarness
from worker.protocol import EXIT_ERROR, EXIT_OK
from worker.rpc import RpcError

SERVER = FIXTURES / "remote_server" / "server.py"
TOOLS = ["echo", "add", "slow", "boom", "grow"]
TOKEN, KEY, SECRET, WRONG = "tok-7f3a9c", "key-51d2e8", "sec-c0ffee", "wrong-9b8e2d"
SECRETS = (TOKEN, KEY, SECRET, WRONG)
CLIENTS = [f"honest:{SECRET}:1", f"liar:{SECRET}:1:lie"]  # tokens die after 1 s


class Remote(HttpFixture):
    """The running fixture MCP server."""

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


def start_remote(tmp_path: Path, port: int = 0) -> Remote:
    args = ["--token", TOKEN, "--key", KEY, *(x for c in CLIENTS for x in ("--client", c))]
    return start_http_fixture(Remote, SERVER, tmp_path, args, port)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    server = start_remote(tmp_path_factory.mktemp("remote"))
    try:
        yield server
    finally:
        server.stop()


def entry(name: str, url: str, auth: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": "remote", "url": url, **extra}
    if auth is not None:
        out["auth"] = auth
    return out


def oauth2(client: str, url: str, secret: str = "${RT_SECRET}") -> dict[str, Any]:
    token_url = url.replace("/mcp", "/token")
    return {"type": "oauth2", "clientId": client, "clientSecret": secret, "tokenUrl": token_url}


def spec(remote: Remote, auth: dict[str, Any]) -> dict[str, Any]:
    return {"name": "fx", "kind": "remote", "path": "/", "url": remote.url, "auth": auth}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the worker's remote kind, driven by the harness -------------------------------------------


@pytest.mark.anyio
async def test_worker_serves_a_remote_server(remote: Remote) -> None:
    auth = {"type": "bearer", "token": TOKEN}
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(remote, auth)) as h:
        info = await h.ready(timeout=30)
        assert info["kind"] == "remote"
        assert info["metadata"] == {
            "url": remote.url,
            "auth": "bearer",
            "server": "remote-fixture",
            "version": "0.9.0",
            "protocol": "2025-11-25",
        }
        assert [t["name"] for t in info["catalog"]["tools"]] == TOOLS
        assert [r["uri"] for r in info["catalog"]["resources"]] == ["remote://readme"]
        call = {"name": "add", "arguments": {"a": 2, "b": 40}}
        assert (await h.request("mcp", "tools/call", call, {}))["content"] == [text("42")]
        # progress under the caller's token, then list_changed → a new catalog
        slow = {"name": "slow", "arguments": {"seconds": 0.2}}
        assert (await h.request("mcp", "tools/call", slow, {"progressToken": 7}))["content"]
        assert [p[:2] for m, p in h.notifications if m == "progress"] == [[7, 0], [7, 1]]
        assert await h.request("mcp", "tools/call", {"name": "grow", "arguments": {}}, {})
        changed = await h.notification("catalog")
        assert [t["name"] for t in changed["tools"]] == [*TOOLS, "extra"]
        assert await h.request("ping")  # also pings the server
        assert await h.request("shutdown") is None
        assert await h.exit_code() == EXIT_OK


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"type": "bearer", "token": WRONG}, "401 Unauthorized from {url}: check auth"),
        ({"type": "apikey", "key": WRONG, "header": "X-API-Key"}, "401 Unauthorized from {url}"),
        (
            {"type": "oauth2", "clientId": "honest", "clientSecret": WRONG, "tokenUrl": "{token}"},
            "token request to {token} failed: 401 Unauthorized (invalid_client): check auth",
        ),
    ],
)
async def test_refused_credentials_fail_the_start(
    remote: Remote, auth: dict[str, Any], message: str
) -> None:
    token_url = remote.url.replace("/mcp", "/token")
    auth = {k: v.replace("{token}", token_url) for k, v in auth.items()}
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(remote, auth)) as h:
        error = await h.notification("error", timeout=30)
        assert await h.exit_code() == EXIT_ERROR
    expected = message.format(url=remote.url, token=token_url)
    assert error["message"].startswith(f"remote MCP server fx: {expected}")
    assert WRONG not in "\n".join([*h.stdout_lines, *h.stderr_lines, error["message"]])


@pytest.mark.anyio
async def test_worker_ends_when_the_server_goes_away(tmp_path: Path) -> None:
    server = start_remote(tmp_path)
    try:
        auth = {"type": "apikey", "key": KEY}
        async with WorkerHarness(FIXTURES, name="fx", spec=spec(server, auth)) as h:
            await h.ready(timeout=30)
            server.stop()
            with contextlib.suppress(RpcError, TimeoutError):  # it may be gone already
                await h.request("ping")  # → an MCP ping to the server: connection refused
            error = await h.notification("error", timeout=30)
            assert await h.exit_code() == EXIT_ERROR
        assert error["message"].startswith("the remote MCP server fx was lost: cannot connect")
        assert server.url in error["message"]
    finally:
        server.stop()


@pytest.mark.anyio
async def test_worker_ends_when_the_server_forgets_the_session(tmp_path: Path) -> None:
    server = start_remote(tmp_path)
    try:
        auth = {"type": "bearer", "token": TOKEN}
        async with WorkerHarness(FIXTURES, name="fx", spec=spec(server, auth)) as h:
            await h.ready(timeout=30)
            server.stop()
            server = start_remote(tmp_path, port=server.port)  # a redeploy: sessions are gone
            await h.request("ping")
            failed = "failed (1/2): 404 Not Found"
            await h.wait_for(lambda: any(failed in x for x in h.stderr_lines), 10, failed)
            with contextlib.suppress(RpcError, TimeoutError):  # it may be gone already
                await h.request("ping")  # the second failure in a row ends the worker
            error = await h.notification("error", timeout=30)
            assert await h.exit_code() == EXIT_ERROR
        assert error["message"] == (
            f"the remote MCP server fx at {server.url} failed 2 pings in a row: "
            f"404 Not Found from {server.url}: Session not found"
        )
    finally:
        server.stop()


# -- through a real supervisor -----------------------------------------------------------------


def call(s: Serve, ext: str, tool: str = "add", *args: str) -> subprocess.CompletedProcess[str]:
    return s.spctl("call", ext, tool, *(args or ("--arg", "a=2", "--arg", "b=40")))


def front_url(s: Serve) -> str | None:
    status = s.try_status()
    front = status["supervisor"]["mcp_front"] if status else None
    return str(front["url"]) if front and front["state"] == "running" else None


def test_auth_schemes_through_spctl(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in (("RT_TOKEN", TOKEN), ("RT_KEY", KEY), ("RT_SECRET", SECRET)):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("RT_WRONG", WRONG)
    url = remote.url
    once = {"maxRestarts": 1, "backoff": "100ms"}
    servers = [
        entry("bearer", url, {"type": "bearer", "token": "${RT_TOKEN}"}, headers={"X-Client": "t"}),
        entry("apikey", url, {"type": "apikey", "key": "${RT_KEY}"}),
        entry("honest", url, oauth2("honest", url)),
        entry("liar", url, oauth2("liar", url)),
        entry("wrong", url, {"type": "bearer", "token": "${RT_WRONG}"}, restart=once),
        entry(
            "notoken",
            url,
            {k: v for k, v in oauth2("x", url).items() if k != "tokenUrl"},
            restart=once,
        ),
    ]
    modules: list[dict[str, Any]] = []  # remote modules: tests/integration/test_remote_modules.py
    good = ("bearer", "apikey", "honest", "liar")
    ext = make_extensions(tmp_path, modules, servers)
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0", "--health-interval", "0.5"]
    try:
        s.start()
        for name in good:
            s.wait_state(name, "running", timeout=60)
        out = s.spctl("tools", "--json")
        assert out.returncode == 0, out.stderr
        listed = {(t["extension"], t["tool"]) for t in json.loads(out.stdout)["tools"]}
        # (the module's server may have grown a tool `extra` in an earlier test)
        assert listed - {(name, "extra") for name in good} == {(n, t) for n in good for t in TOOLS}
        for name in good:
            out = call(s, name)
            assert (out.returncode, out.stdout.strip()) == (0, "42"), (name, out.stderr)
        assert remote.stats()["x_client"] == ["t"]  # `headers:` go with the requests

        # oauth2: once a token has died, calls still work, with a new token; the liar's
        # tokens claim an hour, so the worker learns of the expiry from a 401 and retries.
        for name in ("honest", "liar"):
            wait_for(lambda n=name: remote.stats()["expired"][n] >= 1, 10, f"{name}'s token")
            out = call(s, name, "echo", "--arg", "text=after expiry")
            assert (out.returncode, out.stdout.strip()) == (0, "after expiry"), out.stderr
            assert remote.stats()["tokens"][name] >= 2
        assert any(r.endswith("expired token (liar)") for r in remote.stats()["refused"])

        # the MCP front: the remote tools under their prefixed names, for an SDK client
        mcp_url = wait_for(lambda: front_url(s), 30, "the MCP front")

        async def through_the_front() -> None:
            async with Client(mcp_url) as c:
                tools = {t.name for t in (await c.list_tools()).tools}
                assert {f"{name}__add" for name in good} <= tools
                result = await c.call_tool("honest__add", {"a": 1, "b": 2})
                assert result.content[0].text == "3"  # type: ignore[union-attr]

        anyio.run(through_the_front)

        # refused credentials: a clear reason, the restart policy, then failed
        wrong = s.wait_state("wrong", "failed", timeout=60)
        reason = f"remote MCP server wrong: 401 Unauthorized from {url}: check auth"
        assert wrong["error"]["message"] == reason
        assert wrong["last_exit"].endswith(f": {reason}")  # "exited with status 1: …"
        assert wrong["restarts"] == 1
        # no tokenUrl and no metadata to discover it from: said, then the restart policy
        notoken = s.wait_state("notoken", "failed", timeout=60)
        assert notoken["error"]["message"].startswith(
            f"remote MCP server notoken: cannot discover the token endpoint of {url}: no "
            "protected resource metadata at "
        )
        outputs = [s.spctl("status").stdout, s.spctl("status", "--json").stdout]
        outputs += [s.spctl("logs", name).stdout for name in (*good, "wrong")]
        assert s.stop() == 0
        for output in [*outputs, s.log_path.read_text()]:
            for secret in SECRETS:
                assert secret not in output
    finally:
        s.kill()


def test_server_going_away_restarts_the_worker(tmp_path: Path) -> None:
    server = start_remote(tmp_path)
    restart = {"backoff": "200ms", "maxBackoff": "500ms", "maxRestarts": 50}
    auth = {"type": "apikey", "key": KEY}
    servers = [entry("gone", server.url, auth, restart=restart)]
    try:
        with serve_fixture(tmp_path, [], servers, extra_args=["--health-interval", "0.3"]) as s:
            s.start()
            first = s.wait_state("gone", "running", timeout=30)["pid"]
            assert call(s, "gone").stdout.strip() == "42"
            server.stop()

            def failing_to_connect() -> bool:
                e = s.ext("gone")
                message = (e["error"] or {}).get("message", "")
                return e["restarts"] >= 2 and f"cannot connect to {server.url}" in message

            wait_for(failing_to_connect, 30, "restarts that cannot connect")
            lost = f"the remote MCP server gone was lost: cannot connect to {server.url}"
            reasons = [e.get("reason", "") for e in s.logs() if e.get("event") == "state"]
            assert any(lost in reason for reason in reasons), reasons
            server = start_remote(tmp_path, port=server.port)
            again = s.wait_state("gone", "running", timeout=30)
            assert again["pid"] != first
            assert call(s, "gone").stdout.strip() == "42"
    finally:
        server.stop()


def test_revealed_secrets_stay_out_of_reprs() -> None:
    from worker.kinds.remote import RemoteAuth, RemoteSpec

    auth = RemoteAuth(type="oauth2", token="t0k3n", key="k3y", client_secret="s3cr3t")
    spec = RemoteSpec("x", "https://example.com/mcp", auth, {"X-Secret": "h34d3r"})
    for text in (repr(auth), repr(spec)):
        assert not any(s in text for s in ("t0k3n", "k3y", "s3cr3t", "h34d3r")), text
