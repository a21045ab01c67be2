"""Per-client tokens of the MCP front: the ``clients.toml`` file and who may reach what. Pure.

The file (``<state dir>/clients.toml``, or ``spctl serve --clients-file F``; mode 0600, written
by ``spctl token add|remove``) holds one table per client::

    [clients.claude]
    sha256 = "9f86d08…"          # sha256 (hex) of the client's bearer token; never the token
    allow = ["notes__*", "time"]
    readOnly = false             # optional
    created = "2026-12-02T14:30:00Z"

``allow`` globs (``fnmatch``: ``*``, ``?``, ``[seq]``) are ``SERVER`` or ``SERVER__NAME``: the
part before the first ``__`` matches the server's name, the rest the server's own name of a
tool or prompt, or a resource's URI (a template's ``uriTemplate``). ``notes`` is ``notes__*``:
all of ``notes``. A client reaches a server when some glob's server part matches it (else
``/mcp/notes`` is 404 to it, as for a server that does not exist), and sees and calls only
what a glob matches; the rest is unknown to it (``-32602``), as a filtered entry is.

``readOnly``: only tools whose server annotates them ``readOnlyHint: true`` are listed and
callable (the server's own claim: read-only is as good as the server's annotations); prompts,
resources and completions are unaffected.

Tokens are matched by hashing the presented token and comparing it with every client's hash in
constant time (:meth:`Clients.match`); the hashes are of 256-bit random tokens, so no salt or
slow hash is needed.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FULL_ACCESS",
    "Client",
    "Clients",
    "ClientsError",
    "check_glob",
    "check_name",
    "hash_token",
    "parse",
    "render",
]

SEPARATOR = "__"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SERVER_GLOB = re.compile(r"[a-z0-9*?\[\]!-]+")
_FIELDS = {"sha256", "allow", "readOnly", "created"}


class ClientsError(ValueError):
    """A clients file that cannot be used; the message names the file, line and field."""


def hash_token(token: str | bytes) -> str:
    """The sha256 (hex) kept for ``token``."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def check_name(name: str) -> str | None:
    """Why ``name`` is no valid client name, or None."""
    if _NAME.fullmatch(name) is None:
        return f"client name must be 1-64 of A-Z a-z 0-9 _ . - (starting alphanumeric): {name!r}"
    return None


def check_glob(glob: str) -> str | None:
    """Why ``glob`` is no valid ``allow`` glob, or None."""
    server, _, rest = glob.partition(SEPARATOR)
    if not glob:
        return "an allow glob must not be empty"
    if _SERVER_GLOB.fullmatch(server) is None:
        return (
            f"allow glob {glob!r}: the server part {server!r} must be a glob of server names "
            "(a-z 0-9 - and * ? [ ])"
        )
    if SEPARATOR in glob and not rest:
        return f"allow glob {glob!r}: nothing after {SEPARATOR!r} (use {server!r} for all of it)"
    return None


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True)
class Client:
    """One client: its name, token hash, ``allow`` globs and whether it is read-only."""

    name: str
    sha256: str
    allow: tuple[str, ...] = ("*",)
    read_only: bool = False
    created: str | None = None
    _rules: tuple[tuple[re.Pattern[str], re.Pattern[str] | None], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        rules = []
        for glob in self.allow:
            server, sep, rest = glob.partition(SEPARATOR)
            rules.append((_glob(server), _glob(rest) if sep and rest != "*" else None))
        object.__setattr__(self, "_rules", tuple(rules))

    @property
    def everything(self) -> bool:
        """Sees all there is, as without client tokens (the fast path)."""
        return not self.read_only and any(
            s.pattern == _glob("*").pattern and n is None for s, n in self._rules
        )

    def reaches(self, server: str) -> bool:
        """Whether any of the client's globs names ``server``."""
        return any(s.match(server) is not None for s, _ in self._rules)

    def admits(self, server: str, name: str) -> bool:
        """Whether the client may see and use the entry ``name`` (a tool or prompt under the
        server's own name, a resource URI or template) of ``server``."""
        return any(
            s.match(server) is not None and (n is None or n.match(name) is not None)
            for s, n in self._rules
        )

    def admits_tool(self, server: str, tool: Mapping[str, Any], own: str | None = None) -> bool:
        """Whether the client may list and call ``tool`` (an MCP Tool dict) of ``server``;
        ``own``: the server's own name of it when ``tool`` is listed as ``SERVER__NAME``."""
        name = tool.get("name") if own is None else own
        if not isinstance(name, str) or not self.admits(server, name):
            return False
        return not self.read_only or read_only_tool(tool)


def read_only_tool(tool: Mapping[str, Any]) -> bool:
    """Whether the server annotates ``tool`` ``readOnlyHint: true``."""
    annotations = tool.get("annotations")
    return isinstance(annotations, Mapping) and annotations.get("readOnlyHint") is True


FULL_ACCESS = "token-file"  # the client name of the single --token-file token


@dataclass(frozen=True)
class Clients:
    """The clients of one file, in file order."""

    clients: tuple[Client, ...] = ()

    def match(self, token: bytes) -> Client | None:
        """The client whose hash is ``token``'s: every hash is compared, in constant time."""
        digest = hash_token(token).encode()
        found: Client | None = None
        for client in self.clients:
            if hmac.compare_digest(digest, client.sha256.encode()):
                found = client
        return found

    def get(self, name: str) -> Client | None:
        return next((c for c in self.clients if c.name == name), None)

    def with_client(self, client: Client) -> Clients:
        """A copy with ``client`` added (or replacing the one of that name)."""
        rest = [c for c in self.clients if c.name != client.name]
        return Clients((*rest, client))

    def without(self, name: str) -> Clients:
        return Clients(tuple(c for c in self.clients if c.name != name))


def _line_of(text: str, name: str) -> int:
    """The line of ``[clients.NAME]`` in ``text`` (1 if not found)."""
    header = re.compile(
        r"^\s*\[\s*clients\s*\.\s*(?:" + re.escape(name) + r'|"' + re.escape(name) + r'")\s*\]'
    )
    for number, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            return number
    return 1


def parse(text: str, source: str = "clients.toml") -> Clients:
    """The clients of the file ``source`` whose text is ``text``. Raises ClientsError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientsError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"clients"})
    if unknown:
        raise ClientsError(f"{source}: unknown top-level key {unknown[0]!r} (only [clients.NAME])")
    tables = data.get("clients", {})
    if not isinstance(tables, dict):
        raise ClientsError(f"{source}: 'clients' must be tables [clients.NAME]")
    clients: list[Client] = []
    seen: dict[str, str] = {}
    for name, entry in tables.items():
        line = _line_of(text, name)
        where = f"{source}:{line}: clients.{name}"
        why = check_name(name)
        if why is not None:
            raise ClientsError(f"{where}: {why}")
        if not isinstance(entry, dict):
            raise ClientsError(f"{where}: must be a table [clients.{name}]")
        extra = sorted(set(entry) - _FIELDS)
        if extra:
            raise ClientsError(f"{where}.{extra[0]}: unknown field (known: {sorted(_FIELDS)})")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or _HEX64.fullmatch(sha) is None:
            raise ClientsError(
                f"{where}.sha256: must be the token's sha256, 64 lowercase hex digits"
            )
        if sha in seen:
            raise ClientsError(f"{where}.sha256: the same token hash as client {seen[sha]!r}")
        seen[sha] = name
        allow = entry.get("allow")
        if not isinstance(allow, list) or not allow or not all(isinstance(g, str) for g in allow):
            raise ClientsError(f"{where}.allow: must be a non-empty list of globs")
        for glob in allow:
            why = check_glob(glob)
            if why is not None:
                raise ClientsError(f"{where}.allow: {why}")
        read_only = entry.get("readOnly", False)
        if not isinstance(read_only, bool):
            raise ClientsError(f"{where}.readOnly: must be true or false")
        created = entry.get("created")
        if created is not None and not isinstance(created, str):
            raise ClientsError(f"{where}.created: must be a string (a UTC time)")
        clients.append(Client(name, sha, tuple(allow), read_only, created))
    return Clients(tuple(clients))


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)  # a valid TOML basic string


def render(clients: Iterable[Client]) -> str:
    """The file text for ``clients`` (what :func:`parse` reads back)."""
    out = [
        "# spctl clients: token hashes, never tokens. Edit with spctl token add|list|remove.",
        "",
    ]
    for c in clients:
        out.append(f"[clients.{_string(c.name)}]")
        out.append(f"sha256 = {_string(c.sha256)}")
        out.append("allow = [" + ", ".join(_string(g) for g in c.allow) + "]")
        if c.read_only:
            out.append("readOnly = true")
        if c.created is not None:
            out.append(f"created = {_string(c.created)}")
        out.append("")
    return "\n".join(out)
