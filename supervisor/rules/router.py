"""The MCP routing table: names, prefixes, pagination. Pure: no I/O, no SDK.

Theory of operation: each worker advertises its server's tools, prompts, resources and resource
templates as one complete :class:`Catalog` (the worker fetches every upstream page before it
advertises, so the supervisor never passes an upstream cursor through: it presents its own
pagination over the merged, already complete lists; a client's cursor thus never depends on a
worker that may have restarted since). A :class:`Router` is an immutable value built from
catalogs; ``with_catalog``/``without`` return a new one, so the owner swaps the whole table
atomically and a listing in progress keeps reading a consistent table.

Two scopes are served. ``None`` is the aggregate ``/mcp``: tools and prompts are renamed
``<server>__<name>``; server names are ``[a-z0-9]+(-[a-z0-9]+)*`` (no ``_``), so the first ``_``
of a prefixed name ends the server and two servers can never produce the same name. Resources
keep their URI; the aggregate remembers which server owns each, and when two servers advertise
the same URI (or URI template) the first by server name owns it and the other is reported.
``"<server>"`` is ``/mcp/<server>``: that server's lists under their own names, passed through.

Nothing is dropped silently. An entry left out of a listing has a :class:`Problem`: a malformed
entry (no name/uri) and a repeated name (the first is served) everywhere; on the aggregate also a
prefixed name outside ``^[A-Za-z0-9_-]{1,64}$`` (the limit strict clients enforce; the entry is
still served under its own name on ``/mcp/<server>``) and a resource collision.

Order is deterministic: by server name, then each server's own order. Every index is built once
per table, so a listing page costs O(page) and a resolve O(1) (templates: O(len(uri))), however
many servers there are. Building costs O(entries); only the changed server's entries are
re-validated and re-hashed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from worker.protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND

__all__ = [
    "MAX_NAME_LENGTH",
    "SEPARATOR",
    "Catalog",
    "InvalidCursor",
    "ListKind",
    "Problem",
    "Route",
    "Router",
    "RouterError",
    "UnknownName",
    "UnknownPrompt",
    "UnknownResource",
    "UnknownServer",
    "UnknownTool",
    "prefixed",
    "valid_tool_name",
]

SEPARATOR = "__"
MAX_NAME_LENGTH = 64
ListKind = Literal["tools", "prompts", "resources", "resourceTemplates"]

_SERVER_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # the same rule as supervisor.config
_NAME_CHAR = re.compile(r"[A-Za-z0-9_-]")
_TOOL_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME_LENGTH}}}")
_MAX_CURSOR = 2048  # longer strings are refused before decoding; a longer anchor is left out


def prefixed(server: str, name: str) -> str:
    """The aggregate name of ``name`` served by ``server``: ``server__name``."""
    return f"{server}{SEPARATOR}{name}"


def valid_tool_name(name: str) -> bool:
    """True when ``name`` matches ``^[A-Za-z0-9_-]{1,64}$`` (what strict MCP clients accept)."""
    return _TOOL_NAME.fullmatch(name) is not None


class RouterError(Exception):
    """A request the router cannot serve. ``code`` is the JSON-RPC error code for the reply."""

    code: ClassVar[int] = INVALID_PARAMS  # what MCP answers for unknown names and cursors


class UnknownServer(RouterError):
    """No server of that name has a catalog (for ``/mcp/<server>``: answer 404)."""

    def __init__(self, server: str) -> None:
        super().__init__(f"unknown MCP server: {server!r}")
        self.server = server


class UnknownName(RouterError):
    """``name`` (a tool/prompt name or a resource URI) is not served in ``scope``."""

    kind: ClassVar[str] = "name"

    def __init__(self, name: str, scope: str | None = None) -> None:
        where = "/mcp" if scope is None else f"/mcp/{scope}"
        super().__init__(f"unknown {self.kind}: {name!r} (on {where})")
        self.name = name
        self.scope = scope


class UnknownTool(UnknownName):
    """No such tool in the scope."""

    kind = "tool"


class UnknownPrompt(UnknownName):
    """No such prompt in the scope."""

    kind = "prompt"


class UnknownResource(UnknownName):
    """No server of the aggregate owns the URI, nor does any template match it."""

    kind = "resource"
    code = RESOURCE_NOT_FOUND  # MCP: "Resource not found"


class InvalidCursor(RouterError):
    """The cursor was not issued by this router for this listing (kind and scope)."""


@dataclass(frozen=True)
class Catalog:
    """Everything one server advertised, complete (all upstream pages), as plain MCP dicts.

    Entries are MCP ``Tool``/``Prompt``/``Resource``/``ResourceTemplate`` objects as dicts; they
    are treated as immutable values. Lists are accepted and stored as tuples.

    Raises:
        ValueError: ``server`` is not lowercase-with-hyphens.
    """

    server: str
    tools: tuple[Mapping[str, Any], ...] = ()
    resources: tuple[Mapping[str, Any], ...] = ()
    resource_templates: tuple[Mapping[str, Any], ...] = ()
    prompts: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if _SERVER_NAME.fullmatch(self.server) is None:
            raise ValueError(f"server name must be lowercase-with-hyphens: {self.server!r}")
        for field in ("tools", "resources", "resource_templates", "prompts"):
            object.__setattr__(self, field, tuple(getattr(self, field)))


@dataclass(frozen=True)
class Problem:
    """An advertised entry that is not served (or not everywhere), and why.

    ``kind`` is ``"tool"``, ``"prompt"`` or ``"resource"`` (resource templates too); ``name``
    is the entry's original name, URI or URI template as the server advertised it.
    """

    server: str
    kind: str
    name: str
    reason: str


@dataclass(frozen=True)
class Route:
    """Where a call goes: the server and the original name (or URI) at that server."""

    server: str
    name: str


@dataclass(frozen=True)
class _Kind:
    list: ListKind  # MCP's result key, and the cursor's kind
    field: str  # Catalog attribute
    key: str  # the identifying member of an entry
    label: str  # Problem.kind
    prefixed: bool  # renamed on the aggregate (else shared, first server wins)


_TOOLS = _Kind("tools", "tools", "name", "tool", True)
_PROMPTS = _Kind("prompts", "prompts", "name", "prompt", True)
_RESOURCES = _Kind("resources", "resources", "uri", "resource", False)
_TEMPLATES = _Kind("resourceTemplates", "resource_templates", "uriTemplate", "resource", False)
_KINDS = (_TOOLS, _PROMPTS, _RESOURCES, _TEMPLATES)


@dataclass(frozen=True)
class _Entry:
    key: str
    item: dict[str, Any]
    digest: str
    aggregate: bool = True  # False: its prefixed name is invalid; served on /mcp/<server> only
    template: tuple[str, re.Pattern[str]] | None = None  # (literal prefix, matcher)


@dataclass(frozen=True)
class _Listing:
    items: tuple[dict[str, Any], ...]  # as served
    keys: tuple[str, ...]  # served name or URI, parallel to items
    sources: tuple[_Entry, ...]  # parallel to items
    index: dict[str, tuple[int, Route]]  # served key → (position, route)
    digest: str


@dataclass(frozen=True)
class _Table:
    """One server's validated catalog, reused by every router that contains the server."""

    catalog: Catalog
    entries: dict[ListKind, tuple[_Entry, ...]]
    own: dict[ListKind, _Listing]
    problems: tuple[Problem, ...]


class Router:
    """An immutable routing table over the catalogs of the running servers.

    Scopes: ``None`` is the aggregate ``/mcp``; ``"<server>"`` is ``/mcp/<server>``. Every
    method taking a scope raises :class:`UnknownServer` for a server without a catalog.

    Raises:
        ValueError: two catalogs for the same server.
    """

    __slots__ = ("_aggregate", "_problems", "_tables", "_templates")

    def __init__(self, catalogs: Iterable[Catalog] = ()) -> None:
        tables: dict[str, _Table] = {}
        for catalog in catalogs:
            if catalog.server in tables:
                raise ValueError(f"two catalogs for server {catalog.server!r}")
            tables[catalog.server] = _server_table(catalog)
        self._build(tables)

    def _build(self, tables: Mapping[str, _Table]) -> None:
        self._tables = {server: tables[server] for server in sorted(tables)}
        self._aggregate: dict[ListKind, _Listing] = {}
        problems: dict[str, list[Problem]] = {s: list(t.problems) for s, t in self._tables.items()}
        for kind in _KINDS:
            self._aggregate[kind.list] = _merge(kind, self._tables, problems)
        self._problems = tuple(p for server in self._tables for p in problems[server])
        self._templates = _TemplateIndex(self._aggregate["resourceTemplates"])

    @classmethod
    def _of(cls, tables: Mapping[str, _Table]) -> Router:
        router = cls.__new__(cls)
        router._build(tables)
        return router

    def with_catalog(self, catalog: Catalog) -> Router:
        """A new router with ``catalog`` added, or replacing that server's previous one."""
        return Router._of({**self._tables, catalog.server: _server_table(catalog)})

    def without(self, server: str) -> Router:
        """A new router without ``server``; this router itself when it has no such server."""
        if server not in self._tables:
            return self
        return Router._of({s: t for s, t in self._tables.items() if s != server})

    @property
    def servers(self) -> tuple[str, ...]:
        """The servers with a catalog, sorted."""
        return tuple(self._tables)

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every entry not served (everywhere), sorted by server, deterministic within one."""
        return self._problems

    def catalog(self, server: str) -> Catalog:
        """The catalog ``server`` advertised. Raises :class:`UnknownServer`."""
        return self._table(server).catalog

    def list_tools(
        self, scope: str | None, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of tools and the cursor of the next page (``None`` after the last).

        Aggregate tools carry their prefixed name; every other member is as advertised. Pages
        are shallow copies: do not mutate nested values.

        Cursors are opaque and bound to their kind and scope. A cursor from a listing that has
        changed since is still honoured, never an error: the next page starts after the last
        entry the client saw if it is still listed, else at the same offset (clamped to the end).
        A change may thus show an entry twice or hide one from that walk; the owner announces
        every change with ``list_changed`` (see :meth:`fingerprint`) so the client lists again.

        Raises:
            UnknownServer: ``scope`` names no server.
            InvalidCursor: a cursor this router did not issue for this kind and scope.
            ValueError: ``page_size`` < 1.
        """
        return self._page(_TOOLS, scope, cursor, page_size)

    def list_prompts(
        self, scope: str | None, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of prompts: the same contract as :meth:`list_tools`."""
        return self._page(_PROMPTS, scope, cursor, page_size)

    def list_resources(
        self, scope: str | None, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of resources, as advertised (URIs are never renamed); as :meth:`list_tools`."""
        return self._page(_RESOURCES, scope, cursor, page_size)

    def list_resource_templates(
        self, scope: str | None, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of resource templates, as advertised; as :meth:`list_tools`."""
        return self._page(_TEMPLATES, scope, cursor, page_size)

    def resolve_tool(self, scope: str | None, name: str) -> Route:
        """The server and original name of the tool listed as ``name`` in ``scope``.

        Raises:
            UnknownServer: ``scope`` names no server.
            UnknownTool: no tool of that name is listed there.
        """
        hit = self._listing(_TOOLS, scope).index.get(name)
        if hit is None:
            raise UnknownTool(name, scope)
        return hit[1]

    def resolve_prompt(self, scope: str | None, name: str) -> Route:
        """As :meth:`resolve_tool`, for prompts. Raises UnknownServer, UnknownPrompt."""
        hit = self._listing(_PROMPTS, scope).index.get(name)
        if hit is None:
            raise UnknownPrompt(name, scope)
        return hit[1]

    def resolve_resource(self, scope: str | None, uri: str) -> Route:
        """The server to read ``uri`` from; ``Route.name`` is the URI itself.

        On ``/mcp/<server>`` every URI goes to that server: it is the authority on its own
        resources, listed or not. On the aggregate: the owner of a listed URI, else the first
        (in listing order) template that matches, matched in linear time (an expression ends
        at the first character of the literal that follows it).

        Raises:
            UnknownServer: ``scope`` names no server.
            UnknownResource: aggregate only; no listed resource or template matches ``uri``.
        """
        if scope is not None:
            self._table(scope)
            return Route(scope, uri)
        hit = self._aggregate["resources"].index.get(uri)
        if hit is not None:
            return hit[1]
        server = self._templates.owner(uri)
        if server is None:
            raise UnknownResource(uri, scope)
        return Route(server, uri)

    def resolve_template(self, scope: str | None, uri_template: str) -> Route:
        """The server of a ``ref/resource`` (``completion/complete``): the owner of the listed
        template with exactly that text, else as :meth:`resolve_resource` (a listed resource,
        or a template matching it as a URI). Raises UnknownServer, UnknownResource."""
        if scope is None:
            hit = self._aggregate["resourceTemplates"].index.get(uri_template)
            if hit is not None:
                return hit[1]
        return self.resolve_resource(scope, uri_template)

    def fingerprint(self, scope: str | None, kind: ListKind | None = None) -> str:
        """A digest that changes iff the listing of ``kind`` (all four if None) in ``scope`` does.

        Compare the old and the new router's fingerprints after a swap to decide which
        ``notifications/*/list_changed`` to send. Raises :class:`UnknownServer`.
        """
        kinds = _KINDS if kind is None else [k for k in _KINDS if k.list == kind]
        if not kinds:
            raise ValueError(f"unknown listing kind: {kind!r}")
        digests = [self._listing(k, scope).digest for k in kinds]
        return digests[0] if len(digests) == 1 else _hash(digests)

    def _table(self, server: str) -> _Table:
        table = self._tables.get(server)
        if table is None:
            raise UnknownServer(server)
        return table

    def _listing(self, kind: _Kind, scope: str | None) -> _Listing:
        if scope is None:
            return self._aggregate[kind.list]
        return self._table(scope).own[kind.list]

    def _page(
        self, kind: _Kind, scope: str | None, cursor: str | None, page_size: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        listing = self._listing(kind, scope)
        start = 0 if cursor is None else _start(cursor, kind.list, scope, listing)
        end = min(start + page_size, len(listing.items))
        page = [dict(item) for item in listing.items[start:end]]
        more = end < len(listing.items)
        return page, _cursor(kind.list, scope, end, listing.keys[end - 1]) if more else None


_NOUN = {"name": "name", "uri": "uri", "uriTemplate": "uri template"}


def _server_table(catalog: Catalog) -> _Table:
    """Validate one catalog and index its own listings: done once per advertised catalog."""
    server = catalog.server
    problems: list[Problem] = []
    entries: dict[ListKind, tuple[_Entry, ...]] = {}
    own: dict[ListKind, _Listing] = {}
    for kind in _KINDS:
        accepted = _accept(server, kind, getattr(catalog, kind.field), problems)
        entries[kind.list] = accepted
        rows = [(e.key, e.item, e, Route(server, e.key)) for e in accepted]
        own[kind.list] = _listing(rows, [e.digest for e in accepted])
    return _Table(catalog, entries, own, tuple(problems))


def _accept(
    server: str, kind: _Kind, advertised: Iterable[Any], problems: list[Problem]
) -> tuple[_Entry, ...]:
    """The well-formed entries of one kind, first of each key; the rest reported."""
    noun = _NOUN[kind.key]
    entries: dict[str, _Entry] = {}
    counts: dict[str, int] = {}
    for item in advertised:
        key = item.get(kind.key) if isinstance(item, Mapping) else None
        if not isinstance(key, str) or not key:
            what = "empty" if key == "" else "missing or non-string"
            shown = "" if key is None else _short(key if isinstance(key, str) else repr(key))
            problems.append(Problem(server, kind.label, shown, f"{what} {noun}"))
            continue
        counts[key] = counts.get(key, 0) + 1
        if key in entries:
            continue
        copy = dict(item)
        invalid = _name_problem(server, key) if kind.prefixed else None
        if invalid is not None:
            problems.append(Problem(server, kind.label, key, f"{invalid}; only on /mcp/{server}"))
        template = _template(key) if kind is _TEMPLATES else None
        if kind is _TEMPLATES and template is None:
            reason = "malformed uri template; listed, but /mcp cannot route reads to it"
            problems.append(Problem(server, kind.label, key, reason))
        entries[key] = _Entry(key, copy, _digest(copy), invalid is None, template)
    for key, n in counts.items():
        if n > 1:
            reason = f"duplicate {noun}: advertised {n} times, the first is served"
            problems.append(Problem(server, kind.label, key, reason))
    return tuple(entries.values())


def _name_problem(server: str, name: str) -> str | None:
    """Why ``server__name`` is not a valid tool name, or None."""
    reasons = []
    bad = sorted({c for c in name if _NAME_CHAR.fullmatch(c) is None})
    if bad:
        reasons.append("invalid characters " + " ".join(repr(c) for c in bad[:8]))
    full = prefixed(server, name)
    if len(full) > MAX_NAME_LENGTH:
        reasons.append(
            f"name {_short(full)!r} is {len(full)} characters after prefixing"
            f" (max {MAX_NAME_LENGTH})"
        )
    return "; ".join(reasons) or None


def _merge(
    kind: _Kind, tables: Mapping[str, _Table], problems: dict[str, list[Problem]]
) -> _Listing:
    """The aggregate listing of one kind, in server order; resource collisions reported."""
    rows: list[tuple[str, dict[str, Any], _Entry, Route]] = []
    parts: list[str] = []
    owners: dict[str, str] = {}
    for server, table in tables.items():
        for e in table.entries[kind.list]:
            route = Route(server, e.key)
            if kind.prefixed:
                if e.aggregate:
                    name = prefixed(server, e.key)
                    rows.append((name, {**e.item, "name": name}, e, route))
                    parts += (server, e.digest)  # injective: same parts iff same served items
                continue
            owner = owners.setdefault(e.key, server)
            if owner != server:
                reason = f"{_NOUN[kind.key]} also advertised by {owner!r}, which serves it on /mcp"
                problems[server].append(Problem(server, kind.label, e.key, reason))
                continue
            rows.append((e.key, e.item, e, route))
            parts.append(e.digest)
    return _listing(rows, parts)


def _listing(rows: list[tuple[str, dict[str, Any], _Entry, Route]], parts: list[str]) -> _Listing:
    return _Listing(
        items=tuple(r[1] for r in rows),
        keys=tuple(r[0] for r in rows),
        sources=tuple(r[2] for r in rows),
        index={r[0]: (i, r[3]) for i, r in enumerate(rows)},
        digest=_hash(parts),
    )


def _digest(item: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):  # unsortable keys, cycles: still stable
        text = repr(item)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _hash(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:  # hex digests and server names: no newline inside
        h.update(part.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# Cursors: urlsafe base64 of {"v": 1, "k": kind, "s": scope digest, "o": offset, "a": last key}.


def _scope_tag(scope: str | None) -> str | None:
    return None if scope is None else _hash([scope])[:12]


def _cursor(kind: ListKind, scope: str | None, offset: int, last: str) -> str:
    data: dict[str, Any] = {"v": 1, "k": kind, "s": _scope_tag(scope), "o": offset, "a": last}
    for _ in range(2):
        raw = json.dumps(data, separators=(",", ":")).encode("ascii")
        cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if len(cursor) <= _MAX_CURSOR:
            break
        del data["a"]  # a very long URI: fall back to the offset
    return cursor


def _start(cursor: str, kind: ListKind, scope: str | None, listing: _Listing) -> int:
    """Where the page after ``cursor`` starts in ``listing``. Raises InvalidCursor."""
    if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
        raise InvalidCursor("invalid cursor: not issued by this server")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidCursor("invalid cursor: not issued by this server") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise InvalidCursor("invalid cursor: not issued by this server")
    offset, anchor = data.get("o"), data.get("a")
    if type(offset) is not int or offset < 1 or not isinstance(anchor, str | None):
        raise InvalidCursor("invalid cursor: not issued by this server")
    if data.get("k") != kind or data.get("s") != _scope_tag(scope):
        raise InvalidCursor(f"invalid cursor: it belongs to another listing than {kind}")
    hit = listing.index.get(anchor) if anchor is not None else None
    return hit[0] + 1 if hit is not None else min(offset, len(listing.items))


# URI templates (RFC 6570) on the aggregate. An expression becomes an optional lead character
# (its operator's: "?" for {?q}, "/" for {/p}, …) and a run that stops at whatever must come next
# (the next literal's or expression's first character; for simple expansions also at "/?#"),
# so a match never backtracks across expressions: linear in the URI, whatever a remote server
# advertises. The costs: `{+path}/edit` cannot match a path containing "/", and in `{a}{b}` the
# first expression takes all.

_EXPRESSION = re.compile(r"\{([^{}]*)\}")
_STOPS = {"": "/?#", "+": "", "#": "", ".": "/?#", "/": "?#", ";": "/?#", "?": "#", "&": "#"}
_LEADS = "#./;?&"


def _template(template: str) -> tuple[str, re.Pattern[str]] | None:
    """(literal prefix, matcher) of a URI template; None when it is malformed."""
    parts = _EXPRESSION.split(template)
    if any("{" in lit or "}" in lit for lit in parts[0::2]):
        return None
    tokens: list[str | tuple[str, set[str]]] = []  # literals and (lead, stops)
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if part:
                tokens.append(part)
            continue
        op = part[0] if part and part[0] in _STOPS else ""
        if not part[len(op) :]:
            return None
        lead = op if op in _LEADS else ""
        previous = tokens[-1] if tokens else ""
        if not lead and isinstance(previous, tuple):  # {a}{b}: one run, the widest of both
            previous[1].intersection_update(_STOPS[op])
            continue
        tokens.append((lead, set(_STOPS[op])))
    out = []
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            out.append(re.escape(token))
            continue
        lead, stops = token
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        then = after[0] if isinstance(after, tuple) else after[:1]  # never "" between tokens
        run = stops | {then} if then else stops
        text = f"[^{re.escape(''.join(sorted(run)))}]*" if run else ".*"
        out.append(f"(?:{re.escape(lead)}{text})?" if lead else text)
    return parts[0], re.compile("".join(out), re.DOTALL)


class _TemplateIndex:
    """The aggregate's templates by literal prefix: a lookup tries only those whose prefix
    starts the URI, so it costs O(len(uri)) dict probes, not O(servers)."""

    def __init__(self, listing: _Listing) -> None:
        self._by_prefix: dict[str, list[tuple[int, re.Pattern[str], str]]] = {}
        for position, (key, entry) in enumerate(zip(listing.keys, listing.sources, strict=True)):
            if entry.template is not None:
                prefix, pattern = entry.template
                owner = listing.index[key][1].server
                self._by_prefix.setdefault(prefix, []).append((position, pattern, owner))
        self._lengths = sorted({len(prefix) for prefix in self._by_prefix})

    def owner(self, uri: str) -> str | None:
        """The server of the first template (in listing order) matching ``uri``."""
        best: tuple[int, str] | None = None
        for length in self._lengths:
            if length > len(uri):
                break
            for position, pattern, server in self._by_prefix.get(uri[:length], ()):
                if (best is None or position < best[0]) and pattern.fullmatch(uri):
                    best = (position, server)
        return None if best is None else best[1]
