"""OAuth 2 to remote MCP servers (``type: remote``, ``auth: {type: oauth2, …}``), against a real
OAuth-protected MCP server and its authorization servers on 127.0.0.1
(``tests/fixtures/oauth_server``): discovery of the token endpoint (RFC 9728 from the 401's
``WWW-Authenticate`` or the well-known URL, then RFC 8414 / OpenID metadata, the issuer
checked), ``resource=`` (RFC 8707), ``client_secret_basic`` and ``_post``, broken token
endpoints; then, through a real ``spctl serve``, the authorization code flow: ``spctl auth
login`` (headless and loopback), the worker's refresh, and a refused refresh."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import (
    FIXTURES,
    SPCTL,
    HttpFixture,
    Serve,
    make_extensions,
    serve_fixture,
    start_http_fixture,
    wait_for,
)
from tests.integration.harness import WorkerHarness
from worker.protocol import EXIT_ERROR, EXIT_LOAD_ERROR, EXIT_OK

SERVER = FIXTURES / "oauth_server" / "server.py"
SECRET = "sec-0a7h-5ecr3t"
FRONT = "front-t0ken-of-the-mcp-client"


class OAuth(HttpFixture):
    """The running fixture: resources under /r/, authorization servers under /as/."""

    def resource(self, mode: str, server: str) -> str:
        return f"{self.base}/r/{mode}/{server}/mcp"

    def control(self, **settings: Any) -> None:
        httpx2.post(f"{self.base}/control", json=settings, timeout=5).raise_for_status()

    def requests(self, server: str) -> list[dict[str, Any]]:
        return [r for r in self.stats()["requests"] if r["as"] == server]


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuth]:
    server = start_http_fixture(
        OAuth, SERVER, tmp_path_factory.mktemp("oauth"), ["--secret", SECRET]
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spec(url: str, **auth: Any) -> dict[str, Any]:
    full = {"type": "oauth2", "clientId": "app", "clientSecret": SECRET, **auth}
    return {"name": "fx", "kind": "remote", "path": "/", "url": url, "auth": full}


async def hosts(url: str, **auth: Any) -> None:
    """A worker for the server at ``url`` gets running, calls a tool, and stops cleanly."""
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(url, **auth)) as h:
        info = await h.ready(timeout=30)
        assert [t["name"] for t in info["catalog"]["tools"]] == ["add", "echo"]
        call = {"name": "add", "arguments": {"a": 2, "b": 40}}
        result = await h.request("mcp", "tools/call", call, {})
        assert result["content"] == [{"type": "text", "text": "42"}]
        assert await h.request("shutdown") is None
        assert await h.exit_code() == EXIT_OK
    assert SECRET not in "\n".join([*h.stdout_lines, *h.stderr_lines])


async def start_error(url: str, **auth: Any) -> str:
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(url, **auth)) as h:
        error = await h.notification("error", timeout=30)
        assert await h.exit_code() == EXIT_ERROR
    message: str = error["message"]
    assert SECRET not in "\n".join([*h.stdout_lines, *h.stderr_lines, message])
    return message


# -- client credentials, the token endpoint discovered -----------------------------------------


@pytest.mark.anyio
async def test_discovery_from_www_authenticate_and_post(oauth: OAuth) -> None:
    url = oauth.resource("header", "post")  # PRM only at the 401's resource_metadata URL
    await hosts(url, scopes=["mcp.read"])
    (asked,) = oauth.requests("post")
    assert asked == {
        "as": "post", "grant": "client_credentials", "method": "client_secret_post",
        "client": "app", "resource": url, "scope": "mcp.read",
    }  # fmt: skip


@pytest.mark.anyio
async def test_discovery_from_the_well_known_url_and_basic(oauth: OAuth) -> None:
    url = oauth.resource("wellknown", "basic")  # a bare 401: the path-specific well-known URL
    await hosts(url)
    assert [(r["method"], r["resource"]) for r in oauth.requests("basic")] == [
        ("client_secret_basic", url)
    ]


@pytest.mark.anyio
async def test_openid_discovery_defaults_to_basic(oauth: OAuth) -> None:
    url = oauth.resource("header", "oidc")  # no RFC 8414 metadata, no auth methods listed
    await hosts(url)
    assert [r["method"] for r in oauth.requests("oidc")] == ["client_secret_basic"]


@pytest.mark.anyio
async def test_configured_token_url_and_method(oauth: OAuth) -> None:
    url = oauth.resource("header", "basic")
    token_url = f"{oauth.base}/as/basic/token"
    before = len(oauth.requests("basic"))
    await hosts(url, tokenUrl=token_url, tokenAuthMethod="client_secret_basic")
    assert [r["method"] for r in oauth.requests("basic")[before:]] == ["client_secret_basic"]
    # _post (the default with a tokenUrl) where only _basic is accepted: refused, and said so
    message = await start_error(url, tokenUrl=token_url)
    assert message == (
        f"remote MCP server fx: token request to {token_url} failed: 401 Unauthorized "
        "(invalid_client): check auth.clientId and auth.clientSecret"
    )


@pytest.mark.anyio
async def test_the_resource_asked_for_can_be_set_or_left_out(oauth: OAuth) -> None:
    url = oauth.resource("header", "post")
    before = len(oauth.requests("post"))
    for resource in ("api://crm", ""):  # the server wants tokens for its own URL: refused
        message = await start_error(url, resource=resource)
        assert message == f"remote MCP server fx: 401 Unauthorized from {url}: check auth"
    asked = [r["resource"] for r in oauth.requests("post")[before:]]
    assert asked == ["api://crm", "api://crm", None, None]  # at the start, again on the 401


@pytest.mark.anyio
async def test_an_issuer_mismatch_is_refused(oauth: OAuth) -> None:
    message = await start_error(oauth.resource("header", "liar"))
    assert message == (
        "remote MCP server fx: the authorization server metadata at "
        f"{oauth.base}/.well-known/oauth-authorization-server/as/liar names the issuer "
        f"'{oauth.base}/as/elsewhere', not '{oauth.base}/as/liar' (the authorization server "
        "it was fetched for): refused"
    )
    assert oauth.requests("liar") == []  # no secret went to it


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("server", "what"),
    [
        ("fail500", " failed: 500 Internal Server Error"),
        ("garbage", ": the answer (200 OK, text/html, 17 bytes) is not a JSON object"),
    ],
)
async def test_a_broken_token_endpoint_is_named(oauth: OAuth, server: str, what: str) -> None:
    message = await start_error(oauth.resource("wellknown", server))
    endpoint = f"{oauth.base}/as/{server}/token"
    assert message == f"remote MCP server fx: token request to {endpoint}{what}"


@pytest.mark.anyio
async def test_no_metadata_anywhere(oauth: OAuth) -> None:
    url = f"{oauth.base}/r/wellknown/nowhere/mcp"  # 401 without resource_metadata, no PRM
    message = await start_error(url)
    prm = f"{oauth.base}/.well-known/oauth-protected-resource"
    assert message == (
        f"remote MCP server fx: cannot discover the token endpoint of {url}: no protected "
        f"resource metadata at {prm}/r/wellknown/nowhere/mcp (404 Not Found) or {prm} "
        "(404 Not Found); set auth.tokenUrl"
    )


# -- the authorization code flow: spctl auth login, the worker's refresh -----------------------


def code_entry(url: str, **auth: Any) -> dict[str, Any]:
    full = {"type": "oauth2", "clientId": "app", "clientSecret": "${OA_SECRET}"}
    full |= {"grant": "authorization_code", **auth}
    return {"name": "crm", "type": "remote", "url": url, "auth": full}


def login(
    env: dict[str, str], ext: Path, *flags: str, browse: Any
) -> subprocess.CompletedProcess[str]:
    """``spctl auth login crm`` with ``browse(url) → what to type`` playing the user."""
    argv = [SPCTL, "auth", "login", "crm", "-e", str(ext), "--timeout", "60", *flags]
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        link = proc.stdout.readline().strip()  # the URL to open, alone on stdout
        typed = browse(link)
        out, err = proc.communicate(typed, timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(argv, proc.wait(), link + "\n" + out, err)


def paste_the_redirect(link: str) -> str:
    """The headless user: opens the link elsewhere, copies the address it was sent to."""
    answer = httpx2.get(link, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith("http://127.0.0.1:") and "/callback?code=" in location
    return location + "\n"


def follow_the_redirect(link: str) -> str:
    """The user at the machine: the browser follows the redirect to the loopback listener."""
    answer = httpx2.get(link, follow_redirects=True, timeout=10)
    assert answer.status_code == 200 and "logged in" in answer.text, answer.text
    return ""


def front_url(s: Serve) -> str | None:
    status = s.try_status()
    front = status["supervisor"]["mcp_front"] if status else None
    return str(front["url"]) if front and front["state"] == "running" else None


async def call_through_the_front(url: str) -> str:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {FRONT}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as c:
        result = await c.call_tool("crm__add", {"a": 2, "b": 3})
        return str(result.content[0].text)  # type: ignore[union-attr]


def stored(env: dict[str, str], name: str = "crm") -> dict[str, Any]:
    path = Path(env["STATE_DIRECTORY"]) / "extensions" / name / "oauth-tokens.json"
    assert path.stat().st_mode & 0o777 == 0o600
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_headless_login_refresh_and_a_refused_refresh(
    oauth: OAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OA_SECRET", SECRET)
    url = oauth.resource("header", "post")
    token_endpoint = f"{oauth.base}/as/post/token"
    restart = {"maxRestarts": 1, "backoff": "100ms"}
    servers = [code_entry(url, scopes=["mcp.read"]) | {"restart": restart}]
    front_token = tmp_path / "front-token"
    front_token.write_text(FRONT + "\n")
    front_token.chmod(0o600)
    args = ["--health-interval", "0.5", "--listen", "127.0.0.1:0", "--token-file", str(front_token)]
    with serve_fixture(tmp_path, [], servers, front=True, extra_args=args) as s:
        s.start()
        # never logged in: failed at once, saying what to do (no browser, no prompt)
        failed = s.wait_state("crm", "failed", timeout=60)
        assert failed["error"]["message"].startswith("remote MCP server crm: no OAuth tokens")
        assert failed["error"]["message"].endswith(": run spctl auth login crm")
        status = s.spctl("auth", "status", "-e", str(s.extensions))
        assert status.returncode == 0, status.stderr
        assert "not logged in" in status.stdout

        oauth.control(ttl=2)  # short-lived access tokens: the worker must refresh them
        done = login(s.env, s.extensions, "--no-browser", browse=paste_the_redirect)
        assert done.returncode == 0, done.stderr
        assert "logged in to crm" in done.stderr
        first = stored(s.env)
        assert (first["issuer"], first["resource"], first["method"]) == (
            f"{oauth.base}/as/post",
            url,
            "client_secret_post",
        )
        exchange = oauth.requests("post")[-1]
        assert (exchange["grant"], exchange["resource"]) == ("authorization_code", url)
        for secret in (SECRET, first["access_token"], first["refresh_token"]):
            assert secret not in done.stdout + done.stderr

        assert s.spctl("restart", "crm").returncode == 0
        s.wait_state("crm", "running", timeout=60)
        out = s.spctl("call", "crm", "add", "--arg", "a=2", "--arg", "b=40")
        assert (out.returncode, out.stdout.strip()) == (0, "42"), out.stderr
        # through the MCP front, with the front's token: the server gets its own token only
        front = wait_for(lambda: front_url(s), 60, "the MCP front")
        assert anyio.run(call_through_the_front, front) == "5"
        assert all(FRONT not in bearer for bearer in oauth.stats()["bearers"])

        # the access token dies; the next call refreshes it and writes the new tokens back
        wait_for(lambda: time.time() > first["expires_at"], 10, "the access token's expiry")
        out = s.spctl("call", "crm", "echo", "--arg", "text=refreshed")
        assert (out.returncode, out.stdout.strip()) == (0, "refreshed"), out.stderr
        second = stored(s.env)
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]  # rotated by the server
        refresh = oauth.requests("post")[-1]
        assert (refresh["grant"], refresh["resource"]) == ("refresh_token", url)

        # the server revokes the refresh token: the next refresh fails → failed, with the cure
        oauth.control(revoke=True)
        wait_for(lambda: time.time() > second["expires_at"], 10, "the access token's expiry")
        s.spctl("call", "crm", "echo", "--arg", "text=x")  # fails: the refresh is refused
        failed = s.wait_state("crm", "failed", timeout=60)
        assert failed["error"]["message"] == (
            f"remote MCP server crm: token refresh to {token_endpoint} failed: 400 Bad Request "
            "(invalid_grant): run spctl auth login crm"
        )

        last = stored(s.env)  # renewed a little before its expiry: wait for the expiry itself
        wait_for(lambda: time.time() > last["expires_at"], 10, "the access token's expiry")
        status = s.spctl("auth", "status", "crm", "-e", str(s.extensions), "--json")
        (row,) = json.loads(status.stdout)["logins"]
        assert row["state"] == "access token expired (refreshable)"
        out = s.spctl("auth", "logout", "crm", "-e", str(s.extensions))
        assert out.returncode == 0, out.stderr
        status = s.spctl("auth", "status", "crm", "-e", str(s.extensions), "--json")
        assert json.loads(status.stdout)["logins"][0]["state"] == "not logged in"
        again = s.spctl("auth", "logout", "crm", "-e", str(s.extensions))
        assert again.returncode == 1 and "not logged in" in again.stderr
        outputs = [s.spctl("status", "--json").stdout, s.spctl("logs", "crm").stdout]
        assert s.stop() == 0
        for output in [*outputs, s.log_path.read_text()]:
            for secret in (SECRET, first["access_token"], second["refresh_token"]):
                assert secret not in output


def test_loopback_login_then_the_worker_uses_the_tokens(
    oauth: OAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OA_SECRET", SECRET)
    oauth.control(ttl=3600)
    url = oauth.resource("wellknown", "basic")
    ext = make_extensions(tmp_path, [], [code_entry(url)])
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    done = login(env, ext, browse=follow_the_redirect)
    assert done.returncode == 0, done.stderr
    tokens = stored(env)
    assert tokens["method"] == "client_secret_basic"
    assert oauth.requests("basic")[-1]["grant"] == "authorization_code"
    # the worker, told where the tokens are, hosts the server with them
    path = tmp_path / "state" / "extensions" / "crm" / "oauth-tokens.json"
    auth = {"grant": "authorization_code", "tokenFile": str(path)}
    asyncio.run(_hosts_then_refreshes_on_401(oauth, spec(url, **auth)))
    grants = [r["grant"] for r in oauth.requests("basic")]
    assert grants[-2:] == ["authorization_code", "refresh_token"]
    assert stored(env)["access_token"] != tokens["access_token"]  # written back


async def _hosts_then_refreshes_on_401(oauth: OAuth, full: dict[str, Any]) -> None:
    async with WorkerHarness(FIXTURES, name="fx", spec=full) as h:
        await h.ready(timeout=30)
        assert oauth.requests("basic")[-1]["grant"] == "authorization_code"  # no refresh yet
        oauth.control(forget=True)  # the live access token is refused from now on
        call = {"name": "echo", "arguments": {"text": "after a 401"}}
        result = await h.request("mcp", "tools/call", call, {})
        assert result["content"] == [{"type": "text", "text": "after a 401"}]
        assert await h.request("shutdown") is None
        assert await h.exit_code() == EXIT_OK


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["remote", "remote_module"])
async def test_no_login_is_a_load_error_naming_the_cure(
    oauth: OAuth, tmp_path: Path, kind: str
) -> None:
    missing = tmp_path / "state" / "extensions" / "fx" / "oauth-tokens.json"
    full = spec(oauth.resource("header", "post"), grant="authorization_code")
    full["auth"]["tokenFile"] = str(missing)
    full |= {"kind": kind, "provides": ["crm"]} if kind == "remote_module" else {}
    async with WorkerHarness(FIXTURES, name="fx", spec=full) as h:
        error = await h.notification("load_error", timeout=30)
        assert await h.exit_code() == EXIT_LOAD_ERROR
    label = "remote MCP server" if kind == "remote" else "remote module"
    assert error["message"] == (
        f"{label} fx: no OAuth tokens for fx (no {missing}): run spctl auth login fx"
    )


def test_login_refusals(oauth: OAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_SECRET", SECRET)
    servers = [
        code_entry(oauth.resource("header", "liar")),
        {**code_entry(oauth.resource("header", "post")), "name": "svc"}
        | {"auth": {"type": "oauth2", "clientId": "app", "clientSecret": "${OA_SECRET}"}},
    ]
    ext = make_extensions(tmp_path, [], servers)
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [SPCTL, "auth", *args, "-e", str(ext)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    out = run("login", "crm", "--no-browser")
    assert out.returncode == 1
    assert "names the issuer" in out.stderr and f"not '{oauth.base}/as/liar'" in out.stderr
    out = run("login", "svc")
    assert out.returncode == 1 and "uses the client-credentials grant" in out.stderr
    out = run("login", "nosuch")
    assert out.returncode == 1 and "no extension named 'nosuch'" in out.stderr
    # a pasted redirect of another login (another state) is refused
    good = oauth.resource("header", "post")
    ext2 = make_extensions(tmp_path / "two", [], [code_entry(good)])
    forged = login(
        env, ext2, "--no-browser", browse=lambda _: "http://127.0.0.1:1/callback?code=x&state=y\n"
    )
    assert forged.returncode == 1 and "state is not this login's" in forged.stderr
    assert not (tmp_path / "state" / "extensions" / "crm" / "oauth-tokens.json").exists()
