"""Per-server filters (``tools:``, ``prompts:``, ``resources:``): what is advertised and callable.

Theory of operation: a worker advertises its server's whole catalog and the core keeps it as
is (the catalog cache too, so a filter change needs no restart). What the core *lists* to every
face is the catalog after :func:`advertised` (so a filtered entry is in no router, and a new
upstream tool under an allow-list stays hidden), and every request the core forwards is checked
by :func:`refusal` first, so a face whose table is stale, ``/mcp/<server>`` (which passes any
resource URI to its server) and ``spctl call`` all get the same answer as for a name that does
not exist: ``-32602`` "Unknown tool"/"Unknown prompt", ``-32002`` for a resource.

Globs are ``fnmatch``-style (``*``, ``?``, ``[seq]``), case-sensitive, matched against the
server's own name (not ``server__name``); resources against the URI, resource templates against
their ``uriTemplate`` text. Deny wins over allow; no ``allow`` allows everything. Pure.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.config import Extension, Filter, GlobSource
from worker.protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND

__all__ = ["Refusal", "admits", "advertised", "filtered", "refusal", "unmatched"]

# catalog key → (the filter of the entry, the member its globs match)
_LISTS = {
    "tools": ("tools", "name"),
    "prompts": ("prompts", "name"),
    "resources": ("resources", "uri"),
    "resourceTemplates": ("resources", "uriTemplate"),
}


@functools.lru_cache(maxsize=512)
def _matcher(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One expression for a list of globs (``fnmatch.translate`` anchors each)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or "(?!)")


def admits(f: Filter, name: str) -> bool:
    """Whether ``name`` passes ``f``: an ``allow`` glob matches (or there is no ``allow``) and
    no ``deny`` glob does."""
    if f.allow is not None and _matcher(f.allow).match(name) is None:
        return False
    return not (f.deny and _matcher(f.deny).match(name) is not None)


def filtered(catalog: Mapping[str, Any], filters: Mapping[str, Filter]) -> dict[str, Any]:
    """``catalog`` (a worker's plain dict) with what ``filters`` (by entry key: ``tools``,
    ``prompts``, ``resources``) keeps. Entries without a string name/URI are kept: the router
    reports them. A catalog no filter touches is returned as a shallow copy."""
    out = dict(catalog)
    for key, (which, member) in _LISTS.items():
        f = filters.get(which)
        items = catalog.get(key)
        if f is None or f.everything or not isinstance(items, list | tuple):
            continue
        out[key] = [
            item
            for item in items
            if not (isinstance(item, Mapping) and isinstance(item.get(member), str))
            or admits(f, item[member])
        ]
    return out


def _filters(ext: Extension) -> dict[str, Filter]:
    return {"tools": ext.tools, "prompts": ext.prompts, "resources": ext.resources}


def advertised(ext: Extension, catalog: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``catalog`` the server of ``ext`` advertises under its entry's filters."""
    return filtered(catalog, _filters(ext))


@dataclass(frozen=True)
class Refusal:
    """A request for something the filters hide, answered as if it did not exist."""

    code: int
    message: str
    data: dict[str, Any] | None = None


def refusal(ext: Extension, method: str, params: Mapping[str, Any]) -> Refusal | None:
    """Why the request ``method`` with ``params`` (the server's own names) to the server of
    ``ext`` is refused by its filters, or None when it may go. Only requests that name a tool,
    a prompt or a resource are checked; anything malformed is left to the server."""
    target: Any = params
    if method == "completion/complete":
        target = params.get("ref")
        if not isinstance(target, Mapping):
            return None
        kind = target.get("type")
        method = {"ref/prompt": "prompts/get", "ref/resource": "resources/template"}.get(
            kind if isinstance(kind, str) else "", ""
        )
    if method in ("tools/call", "prompts/get"):
        name = target.get("name")
        f, noun = (ext.tools, "tool") if method == "tools/call" else (ext.prompts, "prompt")
        if isinstance(name, str) and not admits(f, name):
            return Refusal(INVALID_PARAMS, f"Unknown {noun}: {name}")
        return None
    if method in ("resources/read", "resources/subscribe", "resources/template"):
        uri = target.get("uri")
        if isinstance(uri, str) and not admits(ext.resources, uri):
            return Refusal(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
    return None


def unmatched(ext: Extension, catalog: Mapping[str, Any]) -> list[GlobSource]:
    """The globs of ``ext``'s filters that match nothing ``catalog`` advertises (a typo, or a
    tool the server no longer has): worth a warning, not an error."""
    names: dict[str, list[str]] = {"tools": [], "prompts": [], "resources": []}
    for key, (which, member) in _LISTS.items():
        items = catalog.get(key)
        for item in items if isinstance(items, list | tuple) else ():
            if isinstance(item, Mapping) and isinstance(item.get(member), str):
                names[which].append(item[member])
    found: list[GlobSource] = []
    for which, f in _filters(ext).items():
        for source in f.sources:
            if not _any_match(source.glob, names[which]):
                found.append(source)
    return found


def _any_match(glob: str, names: Iterable[str]) -> bool:
    pattern = _matcher((glob,))
    return any(pattern.match(name) is not None for name in names)
