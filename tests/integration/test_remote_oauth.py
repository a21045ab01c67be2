"""OAuth 2 to remote MCP servers (``type: remote``, ``auth: {type: oauth2, …}``), against a real
OAuth-protected MCP server and its authorization servers on 127.0.0.1
(``tests/fixtures/oauth_server``): discovery of the token endpoint (RFC 9728 from the 401's
``WWW-Authenticate`` or the well-known URL, then RFC 8414 / OpenID metadata, the issuer
checked), ``resource=`` (RFC 8707), ``client_secret_basic`` and ``_post``, broken token
endpoints; then, through a real ``spctl serve``, the authorization code flow: ``spctl auth
login`` (headless and loopback), the worker's refresh, and a refused refresh."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.helpers import FIXTURES, HttpFixture, start_http_fixture
from tests.integration.harness import WorkerHarness
from worker.protocol import EXIT_ERROR, EXIT_OK

SERVER = FIXTURES / "oauth_server" / "server.py"
SECRET = "sec-0a7h-5ecr3t"


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
