"""The nested blocks of an entry (``auth``, ``limits``, ``restart``, ``sandbox``, the filters
``tools``/``prompts``/``resources``) and URL checks.

Each reader records problems on the ``Reader`` and returns a value (or a default) so that the
rest of the entry is still checked; see ``fields``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from supervisor.config import schema
from supervisor.config.fields import Reader, join
from supervisor.config.load import MarkedMap
from supervisor.config.values import Secret, parse_cpu, parse_duration, parse_size, show

__all__ = [
    "HEADER_NAME",
    "boolean",
    "check_url",
    "integer",
    "positive",
    "read_auth",
    "read_filter",
    "read_limits",
    "read_restart",
    "read_sandbox",
    "read_url",
]

_AUTH_FIELDS = {
    "bearer": ("token",),
    "apikey": ("key", "header"),
    "oauth2": (
        "clientId",
        "clientSecret",
        "tokenUrl",
        "scopes",
        "tokenAuthMethod",
        "grant",
        "resource",
    ),
}
_AUTH_KEYS = ("type", *(key for keys in _AUTH_FIELDS.values() for key in keys))
_LIMIT_KEYS = ("memory", "cpu", "cpuTime", "openFiles", "processes")
_RESTART_KEYS = ("policy", "maxRestarts", "window", "backoff", "maxBackoff")
_SANDBOX_KEYS = ("filesystem", "network", "readable", "writable", "required")
FILTER_KEYS = ("allow", "deny")  # of tools:, prompts: and resources:
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_N = TypeVar("_N", int, float)


def check_url(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL with a host, or None. Never quotes the URL."""
    if any(char.isspace() or ord(char) < 32 for char in text):
        return "expected an http:// or https:// URL without spaces or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return "expected an http:// or https:// URL, got one that cannot be parsed"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        return f"expected an http:// or https:// URL, got {got}"
    if not parts.hostname:
        return "expected an http:// or https:// URL with a host, got no host"
    return None


def read_url(r: Reader, m: MarkedMap, key: str, p: str, *, required: bool) -> str | None:
    text = r.string(m, key, p, required=required)
    if text is not None and (problem := check_url(text)) is not None:
        r.fail(m.mark_of(key), join(p, key), problem)
    return text


def read_auth(r: Reader, item: MarkedMap, p: str) -> schema.Auth | None:
    found, path = r.mapping(item, "auth", p), join(p, "auth")
    if found is None:
        return None
    r.keys(found, _AUTH_KEYS, path)
    kind = r.choice(found, "type", path, schema.AUTH_TYPES, required=True)
    if kind is None:
        return None
    for key in found:
        if key in _AUTH_KEYS and key != "type" and key not in _AUTH_FIELDS[kind]:
            takes = ", ".join(_AUTH_FIELDS[kind])
            r.fail(found.key_marks[key], join(path, key), f"is not used by {kind} (takes {takes})")
    if kind == "bearer":
        return schema.Auth(kind, token=r.secret(found, "token", path, required=True))
    if kind == "apikey":
        header = r.string(found, "header", path) or "X-API-Key"
        if not HEADER_NAME.fullmatch(header):
            r.fail(found.mark_of("header"), join(path, "header"), "is not a valid header name")
        return schema.Auth(kind, key=r.secret(found, "key", path, required=True), header=header)
    client_id: str | Secret | None = None
    found_id = r.text(found, "clientId", path, required=True, secret=True)
    if found_id is not None:
        text, from_variable = found_id
        client_id = Secret(text) if from_variable else text
    grant = r.choice(found, "grant", path, schema.OAUTH_GRANTS, default="client_credentials")
    public = grant == "authorization_code"  # a public client (PKCE) may have no secret
    method = r.choice(found, "tokenAuthMethod", path, schema.TOKEN_AUTH_METHODS)
    secret = r.secret(found, "clientSecret", path, required=not public)
    if method is not None and secret is None and "clientSecret" not in found:
        r.fail(
            found.mark_of("tokenAuthMethod"), join(path, "tokenAuthMethod"), "needs clientSecret"
        )
    resource = r.string(found, "resource", path)
    if resource and (problem := _resource_problem(resource)) is not None:
        r.fail(found.mark_of("resource"), join(path, "resource"), problem)
    return schema.Auth(
        kind,
        client_id=client_id,
        client_secret=secret,
        token_url=read_url(r, found, "tokenUrl", path, required=False),
        scopes=tuple(scope for scope, _, _ in r.strings(found, "scopes", path) or ()),
        token_auth_method=method,
        grant=grant or "client_credentials",
        resource=resource,
    )


def _resource_problem(text: str) -> str | None:
    """Why ``text`` is not an RFC 8707 resource indicator (an absolute URI, no fragment)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or "#" in text or any(c.isspace() for c in text):
        return "expected an absolute URI without a fragment (RFC 8707), or '' to send none"
    return None


def read_limits(r: Reader, item: MarkedMap, p: str) -> schema.Limits:
    found, path = r.mapping(item, "limits", p), join(p, "limits")
    if found is None:
        return schema.Limits()
    r.keys(found, _LIMIT_KEYS, path)
    return schema.Limits(
        memory=r.typed(found, "memory", path, positive(parse_size), None),
        cpu=r.typed(found, "cpu", path, parse_cpu, None),
        cpu_time=r.typed(found, "cpuTime", path, positive(parse_duration), None),
        open_files=r.typed(found, "openFiles", path, integer(1), None),
        processes=r.typed(found, "processes", path, integer(1), None),
    )


def read_restart(r: Reader, item: MarkedMap, p: str) -> schema.RestartConfig:
    found, path = r.mapping(item, "restart", p), join(p, "restart")
    if found is None:
        return schema.RestartConfig()
    r.keys(found, _RESTART_KEYS, path)
    policy = r.choice(found, "policy", path, schema.RESTART_POLICIES, default="on-failure")
    backoff = r.typed(found, "backoff", path, parse_duration, 1.0)
    max_backoff = r.typed(found, "maxBackoff", path, parse_duration, 30.0)
    if max_backoff < backoff:
        key = "maxBackoff" if "maxBackoff" in found else "backoff"
        r.fail(
            found.mark_of(key),
            join(path, key),
            f"maxBackoff ({max_backoff:g}s) must not be less than backoff ({backoff:g}s)",
        )
    return schema.RestartConfig(
        policy=policy or "on-failure",
        max_restarts=r.typed(found, "maxRestarts", path, integer(0), 5),
        window=r.typed(found, "window", path, positive(parse_duration), 60.0),
        backoff=backoff,
        max_backoff=max_backoff,
    )


def read_sandbox(r: Reader, item: MarkedMap, p: str, root: Path, *, remote: bool) -> schema.Sandbox:
    """``sandbox:`` — a mapping, or ``off`` for no sandbox at all. Relative paths are resolved
    against the extensions directory ``root``; they need not exist yet."""
    value, path = item.get("sandbox"), join(p, "sandbox")
    if value is None:
        return schema.Sandbox()
    if value == "off" or value is False:
        return schema.Sandbox(filesystem="off", network="any")
    found = r.mapping(item, "sandbox", p)
    if found is None:
        return schema.Sandbox()
    r.keys(found, _SANDBOX_KEYS, path)
    fs = r.choice(found, "filesystem", path, schema.SANDBOX_FILESYSTEM, default="strict")
    network = r.choice(found, "network", path, schema.SANDBOX_NETWORK, default="outbound")
    if remote and network == "none":
        r.fail(
            found.mark_of("network"),
            join(path, "network"),
            "a remote extension connects to its url: use outbound (or any), not none",
        )
    paths: dict[str, tuple[Path, ...]] = {}
    for key in ("readable", "writable"):
        items = r.strings(found, key, path) or []
        resolved: list[Path] = []
        for text, mark, field in items:
            if not text or "\0" in text:
                r.fail(mark, field, "expected a path")
                continue
            candidate = Path(text)
            if not candidate.is_absolute():
                if not text.startswith("./"):
                    r.fail(mark, field, f"expected an absolute path or ./…, got {show(text)}")
                    continue
                candidate = root / candidate
            resolved.append(Path(os.path.normpath(candidate)))
        paths[key] = tuple(resolved)
    return schema.Sandbox(
        filesystem=fs or "strict",
        network=network or "outbound",
        readable=paths["readable"],
        writable=paths["writable"],
        required=r.typed(found, "required", path, boolean, False),
    )


def read_filter(r: Reader, item: MarkedMap, key: str, p: str) -> schema.Filter:
    """``tools:``/``prompts:``/``resources:`` — ``{allow: [glob, …], deny: [glob, …]}``; each
    glob a non-empty string. Whether a glob matches anything is not known here (the catalog
    is the server's): ``spctl validate`` warns about that against a running supervisor."""
    found, path = r.mapping(item, key, p), join(p, key)
    if found is None:
        return schema.Filter()
    r.keys(found, FILTER_KEYS, path)
    globs: dict[str, tuple[str, ...] | None] = {}
    sources: list[schema.GlobSource] = []
    for part in FILTER_KEYS:
        items = r.strings(found, part, path)
        if items is None:
            globs[part] = None
            continue
        kept: list[str] = []
        for text, mark, field in items:
            if not text or "\0" in text:
                r.fail(mark, field, "expected a glob (a non-empty string, e.g. read_*)")
                continue
            kept.append(text)
            sources.append(schema.GlobSource(field, mark.line, mark.column, text))
        globs[part] = tuple(kept)
    return schema.Filter(globs["allow"], globs["deny"] or (), tuple(sources))


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {show(value)}")


def integer(minimum: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise ValueError(f"expected a whole number of at least {minimum}, got {show(value)}")

    return convert


def positive(parse: Callable[[object], _N]) -> Callable[[object], _N]:
    def convert(value: object) -> _N:
        result = parse(value)
        if result <= 0:
            raise ValueError(f"must be greater than zero, got {show(value)}")
        return result

    return convert
