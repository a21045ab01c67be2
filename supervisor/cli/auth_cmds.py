"""``spctl auth login|status|logout``: a user's OAuth tokens for remote servers that act for them
(``auth: {type: oauth2, grant: authorization_code}``).

``login EXT`` reads the entry from the registry (``--extensions``), discovers the server's
authorization server (:func:`worker.kinds.oauth.discover`), and runs the authorization code flow
with PKCE S256 (RFC 7636) and ``resource`` (RFC 8707): it prints the URL to open and waits for
the browser's redirect on a loopback listener (``http://127.0.0.1:PORT/callback``, RFC 8252
§7.3), or, with ``--no-browser`` (a headless host), reads the redirect's address (or the bare
code) pasted on stdin. The code is exchanged for tokens, kept in
``<state dir>/extensions/EXT/oauth-tokens.json`` (0600, written atomically); the extension's
worker reads them, refreshes them with the refresh token and writes them back. The daemon never
opens a browser or asks anyone anything: a refused refresh makes the extension ``failed`` with
"run spctl auth login EXT". ``status`` says who is logged in (never a token), ``logout``
removes the tokens.

Exit codes: 0 ok; 1 refused (no such entry, not an authorization code entry, discovery or the
token exchange failed, no code in time); 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from supervisor.cli.render import table

if TYPE_CHECKING:  # imported by the verbs themselves: other verbs start without them
    from supervisor.config import Extension
    from worker.kinds.oauth import Endpoints, StoredTokens

__all__ = ["app", "token_path"]

EXIT_REFUSED = 1
CALLBACK = "/callback"
DONE_PAGE = b"<!doctype html><title>spctl</title><p>spctl: logged in. You may close this tab.</p>\n"

app = typer.Typer(
    help="OAuth logins for remote servers that act for a user (grant: authorization_code).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ExtensionsOpt = Annotated[
    Path,
    typer.Option(
        "--extensions", "-e", help="The extensions directory (holding servers.yaml, modules.yaml)."
    ),
]


class Refused(Exception):
    """The verb cannot do what was asked; the message says why."""


def _fail(message: str) -> typer.Exit:
    print(f"spctl: {message}", file=sys.stderr)
    return typer.Exit(EXIT_REFUSED)


def token_path(name: str) -> Path:
    """``<state dir>/extensions/<name>/oauth-tokens.json``: where the worker of ``name`` is told
    to look (``supervisor.core.worker_spec.token_file``, from the same state directory)."""
    from supervisor.clients_file import default_path
    from supervisor.config.schema import TOKEN_FILE

    return default_path(operator=True).parent / "extensions" / name / TOKEN_FILE


def _entries(extensions: Path, name: str | None) -> list[Extension]:
    """The oauth2 entries of the registry (only ``name`` when given). Refused if none."""
    from supervisor.config import load_registry

    result = load_registry(extensions)
    if name is not None and name in result.invalid:
        errors = "; ".join(str(e) for e in result.invalid[name])
        raise Refused(f"{name}: invalid configuration: {errors}")
    if result.errors and not result.invalid and not result.registry.extensions:
        raise Refused("; ".join(str(e) for e in result.errors))
    found = [
        ext
        for ext in result.registry.extensions
        if ext.auth is not None and ext.auth.type == "oauth2" and name in (None, ext.name)
    ]
    if name is not None and not found:
        if result.registry.get(name) is None:
            raise Refused(f"no extension named {name!r} in {extensions}")
        raise Refused(f"{name} does not use OAuth (its auth is not type: oauth2)")
    return found


def _reveal(value: Any) -> str:
    from supervisor.config import Secret

    return value.reveal() if isinstance(value, Secret) else str(value)


@app.command("login")
def login(
    name: Annotated[str, typer.Argument(help="The extension (a remote server or module).")],
    extensions: ExtensionsOpt = Path("extensions"),
    no_browser: Annotated[
        bool,
        typer.Option(
            "--no-browser",
            help="Headless: paste the address the browser was redirected to (or the code).",
        ),
    ] = False,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, help="The loopback redirect's port (default: any free)."
        ),
    ] = 0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the redirect.")
    ] = 300.0,
) -> None:
    """Log in to EXT: the authorization code flow with PKCE; the tokens go to the state dir."""
    try:
        (ext,) = _entries(extensions, name)
        auth = ext.auth
        assert auth is not None
        if auth.grant != "authorization_code":
            raise Refused(
                f"{name} uses the client-credentials grant: its worker gets tokens itself "
                "(spctl auth login is for grant: authorization_code)"
            )
        assert ext.url is not None
        path = token_path(name)
        tokens = asyncio.run(_login(ext, no_browser=no_browser, port=port, timeout=timeout))
        _save(path, tokens, ext)
    except Refused as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{path}: cannot write: {exc.strerror or exc}") from None
    lifetime = (
        f"the access token expires in {tokens.expires_at - time.time():.0f} s"
        if tokens.expires_at is not None
        else "the access token has no stated lifetime"
    )
    refresh = "the worker refreshes it" if tokens.refresh_token else "no refresh token was given"
    print(
        f"logged in to {name} at {tokens.issuer}; the tokens are in {path} ({lifetime}; "
        f"{refresh}). If {name} is failed: spctl restart {name}",
        file=sys.stderr,
    )


async def _login(ext: Extension, *, no_browser: bool, port: int, timeout: float) -> StoredTokens:
    import secrets

    import httpx2

    from worker.kinds.oauth import (
        OAuthError,
        StoredTokens,
        authorize_url,
        choose_method,
        code_from,
        discover,
        pkce_pair,
        request_token,
    )

    auth, url = ext.auth, ext.url
    assert auth is not None
    assert url is not None
    client_id = _reveal(auth.client_id)
    secret = _reveal(auth.client_secret) if auth.client_secret is not None else ""
    headers = {k: _reveal(v) for k, v in ext.headers.items()}
    try:
        async with httpx2.AsyncClient(timeout=30) as client:
            found = await discover(client, url, headers=headers)
        _check(found)
        assert found.authorization_endpoint is not None
        method = choose_method(auth.token_auth_method, found.methods, bool(secret))
    except OAuthError as exc:
        raise Refused(f"{ext.name}: {exc}") from None
    resource = found.resource if auth.resource is None else auth.resource
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    listener: asyncio.Server | None = None
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    if no_browser:
        port = port or _free_port()
    else:
        listener = await asyncio.start_server(
            lambda r, w: _callback(r, w, state, got), "127.0.0.1", port
        )
        port = listener.sockets[0].getsockname()[1]
    redirect = f"http://127.0.0.1:{port}{CALLBACK}"
    scopes = auth.scopes or found.scopes
    link = authorize_url(
        found.authorization_endpoint,
        client_id=client_id,
        redirect_uri=redirect,
        challenge=challenge,
        state=state,
        scopes=scopes,
        resource=resource,
    )
    print(f"To log in to {ext.name}, open this URL in a browser:", file=sys.stderr)
    print(link, flush=True)
    try:
        async with asyncio.timeout(timeout):
            if listener is None:
                print(
                    f"After you approve, the browser goes to {redirect}?code=… (a page that "
                    "will not load on another machine): paste that address, or the code, here:",
                    file=sys.stderr,
                    flush=True,
                )
                line = await asyncio.to_thread(sys.stdin.readline)
                code = code_from(line, state)
            else:
                print(f"Waiting for the redirect to {redirect} …", file=sys.stderr, flush=True)
                code = await got
    except TimeoutError:
        raise Refused(f"{ext.name}: no authorization code within {timeout:g} s") from None
    except OAuthError as exc:
        raise Refused(f"{ext.name}: {exc}") from None
    finally:
        if listener is not None:
            listener.close()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "code_verifier": verifier,
    }
    if resource:
        form["resource"] = resource
    try:
        answer = await request_token(
            found.token_endpoint if not auth.token_url else auth.token_url,
            form,
            client_id=client_id,
            client_secret=secret,
            method=method,
        )
    except OAuthError as exc:
        raise Refused(f"{ext.name}: {exc}") from None
    now = time.time()
    return StoredTokens(
        access_token=answer.access_token,
        refresh_token=answer.refresh_token,
        expires_at=None if answer.expires_in is None else now + answer.expires_in,
        token_endpoint=auth.token_url or found.token_endpoint,
        issuer=found.issuer,
        resource=resource,
        client_id=client_id,
        method=method,
        scope=answer.scope or (" ".join(scopes) or None),
        obtained_at=now,
    )


def _check(found: Endpoints) -> None:
    from worker.kinds.oauth import OAuthError

    if found.authorization_endpoint is None:
        raise OAuthError(f"the authorization server {found.issuer} has no authorization_endpoint")
    if found.challenges is None or "S256" not in found.challenges:
        raise OAuthError(
            f"the authorization server {found.issuer} does not list S256 in its "
            "code_challenge_methods_supported (spctl logs in with PKCE S256 only)"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _callback(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: str, got: asyncio.Future[str]
) -> None:
    """One request to the loopback listener: the redirect carries the code (or an error)."""
    from worker.kinds.oauth import OAuthError, code_from

    status, body = "404 Not Found", b"not found\n"
    try:
        async with asyncio.timeout(10):
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # the headers: nothing in them is needed
        method, target, *_ = [*request.decode("latin-1").split(), "", ""]
        if method == "GET" and target.split("?")[0] == CALLBACK and not got.done():
            try:
                got.set_result(code_from(f"http://127.0.0.1{target}", state))
                status, body = "200 OK", DONE_PAGE
            except OAuthError as exc:
                status, body = "400 Bad Request", f"spctl: {exc}\n".encode()
                if "state" not in str(exc):  # a forged or old redirect does not end the login
                    got.set_exception(exc)
        head = f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


def _save(path: Path, tokens: StoredTokens, ext: Extension) -> None:
    """Write the tokens 0600, atomically; owned by the extension's ``user:`` when we are root
    (its worker reads and refreshes them)."""
    from dataclasses import asdict

    from supervisor.atomic import dir_lock, write_atomic

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with dir_lock(path.parent):
        write_atomic(path, json.dumps(asdict(tokens), indent=1).encode())
        if ext.run_as is not None and os.geteuid() == 0:
            os.chown(path, ext.run_as.uid, ext.run_as.gid)
            os.chown(path.parent, ext.run_as.uid, ext.run_as.gid)


@app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="One extension (default: all).")] = None,
    extensions: ExtensionsOpt = Path("extensions"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Who is logged in to which OAuth server, and until when (never a token)."""
    from worker.kinds.oauth import OAuthError, TokenFile

    try:
        entries = _entries(extensions, name)
    except Refused as exc:
        raise _fail(str(exc)) from None
    now = time.time()
    rows: list[dict[str, Any]] = []
    for ext in entries:
        assert ext.auth is not None
        row: dict[str, Any] = {"name": ext.name, "grant": ext.auth.grant}
        if ext.auth.grant != "authorization_code":
            row["state"] = "client credentials (no login)"
            rows.append(row)
            continue
        path = token_path(ext.name)
        row["file"] = str(path)
        try:
            stored = TokenFile(path).load()
        except OAuthError as exc:
            row["state"] = f"unusable: {exc}"
            rows.append(row)
            continue
        if stored is None:
            row["state"] = "not logged in"
        else:
            expired = stored.expires_at is not None and stored.expires_at <= now
            row["state"] = "logged in" if not expired else "access token expired"
            if expired and stored.refresh_token:
                row["state"] += " (refreshable)"
            row |= {
                "issuer": stored.issuer,
                "scope": stored.scope,
                "expires_at": stored.expires_at,
                "refresh_token": stored.refresh_token is not None,
                "obtained_at": stored.obtained_at,
            }
        rows.append(row)
    if as_json:
        print(json.dumps({"logins": rows}, indent=2))
        return
    if not rows:
        print("no oauth2 entries", file=sys.stderr)
        return
    lines = []
    for row in rows:
        expires = row.get("expires_at")
        left = "" if expires is None else f"{expires - now:.0f}s"
        lines.append([row["name"], row["grant"], row["state"], left, row.get("issuer", "")])
    print(table(["NAME", "GRANT", "STATE", "EXPIRES IN", "ISSUER"], lines))


@app.command("logout")
def logout(
    name: Annotated[str, typer.Argument(help="The extension.")],
    extensions: ExtensionsOpt = Path("extensions"),
) -> None:
    """Forget EXT's tokens: its worker fails at its next request (until the next login)."""
    from worker.kinds.oauth import TokenFile

    try:
        (ext,) = _entries(extensions, name)
    except Refused as exc:
        raise _fail(str(exc)) from None
    path = token_path(ext.name)
    try:
        removed = TokenFile(path).remove()
    except OSError as exc:
        raise _fail(f"{path}: cannot remove: {exc.strerror or exc}") from None
    if not removed:
        raise _fail(f"{name}: not logged in (no {path})")
    print(f"logged out of {name}: removed {path}", file=sys.stderr)
