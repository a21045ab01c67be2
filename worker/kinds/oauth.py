"""OAuth 2 for remote extensions: discovery, token requests, PKCE and the stored user tokens.

Pure parts (no I/O): :func:`prm_urls` and :func:`as_metadata_urls` build the well-known URLs
of RFC 9728 (protected resource metadata) and RFC 8414 / OpenID Connect discovery;
:func:`bearer_challenge` reads a ``WWW-Authenticate`` header; :func:`choose_method` picks how
the client authenticates at the token endpoint; :func:`pkce_pair`, :func:`authorize_url` and
:func:`code_from` are the pieces of the authorization code flow (RFC 7636, S256 only).

I/O (httpx2, never the MCP SDK: the lean remote worker imports this): :func:`discover`
finds a server's authorization server and its endpoints; :func:`request_token` posts a grant
to a token endpoint. Both raise :class:`OAuthError` with a message that names the URL it
talked to (through :func:`display`: no user info, no query) and what came back, never a
secret or a token. :class:`TokenFile` is the 0600 JSON file the authorization code flow's
tokens live in (``spctl auth login`` writes it, the worker refreshes it), written atomically.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx2

from worker.tls import tls_for

__all__ = [
    "METHODS",
    "Endpoints",
    "OAuthError",
    "StoredTokens",
    "TokenAnswer",
    "TokenFile",
    "as_metadata_urls",
    "authorize_url",
    "bearer_challenge",
    "choose_method",
    "code_challenge",
    "code_from",
    "discover",
    "display",
    "pkce_pair",
    "prm_urls",
    "request_token",
    "resource_allowed",
]

METHODS = ("client_secret_basic", "client_secret_post")
"""The token endpoint auth methods spctl speaks for a client with a secret (``none`` without)."""
TIMEOUT = 30.0
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


class OAuthError(Exception):
    """An OAuth step failed; the message is safe to show (no secret, no token). ``status``:
    the HTTP status of a token endpoint that answered with an error (None otherwise)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def display(url: str) -> str:
    """``url`` fit for messages: no user info, no query, no fragment (they may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


# -- pure ------------------------------------------------------------------------------------


def _well_known(url: str, name: str, *, append: bool = False) -> str:
    """``/.well-known/<name>`` inserted before ``url``'s path (RFC 8414 §3.1), or appended
    after it (OpenID Connect Discovery 1.0 §4)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    path = f"{path}/.well-known/{name}" if append else f"/.well-known/{name}{path}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def prm_urls(server_url: str) -> list[str]:
    """Where a server's protected resource metadata may be (RFC 9728 §3.1): the path-specific
    URL first, then the root one (the same when the server is at the root)."""
    urls = [_well_known(server_url, "oauth-protected-resource")]
    root = _well_known(
        urlunsplit((*urlsplit(server_url)[:2], "", "", "")), "oauth-protected-resource"
    )
    return urls if root in urls else [*urls, root]


def as_metadata_urls(issuer: str) -> list[str]:
    """Where an authorization server's metadata may be, in the order the MCP spec tries them:
    RFC 8414 (path inserted), OpenID Connect with the path inserted, then appended."""
    urls = [
        _well_known(issuer, "oauth-authorization-server"),
        _well_known(issuer, "openid-configuration"),
        _well_known(issuer, "openid-configuration", append=True),
    ]
    return list(dict.fromkeys(urls))


def bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of the ``Bearer`` challenge in a ``WWW-Authenticate`` header (names in
    lower case, quoted values unquoted), or None when it has none. Other schemes' challenges
    (``Basic realm="x", Bearer resource_metadata="…"``) are skipped."""
    found: dict[str, str] | None = None
    pos = 0
    while pos < len(header):
        match = re.compile(r"\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)").match(header, pos)
        if match is None:
            break
        scheme, pos = match.group(1), match.end()
        params: dict[str, str] = {}
        while True:
            param = _PARAM.match(header, pos)
            if param is None:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        if scheme.lower() == "bearer" and found is None:
            found = params
    return found


def resource_allowed(server_url: str, resource: str) -> bool:
    """Whether ``resource`` (a protected resource metadata's ``resource``) covers
    ``server_url``: the same origin, and the server's path under the resource's."""
    a, b = urlsplit(server_url), urlsplit(resource)
    if (a.scheme.lower(), a.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()):
        return False
    mine, theirs = a.path.rstrip("/") + "/", b.path.rstrip("/") + "/"
    return mine.startswith(theirs)


def choose_method(configured: str | None, supported: Sequence[str] | None, secret: bool) -> str:
    """How to authenticate at the token endpoint: the configured method; ``none`` for a client
    without a secret; else from the server's ``token_endpoint_auth_methods_supported``
    (``client_secret_post`` when listed, then ``client_secret_basic``; the RFC 8414 default,
    ``client_secret_basic``, when the list is absent). OAuthError when none fits."""
    if configured:
        return configured
    if not secret:
        return "none"
    if supported is None:
        return "client_secret_basic"
    for method in ("client_secret_post", "client_secret_basic"):
        if method in supported:
            return method
    offered = ", ".join(str(m) for m in supported) or "none"
    raise OAuthError(
        f"the authorization server supports none of {', '.join(METHODS)} at its token "
        f"endpoint (it offers {offered})"
    )


def code_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE ``verifier`` (RFC 7636 §4.2)."""
    import hashlib  # only the login needs it: the worker stays lean

    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """A new PKCE code verifier (43 characters of ``[A-Za-z0-9_-]``) and its S256 challenge."""
    import secrets

    verifier = secrets.token_urlsafe(32)
    return verifier, code_challenge(verifier)


def authorize_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    challenge: str,
    state: str,
    scopes: Sequence[str],
    resource: str,
) -> str:
    """The URL the user opens to authorize (RFC 6749 §4.1.1 + PKCE + RFC 8707 ``resource``)."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    if resource:  # "" when the entry says to send none
        query["resource"] = resource
    if scopes:
        query["scope"] = " ".join(scopes)
    parts = urlsplit(endpoint)
    joined = "&".join(x for x in (parts.query, urlencode(query, quote_via=quote)) if x)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))


def code_from(text: str, state: str) -> str:
    """The authorization code in ``text``: the redirect URL (or its query) the browser was
    sent to, whose ``state`` must be ``state``, or the bare code. OAuthError when the URL
    carries an error or another state."""
    text = text.strip()
    if not text:
        raise OAuthError("no code given")
    query = urlsplit(text).query if "://" in text else text.lstrip("?")
    if "://" not in text and not re.search(r"(^|&)(code|state|error)=", query):
        if not re.fullmatch(r"[\x21-\x7e]+", text):
            raise OAuthError("the code has spaces or control characters: paste the code only")
        return text  # a bare code
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if "error" in params:
        code = params["error"]
        shown = code if _OAUTH_ERROR.fullmatch(code) else "an error"
        raise OAuthError(f"the authorization server answered {shown} instead of a code")
    if params.get("state") != state:
        raise OAuthError("the redirect's state is not this login's (an old or forged redirect)")
    code = params.get("code", "")
    if not code:
        raise OAuthError("the redirect carries no code")
    return code


# -- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """What discovery found for a protected server."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    methods: tuple[str, ...] | None = None  # token_endpoint_auth_methods_supported
    challenges: tuple[str, ...] | None = None  # code_challenge_methods_supported
    resource: str = ""  # the resource to ask tokens for (RFC 8707)
    scopes: tuple[str, ...] = ()  # the metadata's scopes_supported (a default for login)


async def _get_json(client: httpx2.AsyncClient, url: str) -> tuple[int, str, Any]:
    """GET ``url``: (status, status text, the JSON body or None)."""
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as e:
        raise OAuthError(f"cannot fetch {display(url)}: {type(e).__name__}: {e}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, _status(response), body


def _status(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


async def probe(
    client: httpx2.AsyncClient, server_url: str, headers: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """POST an MCP ``ping`` to the server without credentials: the ``Bearer`` challenge of its
    401 (RFC 9728 §5.1), or None (no 401, no challenge, or not reachable: the well-known URLs
    are tried next)."""
    ping = {"jsonrpc": "2.0", "id": "spctl-discovery", "method": "ping"}
    sent = {**(headers or {}), "Accept": "application/json, text/event-stream"}
    try:
        response = await client.post(server_url, json=ping, headers=sent)
    except httpx2.HTTPError:
        return None
    if response.status_code != 401:
        return None
    return bearer_challenge(response.headers.get("www-authenticate", ""))


async def discover(
    client: httpx2.AsyncClient,
    server_url: str,
    metadata_url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Endpoints:
    """The authorization server of the protected server at ``server_url`` and its endpoints:
    its protected resource metadata (``metadata_url``, else the ``resource_metadata`` of the
    401 that :func:`probe` gets, sending the entry's ``headers``, else the well-known URLs),
    then the first authorization server's metadata, whose ``issuer`` must be that server's
    URL. OAuthError naming what failed. ``client`` follows no redirect: a metadata document
    is where the rules say or not at all."""
    if metadata_url is None:
        challenge = await probe(client, server_url, headers)
        metadata_url = (challenge or {}).get("resource_metadata") or None
    prm, prm_at = None, ""
    tried: list[str] = []
    for url in [metadata_url] if metadata_url else prm_urls(server_url):
        status, text, body = await _get_json(client, url)
        if status == 200 and isinstance(body, dict):
            prm, prm_at = body, url
            break
        tried.append(f"{display(url)} ({text if status != 200 else '200 OK, not a JSON object'})")
    if prm is None:
        raise OAuthError(
            f"cannot discover the token endpoint of {display(server_url)}: no protected "
            f"resource metadata at {' or '.join(tried)}; set auth.tokenUrl"
        )
    resource = prm.get("resource")
    if isinstance(resource, str) and resource and not resource_allowed(server_url, resource):
        raise OAuthError(
            f"the protected resource metadata at {display(prm_at)} is for {display(resource)}, "
            f"not {display(server_url)}"
        )
    servers = prm.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise OAuthError(
            f"the protected resource metadata at {display(prm_at)} names no authorization_servers"
        )
    issuer = servers[0]
    meta, meta_at = None, ""
    tried = []
    for url in as_metadata_urls(issuer):
        status, text, body = await _get_json(client, url)
        if status == 200 and isinstance(body, dict):
            meta, meta_at = body, url
            break
        tried.append(f"{display(url)} ({text if status != 200 else '200 OK, not a JSON object'})")
    if meta is None:
        raise OAuthError(
            f"no metadata for the authorization server {display(issuer)} at {' or '.join(tried)}"
        )
    named = meta.get("issuer")
    if not isinstance(named, str) or named.rstrip("/") != issuer.rstrip("/"):
        raise OAuthError(
            f"the authorization server metadata at {display(meta_at)} names the issuer "
            f"{named!r}, not {issuer!r} (the authorization server it was fetched for): refused"
        )
    token = meta.get("token_endpoint")
    if not isinstance(token, str) or not token.startswith(("http://", "https://")):
        raise OAuthError(
            f"the authorization server metadata at {display(meta_at)} has no token_endpoint URL"
        )
    authorize = meta.get("authorization_endpoint")
    return Endpoints(
        issuer=issuer,
        token_endpoint=token,
        authorization_endpoint=authorize if isinstance(authorize, str) else None,
        methods=_strings(meta.get("token_endpoint_auth_methods_supported")),
        challenges=_strings(meta.get("code_challenge_methods_supported")),
        resource=resource if isinstance(resource, str) and resource else server_url,
        scopes=_strings(prm.get("scopes_supported")) or (),
    )


def _strings(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, str))


# -- token requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAnswer:
    """A token endpoint's answer (the tokens kept out of ``repr``)."""

    access_token: str = field(repr=False)
    expires_in: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None


async def request_token(
    endpoint: str,
    form: Mapping[str, str],
    *,
    client_id: str,
    client_secret: str,
    method: str,
    what: str = "token request",
) -> TokenAnswer:
    """POST the grant ``form`` to ``endpoint``, the client authenticated by ``method``
    (``client_secret_basic``: an ``Authorization: Basic`` header of the form-encoded id and
    secret, RFC 6749 §2.3.1; ``client_secret_post``: both in the form; ``none``: the id in
    the form). OAuthError naming the endpoint and what it answered (never its body)."""
    where = display(endpoint)
    body = dict(form)
    headers = {"Accept": "application/json"}
    if method == "client_secret_basic":
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        body["client_id"] = client_id
        if method == "client_secret_post":
            body["client_secret"] = client_secret
    try:
        async with httpx2.AsyncClient(timeout=TIMEOUT, verify=tls_for(endpoint)) as client:
            response = await client.post(endpoint, data=body, headers=headers)
    except httpx2.HTTPError as e:
        raise OAuthError(f"{what} to {where} failed: {type(e).__name__}: {e}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200:
        found = answer if isinstance(answer, dict) else {}
        code = found.get("error")  # an OAuth error code such as invalid_client: never a secret
        code = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""
        hint = ""
        if response.status_code in (400, 401) and code in (" (invalid_client)", ""):
            hint = ": check auth.clientId and auth.clientSecret"
        raise OAuthError(
            f"{what} to {where} failed: {_status(response)}{code}{hint}", response.status_code
        )
    if not isinstance(answer, dict):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise OAuthError(
            f"{what} to {where}: the answer ({_status(response)}, {kind}, "
            f"{len(response.content)} bytes) is not a JSON object"
        )
    token, kind = answer.get("access_token"), answer.get("token_type", "bearer")
    if not isinstance(token, str) or not token:
        raise OAuthError(f"{what} to {where}: no access_token in the answer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise OAuthError(f"{what} to {where}: token_type {kind!r} is not bearer")
    expires = answer.get("expires_in")
    if isinstance(expires, str) and expires.isdigit():
        expires = int(expires)
    if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0:
        expires = None
    refresh = answer.get("refresh_token")
    scope = answer.get("scope")
    return TokenAnswer(
        token,
        None if expires is None else float(expires),
        refresh if isinstance(refresh, str) and refresh else None,
        scope if isinstance(scope, str) else None,
    )


# -- the stored tokens of the authorization code flow ---------------------------------------


@dataclass(frozen=True)
class StoredTokens:
    """What ``spctl auth login`` got, as kept on disk (tokens out of ``repr``)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # wall clock (time.time())
    token_endpoint: str = ""
    issuer: str = ""
    resource: str = ""
    client_id: str = ""
    method: str = "none"
    scope: str | None = None
    obtained_at: float = 0.0

    def with_answer(self, answer: TokenAnswer, now: float) -> StoredTokens:
        """These tokens renewed by ``answer`` (a refresh that rotated nothing keeps the
        refresh token it was made with)."""
        return StoredTokens(
            access_token=answer.access_token,
            refresh_token=answer.refresh_token or self.refresh_token,
            expires_at=None if answer.expires_in is None else now + answer.expires_in,
            token_endpoint=self.token_endpoint,
            issuer=self.issuer,
            resource=self.resource,
            client_id=self.client_id,
            method=self.method,
            scope=answer.scope or self.scope,
            obtained_at=now,
        )


class TokenFile:
    """The JSON file of a server's :class:`StoredTokens`: mode 0600, replaced whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stamp(self) -> tuple[int, int, int] | None:
        """What changes when the file is replaced (inode, size, mtime); None if it is not there."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> StoredTokens | None:
        """The tokens, or None when there is no file. OAuthError when it cannot be used (one
        that others may read is refused: the tokens act for a person)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OAuthError(f"{self.path}: cannot read: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise OAuthError(
                    f"{self.path}: mode {mode:o} lets others read the tokens; it must be 0600 "
                    f"(chmod 600 {self.path})"
                )
            raw = f.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise OAuthError(f"{self.path}: not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise OAuthError(f"{self.path}: not a token file (no access_token)")
        known = StoredTokens.__dataclass_fields__
        try:
            return StoredTokens(**{k: v for k, v in doc.items() if k in known})
        except TypeError as e:
            raise OAuthError(f"{self.path}: bad token file: {e}") from None

    def save(self, tokens: StoredTokens) -> None:
        """Replace the file with ``tokens`` (a 0600 temp file, fsynced, renamed over it: never
        half written, never readable by others; what ``supervisor.atomic.write_atomic`` does,
        which the worker may not import)."""
        import tempfile  # only a refresh writes: not imported at the worker's start

        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(asdict(tokens), indent=1).encode()
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self) -> bool:
        """Delete the file; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
