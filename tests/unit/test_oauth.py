"""The pure parts of :mod:`worker.kinds.oauth`: well-known URLs (RFC 9728, RFC 8414, OpenID),
``WWW-Authenticate`` parsing, the token endpoint auth method, PKCE, the authorize URL and the
code a user pastes back."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from worker.kinds.oauth import (
    OAuthError,
    StoredTokens,
    TokenAnswer,
    TokenFile,
    as_metadata_urls,
    authorize_url,
    bearer_challenge,
    choose_method,
    code_challenge,
    code_from,
    pkce_pair,
    prm_urls,
    resource_allowed,
)


@pytest.mark.parametrize(
    ("server", "urls"),
    [
        ("https://x.example/mcp", ["https://x.example/.well-known/oauth-protected-resource/mcp",
                                   "https://x.example/.well-known/oauth-protected-resource"]),
        ("https://x.example:8443/a/b/", ["https://x.example:8443/.well-known/oauth-protected-resource/a/b",
                                         "https://x.example:8443/.well-known/oauth-protected-resource"]),
        ("https://x.example/", ["https://x.example/.well-known/oauth-protected-resource"]),
        ("https://x.example/mcp?k=v#f", ["https://x.example/.well-known/oauth-protected-resource/mcp",
                                         "https://x.example/.well-known/oauth-protected-resource"]),
    ],
)  # fmt: skip
def test_prm_urls(server: str, urls: list[str]) -> None:
    assert prm_urls(server) == urls


@pytest.mark.parametrize(
    ("issuer", "urls"),
    [
        ("https://as.example", ["https://as.example/.well-known/oauth-authorization-server",
                                "https://as.example/.well-known/openid-configuration"]),
        ("https://as.example/tenant/1", [
            "https://as.example/.well-known/oauth-authorization-server/tenant/1",
            "https://as.example/.well-known/openid-configuration/tenant/1",
            "https://as.example/tenant/1/.well-known/openid-configuration"]),
    ],
)  # fmt: skip
def test_as_metadata_urls(issuer: str, urls: list[str]) -> None:
    assert as_metadata_urls(issuer) == urls


@pytest.mark.parametrize(
    ("header", "params"),
    [
        ('Bearer resource_metadata="https://x/prm"', {"resource_metadata": "https://x/prm"}),
        ('Bearer realm="a b", error="invalid_token", scope="r w"',
         {"realm": "a b", "error": "invalid_token", "scope": "r w"}),
        ("bearer resource_metadata=https://x/prm", {"resource_metadata": "https://x/prm"}),
        ('Basic realm="x", Bearer resource_metadata="https://x/p"', {"resource_metadata": "https://x/p"}),
        ('Bearer error_description="say \\"no\\", twice"', {"error_description": 'say "no", twice'}),  # noqa: E501
        ("Bearer", {}),
        ('Basic realm="x"', None),
        ("", None),
    ],
)  # fmt: skip
def test_bearer_challenge(header: str, params: dict[str, str] | None) -> None:
    assert bearer_challenge(header) == params


@pytest.mark.parametrize(
    ("server", "resource", "allowed"),
    [
        ("https://x.example/mcp", "https://x.example/mcp", True),
        ("https://x.example/mcp", "https://X.example/mcp/", True),
        ("https://x.example/mcp/sub", "https://x.example/mcp", True),
        ("https://x.example/mcp", "https://x.example", True),
        ("https://x.example/mcpx", "https://x.example/mcp", False),
        ("https://x.example/mcp", "https://y.example/mcp", False),
        ("https://x.example/mcp", "http://x.example/mcp", False),
        ("https://x.example:444/mcp", "https://x.example/mcp", False),
    ],
)
def test_resource_allowed(server: str, resource: str, allowed: bool) -> None:
    assert resource_allowed(server, resource) is allowed


@pytest.mark.parametrize(
    ("configured", "supported", "secret", "method"),
    [
        ("client_secret_basic", ["client_secret_post"], True, "client_secret_basic"),
        (None, None, True, "client_secret_basic"),  # RFC 8414's default
        (None, ["client_secret_basic", "client_secret_post"], True, "client_secret_post"),
        (None, ["private_key_jwt", "client_secret_basic"], True, "client_secret_basic"),
        (None, ["client_secret_basic"], False, "none"),
    ],
)
def test_choose_method(
    configured: str | None, supported: list[str] | None, secret: bool, method: str
) -> None:
    assert choose_method(configured, supported, secret) == method


def test_choose_method_when_none_fits() -> None:
    with pytest.raises(OAuthError, match=r"supports none of .* \(it offers private_key_jwt\)"):
        choose_method(None, ["private_key_jwt"], True)


def test_pkce() -> None:
    # RFC 7636 appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    one, two = pkce_pair(), pkce_pair()
    assert one[0] != two[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,128}", one[0])
    assert one[1] == code_challenge(one[0])


def test_authorize_url() -> None:
    url = authorize_url(
        "https://as.example/authorize?tenant=t1",
        client_id="app",
        redirect_uri="http://127.0.0.1:5000/callback",
        challenge="chal",
        state="st",
        scopes=["a", "b c"],
        resource="https://x.example/mcp",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "as.example", "/authorize")
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "tenant": "t1",
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "http://127.0.0.1:5000/callback",
        "code_challenge": "chal",
        "code_challenge_method": "S256",
        "state": "st",
        "resource": "https://x.example/mcp",
        "scope": "a b c",
    }


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("http://127.0.0.1:5000/callback?code=abc&state=st", "abc"),
        ("  http://127.0.0.1:5000/callback?state=st&code=a%2Fb  \n", "a/b"),
        ("?code=abc&state=st", "abc"),
        ("code=abc&state=st", "abc"),
        ("abc-123_x", "abc-123_x"),
        ("c0de+/==", "c0de+/=="),  # a bare code may end in base64 padding
    ],
)
def test_code_from(text: str, code: str) -> None:
    assert code_from(text, "st") == code


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://127.0.0.1/cb?code=abc&state=other", "state is not this login's"),
        ("http://127.0.0.1/cb?code=abc", "state is not this login's"),
        ("http://127.0.0.1/cb?error=access_denied&state=st", "answered access_denied instead"),
        ("http://127.0.0.1/cb?error=%3Cscript%3E&state=st", "answered an error instead"),
        ("http://127.0.0.1/cb?state=st", "carries no code"),
        ("", "no code given"),
        ("two words", "spaces or control characters"),
    ],
)
def test_code_from_refuses(text: str, message: str) -> None:
    with pytest.raises(OAuthError, match=message):
        code_from(text, "st")


def test_token_file_round_trip_and_refusals(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "ext" / "oauth-tokens.json")
    assert store.load() is None and store.stamp() is None
    tokens = StoredTokens("acc3ss", "r3fresh", 1e9, "https://as/token", "https://as", "https://x")
    store.save(tokens)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.path.parent.stat().st_mode & 0o777 == 0o700
    assert store.load() == tokens
    assert "acc3ss" not in repr(tokens) and "r3fresh" not in repr(tokens)
    renewed = tokens.with_answer(TokenAnswer("n3w", 60.0, None, "read"), 100.0)
    assert (renewed.access_token, renewed.refresh_token) == ("n3w", "r3fresh")  # kept
    assert (renewed.expires_at, renewed.scope, renewed.issuer) == (160.0, "read", "https://as")
    assert list(store.path.parent.iterdir()) == [store.path]  # no temp file left
    store.path.chmod(0o644)
    with pytest.raises(OAuthError, match=r"mode 644 lets others read the tokens; .*chmod 600"):
        store.load()
    store.path.write_text("{not json")
    store.path.chmod(0o600)
    with pytest.raises(OAuthError, match="not JSON"):
        store.load()
    store.path.write_text('{"refresh_token": "x"}')
    with pytest.raises(OAuthError, match="no access_token"):
        store.load()
    assert store.remove() and not store.remove()
